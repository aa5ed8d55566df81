// linear and gelu_mlp: shape checks, the forward products and the single node of each op. The
// products are core gemm kernels over all R rows at once; see layers/linear.h for the math.
#include "layers/linear.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {

namespace {

void check_float(const Tensor& t, const char* op, const char* what) {
  TSTL_CHECK(
      t.dtype() == DType::F32 || t.dtype() == DType::F64 || t.dtype() == DType::BF16, op, ": ", what,
      " must be f32, f64 or bf16, got ", dtype_name(t.dtype()));
}

// Checks that weight (out, in) and bias (out) (may be undefined) fit x (..., in).
void check_affine(const Tensor& x, const Tensor& weight, const Tensor& bias, const char* op, const char* w_name,
                  const char* b_name) {
  check_same_dtype(x, weight, op);
  check_same_device(x, weight, op);
  TSTL_CHECK(weight.dim() == 2 && x.dim() >= 1 && weight.size(1) == x.size(-1), op, ": ", w_name, " ",
             shape_str(weight.shape()), " does not fit an input ", shape_str(x.shape()), " (expected (out, ",
             x.dim() >= 1 ? x.size(-1) : 0, "))");
  if (bias.defined()) {
    check_same_dtype(x, bias, op);
    check_same_device(x, bias, op);
    check_shape(bias, {weight.size(0)}, op, b_name);
  }
}

int64_t rows_of(const Tensor& x) {
  return x.size(-1) ? x.numel() / x.size(-1) : 0;
}

// The product x (R, in) W^T, W (out, in).
kernels::GemmArgs affine_args(const Tensor& x, const Tensor& weight) {
  kernels::GemmArgs g;
  g.m = rows_of(x), g.n = weight.size(0), g.k = weight.size(1), g.transpose_b = true;
  return g;
}

// y (R, out) = x (R, in) W^T, W (out, in).
Tensor affine_product(const Tensor& x, const Tensor& weight, const Shape& out_shape) {
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());  // (R, out)
  TSTL_ON_DEVICE(x, gemm, affine_args(x, weight), x, weight, y);
  return y;
}

// y (R, out) = x (R, in) W^T + b, b (out) or undefined (on CUDA the bias is the gemm's epilogue).
Tensor affine_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Shape& out_shape) {
  if (!bias.defined()) return affine_product(x, weight, out_shape);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());  // (R, out)
  TSTL_ON_DEVICE(x, gemm_bias, affine_args(x, weight), x, weight, bias, y);
  return y;
}

// dx (R, in) = dy (R, out) W (out, in).
Tensor affine_input_grad(const Tensor& dy, const Tensor& weight, const Shape& x_shape) {
  kernels::GemmArgs g;
  g.m = rows_of(dy), g.n = weight.size(1), g.k = weight.size(0);
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  TSTL_ON_DEVICE(dy, gemm, g, dy, weight, dx);
  return dx;
}

// dW (out, in) = dy^T (out, R) x (R, in): the sum over all rows in one gemm.
Tensor affine_weight_grad(const Tensor& dy, const Tensor& x, const Shape& w_shape) {
  kernels::GemmArgs g;
  g.m = w_shape[0], g.n = w_shape[1], g.k = rows_of(dy), g.transpose_a = true;
  Tensor dw = Tensor::empty(w_shape, dy.dtype(), dy.device());
  TSTL_ON_DEVICE(dy, gemm, g, dy, x, dw);
  return dw;
}

// db (out) = sum over rows of dy (R, out).
Tensor affine_bias_grad(const Tensor& dy) {
  Tensor db = Tensor::empty({dy.size(-1)}, dy.dtype(), dy.device());
  TSTL_ON_DEVICE(dy, sum_rows, dy, db);
  return db;
}

// The parameter gradients dW = dy^T x and db (each when wanted; db in the gemm's epilogue on CUDA
// when both are).
void affine_param_grads(const Tensor& dy, const Tensor& x, const Shape& w_shape, bool gw, bool gb, Tensor& dw,
                        Tensor& db) {
  if (gw && gb) {
    kernels::GemmArgs g;
    g.m = w_shape[0], g.n = w_shape[1], g.k = rows_of(dy), g.transpose_a = true;
    dw = Tensor::empty(w_shape, dy.dtype(), dy.device());
    db = Tensor::empty({w_shape[0]}, dy.dtype(), dy.device());
    TSTL_ON_DEVICE(dy, gemm_bias_grad, g, dy, x, dw, db);
    return;
  }
  if (gw) dw = affine_weight_grad(dy, x, w_shape);
  if (gb) db = affine_bias_grad(dy);
}

Shape with_last(const Shape& shape, int64_t last) {
  Shape out = shape;
  out.back() = last;
  return out;
}

