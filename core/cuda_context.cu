// The per-device cuBLASLt handles (core/cuda_context.h).
#include <mutex>
#include <vector>

#include "core/cuda_context.h"

namespace tstl::cuda {

cublasLtHandle_t cublaslt_handle() {
  static std::mutex mutex;
  static std::vector<cublasLtHandle_t>* handles = new std::vector<cublasLtHandle_t>();  // never destroyed
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (handles->size() <= static_cast<size_t>(device)) handles->resize(static_cast<size_t>(device) + 1, nullptr);
  cublasLtHandle_t& handle = (*handles)[static_cast<size_t>(device)];
  if (!handle) CUBLAS_CHECK(cublasLtCreate(&handle));
  return handle;
}

}  // namespace tstl::cuda
