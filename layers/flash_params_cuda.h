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
  p.q = q.data<T>();
  p.k = k.data<T>();
  p.v = v.data<T>();
  p.lse = lse.data<float>();
  p.has_alibi = slopes.defined();
  p.has_logn = logn.defined();
  if (p.has_alibi) p.alibi_slopes = slopes.data<float>();
  if (p.has_logn) p.logn = logn.data<float>();
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.n_queries = q.size(2);
  p.n_keys = k.size(2);
  p.head_dim = q.size(3);
  p.q_row_stride = p.head_dim;
  p.q_head_stride = p.n_queries * p.head_dim;
  p.q_batch_stride = p.heads * p.q_head_stride;
  p.kv_row_stride = p.head_dim;
  p.kv_head_stride = p.n_keys * p.head_dim;
  p.kv_batch_stride = p.heads * p.kv_head_stride;
  p.lse_head_stride = p.n_queries;
  p.lse_batch_stride = p.heads * p.n_queries;
  p.query_offset = query_offset;
  p.scale = scale;
  return p;
}

}  // namespace tstl::kernels
