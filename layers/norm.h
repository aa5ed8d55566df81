// LayerNorm and RMSNorm over the last dimension, each one fused autograd node.
//
//   layer_norm: y = (x - mean) * rstd * gain + bias,  rstd = 1 / sqrt(var + eps), var = mean((x - mean)^2)
//   rms_norm:   y = x * rstd * gain,                  rstd = 1 / sqrt(mean(x^2) + eps)
//
// Shapes: x (..., C) is treated as R rows of C; gain, bias (C); the node saves x, gain and the
// per-row statistics mean (R) (LayerNorm only) and rstd (R), kept in the accumulation type.
// RMSNorm is the uncentred case of the same kernels: mean is taken as 0 and its gradient term
// drops out. Statistics and the backward's row means are accumulated in Acc = double on the CPU
// (fp32 on CUDA); the per-element output and input gradient are evaluated in the input's type.
//
// Backward, with xhat = (x - mean) * rstd and g = dy * gain, row means over C written <.>:
//   dx    = rstd * (g - <g> - xhat * <g xhat>)    (RMSNorm: without the <g> term)
//   dgain = sum over rows of dy * xhat,  dbias = sum over rows of dy
// Gradient contract: the kernels write (=) dx, dgain and dbias; the autograd engine accumulates
// the parameter gradients into .grad. The CPU sums the parameter gradients over fixed chunks of
// rows, then the chunks in order, so they do not depend on the number of threads.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

// x (..., C), gain (C), bias (C) or undefined -> (..., C).
Tensor layer_norm(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps = 1e-5);
// x (..., C), gain (C) -> (..., C).
Tensor rms_norm(const Tensor& x, const Tensor& gain, double eps = 1e-6);

// ---- Per-row math shared by the CPU and CUDA kernels -----------------------------------------

// Row statistics, two passes in Acc (the mean first, then the centred second moment) so that a
// large common offset does not cancel the variance. Uncentred (RMSNorm): mean = 0.
template <bool Centered, class Acc, class T>
TSTL_HD void norm_row_stats(const T* x, int64_t cols, Acc eps, Acc* mean, Acc* rstd) {
  Acc m = 0;
  if (Centered) {
    for (int64_t c = 0; c < cols; ++c) m += static_cast<Acc>(x[c]);
    m /= static_cast<Acc>(cols);
  }
  Acc second = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const Acc centred = static_cast<Acc>(x[c]) - m;
    second += centred * centred;
  }
  *mean = m;
  *rstd = Acc(1) / sqrt(second / static_cast<Acc>(cols) + eps);
}

// y = xhat * gain + bias for one element.
template <class Acc, class T>
TSTL_HD T norm_output(T x, Acc mean, Acc rstd, T gain, T bias) {
  return static_cast<T>((static_cast<Acc>(x) - mean) * rstd * static_cast<Acc>(gain) + static_cast<Acc>(bias));
}

// The two row means the input gradient needs: <g> (Centered only) and <g xhat>, g = dy * gain.
template <bool Centered, class Acc, class T>
TSTL_HD void norm_row_grad_means(const T* x, const T* dy, const T* gain, int64_t cols, Acc mean, Acc rstd, Acc* mean_g,
                                 Acc* mean_g_xhat) {
  Acc sum_g = 0, sum_g_xhat = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const Acc g = static_cast<Acc>(dy[c]) * static_cast<Acc>(gain[c]);
    const Acc xhat = (static_cast<Acc>(x[c]) - mean) * rstd;
    if (Centered) sum_g += g;
    sum_g_xhat += g * xhat;
  }
  *mean_g = Centered ? sum_g / static_cast<Acc>(cols) : Acc(0);
  *mean_g_xhat = sum_g_xhat / static_cast<Acc>(cols);
}

// dx for one element, given its row's statistics and gradient means.
template <class Acc, class T>
TSTL_HD T norm_input_grad(T x, T dy, T gain, Acc mean, Acc rstd, Acc mean_g, Acc mean_g_xhat) {
  const Acc g = static_cast<Acc>(dy) * static_cast<Acc>(gain);
  const Acc xhat = (static_cast<Acc>(x) - mean) * rstd;
  return static_cast<T>(rstd * (g - mean_g - xhat * mean_g_xhat));
}

// ---- Kernels ---------------------------------------------------------------------------------

namespace kernels {

struct NormArgs {
  int64_t rows = 0, cols = 0;
  double eps = 1e-5;
  bool centered = true;  // LayerNorm; false: RMSNorm
};

// x (R, C), gain (C), bias (C) or undefined -> y (R, C); mean (R) (centred only, else
// undefined) and rstd (R) in the accumulation dtype (f64 for f64 input, f32 for f32).
void norm_forward_cpu(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& bias, Tensor& y,
                      Tensor& mean, Tensor& rstd);
// Writes dx (R, C), dgain (C) and dbias (C); any of them may be undefined and is then skipped.
void norm_backward_cpu(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& mean,
                       const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgain, Tensor& dbias);
// The CUDA twins (layers/norm_cuda.cu): f32, bf16 or f64 activations; mean and rstd are f32 for
// bf16 (the compute dtype), x's dtype otherwise; fp32 accumulation for f32 and bf16.
void norm_forward_cuda(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& bias, Tensor& y,
                       Tensor& mean, Tensor& rstd);
void norm_backward_cuda(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgain, Tensor& dbias);

}  // namespace kernels
}  // namespace tstl
