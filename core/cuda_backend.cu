// The CUDA device interface: the per-device stream, the caching allocator (bookkeeping in
// core/block_pool.h, keyed by device and stream) and copies queued on the stream.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/block_pool.h"
#include "core/cuda_backend.h"
#include "core/cuda_check.h"
#include "core/cuda_sync_cuda.h"

namespace tstl::cuda {

namespace {

constexpr int kMaxDevices = 64;

int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  TSTL_CHECK(device >= 0 && device < kMaxDevices, "CUDA device ", device, " is beyond the ", kMaxDevices,
             " devices tstl supports");
  return device;
}

BlockPool& pool() {
  static BlockPool* p = new BlockPool(BlockBackend{  // never destroyed: outlives static tensors
      [](int, size_t bytes) -> void* {  // the owner's device is the current one (allocate below)
        void* block = nullptr;
        const cudaError_t err = cudaMalloc(&block, bytes);
        if (err == cudaErrorMemoryAllocation) {
          cudaGetLastError();  // clear it for the next check: the pool frees its cache and retries
          return nullptr;
        }
        if (err != cudaSuccess) TSTL_FAIL("cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(err));
        return block;
      },
      [](int, void* block) { cudaFree(block); },
      [] { CUDA_CHECK(cudaDeviceSynchronize()); }});
  return *p;
}

}  // namespace

Stream stream() {
  static std::atomic<cudaStream_t> streams[kMaxDevices];  // zero-initialised; never destroyed
  static std::mutex mutex;
  const int device = current_device();
  cudaStream_t s = streams[device].load(std::memory_order_acquire);
  if (s) return s;
  std::lock_guard<std::mutex> lock(mutex);
  s = streams[device].load(std::memory_order_relaxed);
  if (!s) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    streams[device].store(s, std::memory_order_release);
  }
  return s;
}

bool compiled() { return true; }

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: not an error for a CPU run
      return 0;
    }
    return n;
  }();
  return count;
}

int select_device(int local_rank) {
  const int n = device_count();
  TSTL_CHECK(n > 0, "local rank ", local_rank, ": no CUDA device is present");
  const int device = local_rank % n;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

void* allocate(size_t bytes) {
  TSTL_CHECK(device_count() > 0, "a CUDA tensor was requested but no CUDA device is present");
  if (bytes == 0) return nullptr;
  return pool().allocate(bytes, BlockOwner{current_device(), reinterpret_cast<uintptr_t>(stream())});
}

void release(void* ptr, size_t bytes) { pool().release(ptr, bytes); }
size_t cached_bytes() { return pool().stats().cached; }
void empty_cache() { pool().release_cached(); }

AllocatorStats allocator_stats() {
  const BlockPoolStats s = pool().stats();
  return AllocatorStats{s.in_use, s.peak_in_use, s.cached, s.backend_allocations, s.reuses};
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes) {
  if (bytes == 0) return;
  if (!dst_on_device && !src_on_device) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                            : cudaMemcpyDeviceToHost;
  // From pageable host memory the copy has consumed `src` when the call returns (it is staged), so
  // the caller may free it; the device side is ordered on the stream like every kernel.
  if (!dst_on_device) {  // the host reads dst next: one counted synchronisation (core/cuda_sync.h)
    counted_read_to_host(dst, src, bytes, stream());
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
}

void memset_zero(void* ptr, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream()));
}
void synchronize() { counted_device_synchronize(); }

namespace {
bool tf32_allowed_from_env(const char* value) {
  if (!value || !*value || std::strcmp(value, "0") == 0) return false;
  if (std::strcmp(value, "1") == 0) return true;
  TSTL_FAIL("environment variable TSTL_ALLOW_TF32 = '", value, "': expected 0 or 1");
}

std::atomic<int>& tf32_setting() {  // -1: not read yet
  static std::atomic<int> setting{-1};
  return setting;
}
}  // namespace

bool tf32_allowed() {
  int s = tf32_setting().load(std::memory_order_relaxed);
  if (s < 0) {
    s = tf32_allowed_from_env(std::getenv("TSTL_ALLOW_TF32")) ? 1 : 0;
    tf32_setting().store(s, std::memory_order_relaxed);
  }
  return s == 1;
}

void set_tf32_allowed(bool allowed) { tf32_setting().store(allowed ? 1 : 0, std::memory_order_relaxed); }

std::string device_name() {
  if (device_count() == 0) return "";
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

std::string library_versions() {
  int runtime = 0;
  CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  std::string out = "CUDA runtime " + std::to_string(runtime / 1000) + "." + std::to_string(runtime % 1000 / 10);
  int major = 0, minor = 0, patch = 0;
  CUBLAS_CHECK(cublasGetProperty(MAJOR_VERSION, &major));
  CUBLAS_CHECK(cublasGetProperty(MINOR_VERSION, &minor));
  CUBLAS_CHECK(cublasGetProperty(PATCH_LEVEL, &patch));
  out += ", cuBLAS " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
#ifdef TSTL_WITH_CUDNN
  CUDNN_CHECK(cudnnGetProperty(MAJOR_VERSION, &major));
  CUDNN_CHECK(cudnnGetProperty(MINOR_VERSION, &minor));
  CUDNN_CHECK(cudnnGetProperty(PATCH_LEVEL, &patch));
  out += ", cuDNN " + std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
#endif
#ifdef TSTL_WITH_NCCL
  int nccl = 0;
  NCCL_CHECK(ncclGetVersion(&nccl));
  out += ", NCCL " + std::to_string(nccl / 10000) + "." + std::to_string(nccl / 100 % 100) + "." + std::to_string(nccl % 100);
#endif
  return out;
}

}  // namespace tstl::cuda
