// LayerNorm and RMSNorm on the CPU: the forward and backward kernels (OpenMP over rows, double
// accumulation), then the autograd ops. The math is in layers/norm.h.
#include "layers/norm.h"

#include <algorithm>
#include <vector>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {
namespace kernels {

namespace {

// The parameter gradients are summed over chunks of this many rows, each chunk's rows in order,
// then over the chunks in order: a fixed order whatever the number of threads, so the sums are
// the same bits on any thread count.
constexpr int64_t kRowChunk = 32;

// Row statistics and the row means of the backward are accumulated in double; the per-element
// output and input gradient are computed in T from them (vectorised at T's width; for f32 the
// result differs from an all-double evaluation by an f32 rounding or two).
template <bool Centered, class T>
void norm_forward_rows(const NormArgs& a, const T* x, const T* gain, const T* bias, T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (a.rows * a.cols > 16384)
  for (int64_t r = 0; r < a.rows; ++r) {
    const T* row = x + r * a.cols;  // (C)
    T* out = y + r * a.cols;        // (C)
    double m, s;
    norm_row_stats<Centered>(row, a.cols, a.eps, &m, &s);
    // The mean as a sum of two T's, subtracted one after the other: x - mean_hi is exact for x
    // near the mean, so rows on a large common offset keep their spread (a single rounded mean
    // would shift every xhat by up to half an ulp of the offset).
    const T mean_hi = static_cast<T>(m), mean_lo = static_cast<T>(m - static_cast<double>(mean_hi));
    const T st = static_cast<T>(s);
    if (bias) {
      for (int64_t c = 0; c < a.cols; ++c) out[c] = norm_output(row[c] - mean_hi, mean_lo, st, gain[c], bias[c]);
    } else {
      for (int64_t c = 0; c < a.cols; ++c) out[c] = norm_output(row[c] - mean_hi, mean_lo, st, gain[c], T(0));
    }
    if (Centered) mean[r] = static_cast<T>(m);
    rstd[r] = static_cast<T>(s);
  }
}

// One pass over the rows in one parallel region: each row's dx, and each chunk's partial sums of
// dy * xhat and dy (kept in double, (chunks, C) each); then the chunks' sums added in order.
template <bool Centered, class T>
void norm_backward_rows(const NormArgs& a, const T* x, const T* gain, const T* mean, const T* rstd, const T* dy, T* dx,
                        T* dgain, T* dbias) {
  const bool params = dgain || dbias;
  const int64_t chunks = (a.rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> partial_dgain(params ? chunks * a.cols : 0), partial_dbias(params ? chunks * a.cols : 0);
#pragma omp parallel if (a.rows * a.cols > 16384)
  {
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      double* sum_dy_xhat = params ? partial_dgain.data() + chunk * a.cols : nullptr;  // (C)
      double* sum_dy = params ? partial_dbias.data() + chunk * a.cols : nullptr;       // (C)
      for (int64_t r = chunk * kRowChunk; r < std::min(a.rows, (chunk + 1) * kRowChunk); ++r) {
        const T* row = x + r * a.cols;    // (C)
        const T* grow = dy + r * a.cols;  // (C)
        const double m = Centered ? static_cast<double>(mean[r]) : 0.0, s = rstd[r];
        const T mt = static_cast<T>(m), st = static_cast<T>(s);
        if (params) {
          for (int64_t c = 0; c < a.cols; ++c) {
            const T xhat = (row[c] - mt) * st;
            sum_dy_xhat[c] += static_cast<double>(grow[c]) * static_cast<double>(xhat);
            sum_dy[c] += static_cast<double>(grow[c]);
          }
        }
        if (!dx) continue;
        double mean_g, mean_g_xhat;
        norm_row_grad_means<Centered>(row, grow, gain, a.cols, m, s, &mean_g, &mean_g_xhat);
        const T mean_g_t = static_cast<T>(mean_g), mean_g_xhat_t = static_cast<T>(mean_g_xhat);
        T* out = dx + r * a.cols;  // (C)
        for (int64_t c = 0; c < a.cols; ++c)
          out[c] = norm_input_grad(row[c], grow[c], gain[c], mt, st, mean_g_t, mean_g_xhat_t);
      }
    }
    if (params) {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < a.cols; ++c) {
        double total_dy_xhat = 0, total_dy = 0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          total_dy_xhat += partial_dgain[chunk * a.cols + c];
          total_dy += partial_dbias[chunk * a.cols + c];
        }
        if (dgain) dgain[c] = static_cast<T>(total_dy_xhat);
        if (dbias) dbias[c] = static_cast<T>(total_dy);
      }
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
