// The CUDA device interface and its caching allocator. Blocks are rounded up (512 B granules
// below 1 MiB, 2 MiB above) and kept on per-size free lists when released, so a training loop
// that allocates the same shapes every step reaches a steady state without cudaMalloc.
#include <map>
#include <mutex>

#include "core/cuda_backend.h"
#include "core/cuda_check.h"

namespace tstl::cuda {

namespace {

struct CachingAllocator {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  size_t cached = 0;

  static size_t round(size_t bytes) {
    const size_t granule = bytes < (1u << 20) ? 512 : (2u << 20);
    return (bytes + granule - 1) / granule * granule;
  }

  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t size = round(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto it = free_blocks.find(size);
      if (it != free_blocks.end()) {
        void* p = it->second;
        free_blocks.erase(it);
        cached -= size;
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {  // give the cache back to the driver and retry once
      cudaGetLastError();
      release_all();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess)
      TSTL_FAIL("cudaMalloc of ", size, " bytes failed: ", cudaGetErrorString(err), " (", cached,
                " bytes were cached)");
    return p;
  }

  void release(void* p, size_t bytes) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex);
    const size_t size = round(bytes);
    free_blocks.emplace(size, p);
    cached += size;
  }

  void release_all() {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto& [size, p] : free_blocks) cudaFree(p);
    free_blocks.clear();
    cached = 0;
  }
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: outlives static tensors
  return *a;
}

}  // namespace

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
  return allocator().allocate(bytes);
}

void release(void* ptr, size_t bytes) { allocator().release(ptr, bytes); }
size_t cached_bytes() { return allocator().cached; }
void empty_cache() { allocator().release_all(); }

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes) {
  const cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                            : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

void memset_zero(void* ptr, size_t bytes) { CUDA_CHECK(cudaMemset(ptr, 0, bytes)); }
void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

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
