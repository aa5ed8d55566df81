// What the layers' CUDA kernel files share: element load/store that widens bf16 to f32 (tables,
// norms and statistics stay in compute_t<T>), the dtype switch, grid sizes for grid-stride loops
// and warp reductions. Include only from .cu files.
//
// Ordering: every kernel runs on the legacy default stream (stream 0), the stream that
// core/cuda_backend.cu's copies use, so the caching allocator may reuse a released block at once.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "core/hd.h"
#include "core/tensor.h"

namespace tstl::layer_cuda {

inline cudaStream_t stream() { return static_cast<cudaStream_t>(0); }

constexpr int kBlock = 256;  // threads per block of the elementwise and per-row kernels
constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n items: enough to fill the device, capped so that the launch
// is always valid; the loop covers the rest.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// bf16 activations compute in f32; f32 and f64 compute in themselves.
template <class T>
struct Compute {
  using type = T;
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

// Calls fn(T{}) for the activation dtypes the layer kernels support on CUDA: f32, bf16, f64.
template <class Fn>
void visit_float(DType dtype, const char* kernel, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(float{}); return;
    case DType::BF16: fn(bf16{}); return;
    case DType::F64: fn(double{}); return;
    default: TSTL_FAIL(kernel, " (CUDA): expected dtype f32, bf16 or f64, got ", dtype_name(dtype));
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

template <class C>
__device__ __forceinline__ C warp_max(C v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const C other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}
#endif

}  // namespace tstl::layer_cuda