bool wants_grad(const Tensor& t) {
  return t.defined() && t.requires_grad();
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "linear", "x");
  check_affine(x, weight, bias, "linear", "weight", "bias");
  if (is_bf16_on_cpu(x)) return round_to_bf16(linear(widen_bf16(x), widen_bf16(weight), widen_bf16(bias)));
  const Shape x_shape = x.shape(), w_shape = weight.shape();
  Tensor y = affine_forward(x, weight, bias, with_last(x_shape, w_shape[0]));  // (..., out)
  if (!needs_grad({&x, &weight, &bias})) return y;
  const bool gx = wants_grad(x), gw = wants_grad(weight), gb = wants_grad(bias);
  const Tensor saved_x = gw ? x.detach() : Tensor();              // (..., in)
  const Tensor saved_w = gx ? weight.detach() : Tensor();         // (out, in)
  record(y, "linear", {x, weight, bias}, [=](const Tensor& dy) {  // dy (..., out)
    Tensor dx = gx ? affine_input_grad(dy, saved_w, x_shape) : Tensor();
    Tensor dw, db;
    affine_param_grads(dy, saved_x, w_shape, gw, gb, dw, db);
    return std::vector<Tensor>{dx, dw, db};
  });
  return y;
}

Tensor gelu_mlp(const Tensor& x, const Tensor& w_in, const Tensor& b_in, const Tensor& w_out, const Tensor& b_out) {
  check_float(x, "gelu_mlp", "x");
  check_affine(x, w_in, b_in, "gelu_mlp", "w_in", "b_in");
  TSTL_CHECK(w_out.dim() == 2, "gelu_mlp: w_out must be (out, ffn), got ", shape_str(w_out.shape()));
  // bf16 on the CPU: the unfused ops, each rounding its output, so that the hidden activation
  // and its GELU are stored in bf16 as the CUDA kernels store them.
  if (is_bf16_on_cpu(x)) return linear(gelu(linear(x, w_in, b_in)), w_out, b_out);
  const int64_t ffn = w_in.size(0);
  const Shape x_shape = x.shape(), h_shape = with_last(x_shape, ffn);
  const Shape w_in_shape = w_in.shape(), w_out_shape = w_out.shape();
  Tensor h, a;  // (..., F) the pre-activation x W1^T + b1 and gelu(h)
  if (b_in.defined()) {
    h = Tensor::empty(h_shape, x.dtype(), x.device());
    a = Tensor::empty(h_shape, x.dtype(), x.device());
    TSTL_ON_DEVICE(x, gemm_bias_gelu, affine_args(x, w_in), x, w_in, b_in, h, a);
  } else {
    h = affine_product(x, w_in, h_shape);
    a = Tensor::empty(h_shape, h.dtype(), h.device());
    TSTL_ON_DEVICE(h, gelu_forward, h, a);
  }
  check_affine(h, w_out, b_out, "gelu_mlp", "w_out", "b_out");
  Tensor y = affine_forward(a, w_out, b_out, with_last(x_shape, w_out_shape[0]));  // (..., C')
  if (!needs_grad({&x, &w_in, &b_in, &w_out, &b_out})) return y;  // a is dropped: backward recomputes it
  const bool gx = wants_grad(x), gw_in = wants_grad(w_in), gb_in = wants_grad(b_in);
  const bool gw_out = wants_grad(w_out), gb_out = wants_grad(b_out);
  const bool through_h = gx || gw_in || gb_in;  // the gradient must pass the activation
  const Tensor saved_x = gw_in ? x.detach() : Tensor();             // (..., C)
  const Tensor saved_w_in = gx ? w_in.detach() : Tensor();          // (F, C)
  const Tensor saved_w_out = through_h ? w_out.detach() : Tensor();  // (C', F)
  const Tensor saved_h = h.detach();                                 // (..., F)
  record(y, "gelu_mlp", {x, w_in, b_in, w_out, b_out}, [=](const Tensor& dy) {  // dy (..., C')
    Tensor dx, dw_in, db_in, dw_out, db_out;
    Tensor act, dh;  // (..., F) gelu(h) again (for dW_out) and the gradient at h
    if (through_h) {  // both from one pass over h
      const Tensor da = affine_input_grad(dy, saved_w_out, h_shape);  // (..., F)
      dh = Tensor::empty(h_shape, dy.dtype(), dy.device());
      if (gw_out) {
        act = Tensor::empty(h_shape, dy.dtype(), dy.device());
        TSTL_ON_DEVICE(dy, gelu_with_backward, saved_h, da, act, dh);
      } else {
        TSTL_ON_DEVICE(dy, gelu_backward, saved_h, da, dh);
      }
    } else if (gw_out) {
      act = Tensor::empty(h_shape, dy.dtype(), dy.device());
      TSTL_ON_DEVICE(dy, gelu_forward, saved_h, act);
    }
    affine_param_grads(dy, act, w_out_shape, gw_out, gb_out, dw_out, db_out);
    if (through_h) {
      if (gx) dx = affine_input_grad(dh, saved_w_in, x_shape);
      affine_param_grads(dh, saved_x, w_in_shape, gw_in, gb_in, dw_in, db_in);
    }
    return std::vector<Tensor>{dx, dw_in, db_in, dw_out, db_out};
  });
  return y;
}

}  // namespace tstl
