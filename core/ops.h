// The generic differentiable ops. Each is a free function: it checks shapes, computes the result
// on the inputs' device (f32, f64 or bf16; bf16 on the CPU as described at is_bf16_on_cpu) and records an
// autograd node when an input requires grad. Gradient contract of every backward: input
// gradients are returned freshly written; the engine sums them where a tensor is used twice.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tstl {

// Converts x to `dtype` (f32, f64 or bf16): rounds to nearest even when narrowing, exact when
// widening. Differentiable: the gradient is converted back to x's dtype, so the gradient of a
// bf16 -> f32 cast is rounded to bf16 exactly where a bf16 kernel would store it. Casting to x's
// own dtype returns x.
Tensor cast(const Tensor& x, DType dtype);

// The CPU kernels compute in f32 or f64. A CPU op given bf16 tensors runs as the f32 op between
// casts: its bf16 inputs widened (exact), its floating outputs rounded to bf16 -- the points where
// the CUDA bf16 kernels store, with f32 compute (docs/training.md, "Mixed precision").
bool is_bf16_on_cpu(const Tensor& t);                          // false for an undefined tensor
Tensor widen_bf16(const Tensor& t);                            // cast(t, f32) for bf16, else t
Tensor round_to_bf16(const Tensor& t);                         // cast(t, bf16)

// (..., M, K) x (..., K, N) -> (..., M, N), either operand optionally transposed in its last two
// dims. b may be 2-D (a weight shared by every batch entry) or have a's batch dims exactly.
// CPU: one BLAS gemm per batch entry (a single gemm when b is 2-D). CUDA: cuBLAS(Lt), f32 or
// bf16 inputs with fp32 accumulation.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);

// Elementwise with broadcasting of a row vector: b has a's shape, or is 1-D of a's last size.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double s);
// GELU in its exact form x * Phi(x) = x/2 (1 + erf(x / sqrt 2)).
Tensor gelu(const Tensor& x);

// weight (V, C), ids (any shape, i32 or i64) -> (ids.shape..., C); backward scatter-adds into
// dweight. Ids outside [0, V) are an error.
Tensor embedding(const Tensor& weight, const Tensor& ids);

Tensor sum(const Tensor& x);   // -> scalar (shape {})
Tensor mean(const Tensor& x);  // -> scalar

// out.shape[i] = x.shape[dims[i]]; a copy, not a view.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// Slices [start, start+length) of dimension `dim`; a copy whose backward pads with zeros.
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// Joins tensors of equal shape but for dimension `dim` (KV caches, batching); backward narrows.
Tensor concat(const std::vector<Tensor>& parts, int64_t dim);

// Mean over non-ignored rows of -log softmax(logits)[target]. logits (..., V) f32/f64/bf16 (the
// loss is f32 for bf16 logits),
// targets (...) i32/i64. Forward keeps per-row log-sum-exp (fp32 or better accumulation);
// backward writes softmax - onehot row by row, never materialising probabilities elsewhere.
// Rows whose target equals ignore_index contribute nothing. All rows ignored gives loss 0.
// `scored_targets`: how many targets differ from ignore_index, when the caller knows it (counted on
// the host before the upload, count_scored_targets); -1: counted here, which reads device targets back.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -1,
                     int64_t scored_targets = -1);
int64_t count_scored_targets(const Tensor& targets, int64_t ignore_index);
// Per-row negative log-likelihood (no grad), shape of targets, 0 where ignored: for evaluation.
Tensor cross_entropy_rows(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -1);

// Inverted dropout: zeroes each element with probability p, scales the rest by 1/(1-p). The mask
// of element i is a function of (seed, offset + i) alone, identical on CPU and CUDA.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset);

}  // namespace tstl
