// KeyNorm (Su Jianlin 2023): keys L2-normalised per (b, h, n) row, k~ = k / max(|k|, eps).
// Used with RoPE and no 1/sqrt(d) logit scale (docs/variants.md, "Variants").
// RoPE preserves length, so normalising before or after RoPE gives the same k~.
// Backward, g = dL/dk~:  dk = (g - k~ <k~, g>) / |k| when |k| > eps, and g / eps in the clamped
// branch (where the map is the linear k / eps). Gradient contract: dk is returned written (=).
#pragma once

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

// k (..., d) with any leading dims (the model passes (B, H, N, d)); one autograd node.
Tensor key_norm(const Tensor& k, double eps = 1e-12);

// ---- Per-element math shared by the CPU and CUDA kernels -------------------------------------

// The forward divisor of a row whose Euclidean norm is `norm`.
template <class T>
TSTL_HD T keynorm_divisor(T norm, T eps) {
  return norm > eps ? norm : eps;
}

// dk of one element: g and kn = k~ of that element, dot = <k~, g> over its row, norm = |k| of
// the row. In the clamped branch (norm <= eps) the forward is k / eps, so dk = g / eps.
template <class T>
TSTL_HD T keynorm_backward_element(T g, T kn, T dot, T norm, T eps) {
  return norm > eps ? (g - kn * dot) / norm : g / eps;
}

namespace kernels {
// kn = k / max(|k|, eps) per row of d, norm (rows) = |k|; k, kn (rows, d).
void keynorm_forward_cpu(const Tensor& k, double eps, Tensor& kn, Tensor& norm);
void keynorm_forward_cuda(const Tensor& k, double eps, Tensor& kn, Tensor& norm);
// dk = keynorm_backward_element per element, from the saved kn (rows, d) and norm (rows).
void keynorm_backward_cpu(const Tensor& kn, const Tensor& norm, const Tensor& g, double eps, Tensor& dk);
void keynorm_backward_cuda(const Tensor& kn, const Tensor& norm, const Tensor& g, double eps, Tensor& dk);
}  // namespace kernels

}  // namespace tstl
