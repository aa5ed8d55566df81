// The narrow device interface the rest of core/ uses: allocate, release, copy, zero, synchronise.
// Implemented in cuda_backend.cu when the CUDA backend is compiled, and by cuda_backend_none.cpp
// (which reports "built without CUDA") otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct CUstream_st;  // what a cudaStream_t points to, so that .cpp files need no CUDA header

namespace tstl::cuda {

using Stream = CUstream_st*;  // a cudaStream_t

bool compiled();
int device_count();  // 0 when not compiled or no device is present
// Makes device local_rank % device_count() this process's device (one GPU per rank); call it
// before any other CUDA call. Returns the device index.
int select_device(int local_rank);
// The stream all of tstl's work on the current device runs on: a non-blocking stream created on
// first use (one per device, never destroyed), so nothing is ordered with the legacy default
// stream. Kernels, cuBLAS(Lt), cuDNN, copies and memsets are all queued on it; the host waits for
// it only where it reads device data (copy to the host, synchronize()).
Stream stream();
// Memory from the caching allocator (core/block_pool.h): a block belongs to the current device and
// stream() and is reused by requests of that stream only, so steady-state training makes no
// cudaMalloc/cudaFree calls and reuse needs no synchronisation.
void* allocate(size_t bytes);
void release(void* ptr, size_t bytes);
size_t cached_bytes();  // held by the cache, not in use
void empty_cache();     // waits for the device, then frees every cached block
struct AllocatorStats {
  size_t in_use = 0, peak_in_use = 0, cached = 0;  // bytes
  uint64_t device_allocations = 0, reuses = 0;     // cudaMalloc calls, requests served by the cache
};
AllocatorStats allocator_stats();
// Copies on stream(): host-to-device and device-to-device return without waiting; a copy to the
// host waits for the stream (the host is about to read the data).
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes);
void memset_zero(void* ptr, size_t bytes);  // queued on stream()
void synchronize();                         // waits for all work on the current device
// Whether f32 matmuls may run on TF32 tensor cores (inputs rounded to 10 mantissa bits). Off
// unless the environment sets TSTL_ALLOW_TF32=1, so that f32 on the GPU stays an fp32 reference;
// the setter is for tests and benchmarks.
bool tf32_allowed();
void set_tf32_allowed(bool allowed);
// "cuBLAS 13.0.0, cuDNN 9.x, NCCL 2.28.x" for the libraries compiled in ("" without CUDA).
std::string library_versions();
// The name of the current CUDA device (e.g. "NVIDIA H100 80GB HBM3"); "" without one.
std::string device_name();

}  // namespace tstl::cuda
