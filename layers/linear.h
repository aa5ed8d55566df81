// The affine layer and the GELU MLP of a GPT-NeoX block, each one fused autograd node.
//
//   linear:   y = x W^T + b               x (..., in), W (out, in) (Hugging Face layout), b (out)
//   gelu_mlp: y = gelu(x W1^T + b1) W2^T + b2
//             x (..., C), W1 (F, C), b1 (F), W2 (C', F), b2 (C'); GELU in its exact erf form
//
// Inputs are viewed as R rows (R = product of the leading dims); every product is one BLAS /
// cuBLASLt gemm over all rows (core/kernels.h gemm), so W's gradient is summed over the batch in
// the gemm itself. Biases may be undefined.
//
// Backward of linear, with dy (R, out):  dx = dy W,  dW = dy^T x,  db = sum over rows of dy.
// gelu_mlp saves only x and the pre-activation h = x W1^T + b1 (R, F); backward recomputes
// a = gelu(h) for dW2 = dy^T a, then dh = (dy W2) * gelu'(h) and continues as linear's backward.
// Gradient contract: the op returns freshly written gradients; the autograd engine accumulates
// the parameter gradients into .grad.
//
// These ops have no kernels of their own: they are built from the core kernels (gemm and its
// gemm_bias / gemm_bias_gelu / gemm_bias_grad forms, gelu_forward/gelu_backward, whose per-element
// math is the TSTL_HD gelu_value/gelu_derivative of core/elementwise.h) through TSTL_ON_DEVICE, so
// they run on every device the core kernels run on. On CUDA the biases and the bias gradients are
// cuBLASLt epilogues of the products (core/matmul_cuda.cu); on the CPU the same kernels are the
// product followed by the elementwise pass.
#pragma once

#include "core/tensor.h"

namespace tstl {

// x (..., in), weight (out, in), bias (out) or undefined -> (..., out).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// x (..., C), w_in (F, C), b_in (F) or undefined, w_out (C', F), b_out (C') or undefined
// -> (..., C').
Tensor gelu_mlp(const Tensor& x, const Tensor& w_in, const Tensor& b_in, const Tensor& w_out, const Tensor& b_out);

}  // namespace tstl
