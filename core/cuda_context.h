// What every CUDA kernel file shares: the stream kernels run on, the per-device cuBLASLt handle,
// launch sizes for grid-stride loops, a scratch buffer from the caching allocator, a device-side
// error flag for input validation, element load/store that widens bf16 to f32, and warp
// reductions.
// Include only from .cu files.
//
// Ordering: every kernel launch (`<<<grid, block, shared, stream()>>>`), library call (cuBLASLt,
// cuDNN) and copy or memset (core/cuda_backend.cu) is queued on cuda::stream(), the device's
// non-blocking stream (core/cuda_backend.h). That one stream orders all the work of a step; it is
// also what makes the caching allocator's immediate reuse of a released block safe without events
// (core/block_pool.h). Code that runs work on another stream (core/comm_nccl.cu) orders it against
// stream() with events.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/cuda_backend.h"
#include "core/cuda_check.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace tstl::cuda {

// The cuBLASLt handle of the current device, created on first use and never destroyed (it must
// outlive static tensors released at exit). cuBLASLt takes the stream per call (stream()).
cublasLtHandle_t cublaslt_handle();

constexpr int kBlock = 256;  // threads per block of the elementwise and per-row kernels
constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n items: enough to fill the device, capped so that the
// launch is always valid; the loop covers the rest.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// Device scratch memory from the caching allocator, returned to it on destruction. The release
// is safe while a kernel still uses the memory: the block is reused only by later work on the
// same stream (core/block_pool.h).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes), ptr_(bytes ? allocate(bytes) : nullptr) {}
  ~DeviceBuffer() { release(ptr_, bytes_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
  void* ptr_;
};

// ---- Elements: bf16 is loaded as f32, arithmetic runs in Compute<T>, stores round back -------

template <class T>
struct Compute {
  using type = T;  // f32 -> f32, f64 -> f64
};
template <>
struct Compute<bf16> {
  using type = float;
};
template <class T>
using compute_t = typename Compute<T>::type;

template <class T>
TSTL_HD compute_t<T> load(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16_to_float(p[i]);
  } else {
    return p[i];
  }
}

template <class T, class V>
TSTL_HD void store(T* p, int64_t i, V v) {
  if constexpr (std::is_same_v<T, bf16>) {
    p[i] = float_to_bf16(static_cast<float>(v));
  } else {
    p[i] = static_cast<T>(v);
  }
}

// Calls fn(T{}) for the floating dtypes the CUDA kernels support: f32, bf16, and f64.
template <class Fn>
void visit_cuda_float(DType dtype, const char* kernel, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(float{}); return;
    case DType::BF16: fn(bf16{}); return;
    case DType::F64: fn(double{}); return;
    default: TSTL_FAIL(kernel, " (CUDA): expected dtype f32, bf16 or f64, got ", dtype_name(dtype));
  }
}

// Calls fn(U{}) with an unsigned integer type of the element size (2, 4 or 8 bytes), for kernels
// that only move elements (permute, narrow, embedding lookup).
template <class Fn>
void visit_element_size(size_t bytes, const char* kernel, Fn&& fn) {
  switch (bytes) {
    case 2: fn(uint16_t{}); return;
    case 4: fn(uint32_t{}); return;
    case 8: fn(uint64_t{}); return;
    default: TSTL_FAIL(kernel, " (CUDA): unsupported element size ", bytes);
  }
}

inline void check_on_cuda(const Tensor& t, const char* kernel, const char* what) {
  TSTL_CHECK(t.device() == Device::CUDA, kernel, " (CUDA): ", what, " is on ", device_name(t.device()));
}

// A tensor of the compute dtype of activations of dtype `activation` (tables, norms, LSE).
inline void check_compute_dtype(const Tensor& t, DType activation, const char* kernel, const char* what) {
  const DType want = activation == DType::BF16 ? DType::F32 : activation;
  TSTL_CHECK(t.dtype() == want, kernel, " (CUDA): ", what, " must be ", dtype_name(want), " for ",
             dtype_name(activation), " activations, got ", dtype_name(t.dtype()));
}

#if defined(__CUDACC__)
// Sum over the 32 lanes of a warp; every lane receives the total.
template <class C>
__device__ __forceinline__ C warp_sum(C v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Maximum over the 32 lanes of a warp; every lane receives it.
template <class C>
__device__ __forceinline__ C warp_max(C v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const C other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}
#endif

}  // namespace tstl::cuda
