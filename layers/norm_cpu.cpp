// LayerNorm and RMSNorm on the CPU: the forward and backward kernels (OpenMP over rows, double
// accumulation), then the autograd ops. The math is in layers/norm.h.
#include "layers/norm.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {
namespace kernels {

namespace {

// Parameter gradients are reduced over column blocks of this width, every block summing its
// rows in order: parallel, cache-friendly, and independent of the thread count.
constexpr int64_t kColumnBlock = 64;

template <bool Centered, class T>
void norm_forward_rows(const NormArgs& a, const T* x, const T* gain, const T* bias, T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (a.rows * a.cols > 16384)
  for (int64_t r = 0; r < a.rows; ++r) {
    const T* row = x + r * a.cols;  // (C)
    T* out = y + r * a.cols;        // (C)
    double m, s;
    norm_row_stats<Centered>(row, a.cols, a.eps, &m, &s);
    for (int64_t c = 0; c < a.cols; ++c) out[c] = norm_output(row[c], m, s, gain[c], bias ? bias[c] : T(0));
    if (Centered) mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(s);
  }
}

template <bool Centered, class T>
void norm_backward_rows(const NormArgs& a, const T* x, const T* gain, const T* mean, const T* rstd, const T* dy, T* dx,
                        T* dgain, T* dbias) {
  if (dx) {
#pragma omp parallel for schedule(static) if (a.rows * a.cols > 16384)
    for (int64_t r = 0; r < a.rows; ++r) {
      const T* row = x + r * a.cols;    // (C)
      const T* grow = dy + r * a.cols;  // (C)
      T* out = dx + r * a.cols;         // (C)
      const double m = Centered ? static_cast<double>(mean[r]) : 0.0, s = rstd[r];
      double mean_g, mean_g_xhat;
      norm_row_grad_means<Centered>(row, grow, gain, a.cols, m, s, &mean_g, &mean_g_xhat);
      for (int64_t c = 0; c < a.cols; ++c)
        out[c] = norm_input_grad(row[c], grow[c], gain[c], m, s, mean_g, mean_g_xhat);
    }
  }
  if (!dgain && !dbias) return;
  const int64_t blocks = (a.cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (a.rows * a.cols > 16384)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t c0 = block * kColumnBlock, width = std::min(kColumnBlock, a.cols - c0);
    double sum_dy_xhat[kColumnBlock] = {}, sum_dy[kColumnBlock] = {};
    for (int64_t r = 0; r < a.rows; ++r) {
      const T* row = x + r * a.cols + c0;    // (width)
      const T* grow = dy + r * a.cols + c0;  // (width)
      const double m = Centered ? static_cast<double>(mean[r]) : 0.0, s = rstd[r];
      for (int64_t c = 0; c < width; ++c) {
        const double g = grow[c];
        sum_dy_xhat[c] += g * (static_cast<double>(row[c]) - m) * s;
        sum_dy[c] += g;
      }
    }
    for (int64_t c = 0; c < width; ++c) {
      if (dgain) dgain[c0 + c] = static_cast<T>(sum_dy_xhat[c]);
      if (dbias) dbias[c0 + c] = static_cast<T>(sum_dy[c]);
    }
  }
}

template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void norm_forward_cpu(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& bias, Tensor& y,
                      Tensor& mean, Tensor& rstd) {
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (args.centered) {
      norm_forward_rows<true>(args, x.data<T>(), gain.data<T>(), data_or_null<T>(bias), y.data<T>(), mean.data<T>(),
                              rstd.data<T>());
    } else {
      norm_forward_rows<false>(args, x.data<T>(), gain.data<T>(), data_or_null<T>(bias), y.data<T>(),
                               static_cast<T*>(nullptr), rstd.data<T>());
    }
  });
}

void norm_backward_cpu(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& mean,
                       const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgain, Tensor& dbias) {
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (args.centered) {
      norm_backward_rows<true>(args, x.data<T>(), gain.data<T>(), mean.data<T>(), rstd.data<T>(), dy.data<T>(),
                               data_or_null<T>(dx), data_or_null<T>(dgain), data_or_null<T>(dbias));
    } else {
      norm_backward_rows<false>(args, x.data<T>(), gain.data<T>(), static_cast<const T*>(nullptr), rstd.data<T>(),
                                dy.data<T>(), data_or_null<T>(dx), data_or_null<T>(dgain), data_or_null<T>(dbias));
    }
  });
}

}  // namespace kernels

// ---- The autograd ops ------------------------------------------------------------------------

namespace {

void check_norm_inputs(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps, const char* op) {
  TSTL_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64 || x.dtype() == DType::BF16, op,
             ": expected x of dtype f32, f64 or bf16, got ", dtype_name(x.dtype()), " on ", device_name(x.device()));
  TSTL_CHECK(x.dim() >= 1 && x.size(-1) > 0, op, ": x must be (..., C) with C > 0, got ", shape_str(x.shape()));
  TSTL_CHECK(eps >= 0.0, op, ": eps must be >= 0, got ", eps);
  const Shape row{x.size(-1)};
  check_same_dtype(x, gain, op);
  check_same_device(x, gain, op);
  check_shape(gain, row, op, "gain");
  if (bias.defined()) {
    check_same_dtype(x, bias, op);
    check_same_device(x, bias, op);
    check_shape(bias, row, op, "bias");
  }
}

Tensor norm(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps, bool centered, const char* op) {
  check_norm_inputs(x, gain, bias, eps, op);
  if (is_bf16_on_cpu(x))  // statistics in f32, the normalised output rounded to bf16
    return round_to_bf16(norm(widen_bf16(x), widen_bf16(gain), widen_bf16(bias), eps, centered, op));
  kernels::NormArgs args;
  args.cols = x.size(-1);
  args.rows = x.numel() / args.cols;
  args.eps = eps;
  args.centered = centered;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());                             // (..., C)
  // Statistics in the compute dtype: f32 for bf16 activations, x's dtype otherwise.
  const DType stat_dtype = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  Tensor mean = centered ? Tensor::empty({args.rows}, stat_dtype, x.device()) : Tensor();  // (R)
  Tensor rstd = Tensor::empty({args.rows}, stat_dtype, x.device());                        // (R)
  TSTL_ON_DEVICE(x, norm_forward, args, x, gain, bias, y, mean, rstd);
  if (!needs_grad({&x, &gain, &bias})) return y;
  const bool gx = x.requires_grad(), gg = gain.requires_grad(), gb = bias.defined() && bias.requires_grad();
  const Tensor saved_x = x.detach(), saved_gain = gain.detach();
  record(y, op, {x, gain, bias}, [=](const Tensor& dy) {
    Tensor dx = gx ? Tensor::empty(saved_x.shape(), dy.dtype(), dy.device()) : Tensor();        // (..., C)
    Tensor dgain = gg ? Tensor::empty(saved_gain.shape(), dy.dtype(), dy.device()) : Tensor();  // (C)
    Tensor dbias = gb ? Tensor::empty(saved_gain.shape(), dy.dtype(), dy.device()) : Tensor();  // (C)
    TSTL_ON_DEVICE(dy, norm_backward, args, saved_x, saved_gain, mean, rstd, dy, dx, dgain, dbias);
    return std::vector<Tensor>{dx, dgain, dbias};
  });
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps) {
  return norm(x, gain, bias, eps, true, "layer_norm");
}

Tensor rms_norm(const Tensor& x, const Tensor& gain, double eps) {
  return norm(x, gain, Tensor(), eps, false, "rms_norm");
}

}  // namespace tstl
