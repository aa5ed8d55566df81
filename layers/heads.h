// Moving between the packed token-major layout of the projections and the head-major layout of
// attention, each one autograd node.
//
// The fused QKV layout of GPT-NeoX (Hugging Face `query_key_value`): the projection output is
// (B, N, 3*H*d), and for every token the 3*H*d columns are H groups of 3*d, one per head, each
// group being [q (d), k (d), v (d)], i.e. the tensor viewed as (B, N, H, 3, d):
//
//   qkv[b, n, h*3*d + which*d + j] = (q, k, v)[which][b, h, n, j]
//
// (not [all q | all k | all v]: a checkpoint's query_key_value weight rows follow this order).
// The attention output is merged back token-major, heads side by side:
//
//   merged[b, n, h*d + j] = x[b, h, n, j]          (the input of the dense/out projection)
//
// split_heads(qkv, H, which) -> (B, H, N, d); its backward writes that part's gradient into a
// zero (B, N, 3*H*d) tensor (the engine sums the q, k and v contributions).
// merge_heads(x (B, H, N, d)) -> (B, N, H*d); its backward is the gather the other way.
// Gradient contract: the op returns freshly written gradients.
#pragma once

#include <cstdint>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

// qkv (B, N, 3*H*d), which 0 = q, 1 = k, 2 = v -> (B, H, N, d).
Tensor split_heads(const Tensor& qkv, int64_t heads, int which);
// x (B, H, N, d) -> (B, N, H*d).
Tensor merge_heads(const Tensor& x);

namespace kernels {

// The map between a head-major (B, H, N, d) tensor and a token-major (B, N, width) one whose
// head h occupies the columns [h*group + offset, h*group + offset + d). Split of the fused QKV:
// group = 3*d, offset = which*d, width = 3*H*d. Merge: group = d, offset = 0, width = H*d.
struct HeadsArgs {
  int64_t batch = 0, heads = 0, tokens = 0, head_dim = 0;
  int64_t width = 0, group = 0, offset = 0;
};

// Flat index into the token-major tensor of element (b, h, n, j) of the head-major one.
TSTL_HD int64_t heads_packed_index(const HeadsArgs& a, int64_t b, int64_t h, int64_t n, int64_t j) {
  return (b * a.tokens + n) * a.width + h * a.group + a.offset + j;
}

// split (B, H, N, d) = the selected columns of packed (B, N, width).
void heads_gather_cpu(const HeadsArgs& args, const Tensor& packed, Tensor& split);
// The selected columns of packed (B, N, width) = split (B, H, N, d); other columns untouched.
void heads_scatter_cpu(const HeadsArgs& args, const Tensor& split, Tensor& packed);
// The CUDA twins (layers/heads_cuda.cu), any dtype.
void heads_gather_cuda(const HeadsArgs& args, const Tensor& packed, Tensor& split);
void heads_scatter_cuda(const HeadsArgs& args, const Tensor& split, Tensor& packed);

}  // namespace kernels
}  // namespace tstl
