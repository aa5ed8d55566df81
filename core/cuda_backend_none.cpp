// The device interface of a binary built without the CUDA backend.
#ifndef TSTL_WITH_CUDA
#include "core/cuda_backend.h"
#include "core/error.h"

namespace tstl::cuda {

namespace {
[[noreturn]] void unavailable() {
  TSTL_FAIL("this tstl was built without the CUDA backend (configure with -DTSTL_CUDA=ON where nvcc exists)");
}
}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
int select_device(int) { unavailable(); }
Stream stream() { unavailable(); }
void* allocate(size_t) { unavailable(); }
void release(void*, size_t) {}
size_t cached_bytes() { return 0; }
void empty_cache() {}
AllocatorStats allocator_stats() { return {}; }
void copy(void*, bool, const void*, bool, size_t) { unavailable(); }
void memset_zero(void*, size_t) { unavailable(); }
void synchronize() {}
bool tf32_allowed() { return false; }
void set_tf32_allowed(bool) {}
std::string library_versions() { return ""; }
std::string device_name() { return ""; }

}  // namespace tstl::cuda
#endif
