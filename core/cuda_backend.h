// The narrow device interface the rest of core/ uses: allocate, release, copy, zero, synchronise.
// Implemented in cuda_backend.cu when the CUDA backend is compiled, and by cuda_backend_none.cpp
// (which reports "built without CUDA") otherwise.
#pragma once

#include <cstddef>
#include <string>

namespace tstl::cuda {

bool compiled();
int device_count();  // 0 when not compiled or no device is present
// Makes device local_rank % device_count() this process's device (one GPU per rank); call it
// before any other CUDA call. Returns the device index.
int select_device(int local_rank);
// Memory from the caching allocator: freed blocks are kept per size and reused, so steady-state
// training makes no cudaMalloc/cudaFree calls.
void* allocate(size_t bytes);
void release(void* ptr, size_t bytes);
size_t cached_bytes();  // held by the cache, not in use
void empty_cache();
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);
void memset_zero(void* ptr, size_t bytes);
void synchronize();
// "cuBLAS 13.0.0, cuDNN 9.x, NCCL 2.28.x" for the libraries compiled in ("" without CUDA).
std::string library_versions();
// The name of the current CUDA device (e.g. "NVIDIA H100 80GB HBM3"); "" without one.
std::string device_name();

}  // namespace tstl::cuda
