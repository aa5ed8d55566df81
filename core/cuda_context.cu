// The per-device cuBLAS handles (core/cuda_context.h).
#include <mutex>
#include <vector>

#include "core/cuda_context.h"

namespace tstl::cuda {

cublasHandle_t cublas_handle() {
  static std::mutex mutex;
  static std::vector<cublasHandle_t>* handles = new std::vector<cublasHandle_t>();  // never destroyed
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (handles->size() <= static_cast<size_t>(device)) handles->resize(static_cast<size_t>(device) + 1, nullptr);
  cublasHandle_t& handle = (*handles)[static_cast<size_t>(device)];
  if (!handle) {
    CUBLAS_CHECK(cublasCreate(&handle));
    CUBLAS_CHECK(cublasSetStream(handle, stream()));
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
  }
  return handle;
}

}  // namespace tstl::cuda
