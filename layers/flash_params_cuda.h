// The flash kernels' parameters from a call's tensors, shared by the SIMT kernels
// (layers/flash_attention_cuda.cu) and the tensor-core ones (layers/flash_mma_forward.cu,
// layers/flash_mma_backward.cu). Host code: the tensors are contiguous (B, H, N, d) on the device.
#pragma once

#include "core/tensor.h"
#include "layers/flash_attention.h"

namespace tstl::kernels {

// Pointers, contiguous strides and sizes; the output and gradient pointers are set by the caller.
template <class T>
inline FlashParams<T, float> make_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes,
                                  const Tensor& logn, int64_t query_offset, double scale, const Tensor& lse) {
  FlashParams<T, float> p;
  p.set_contiguous(q, k, v, slopes, logn, lse);
  p.query_offset = query_offset;
  p.scale = scale;
  return p;
}

}  // namespace tstl::kernels
