// KeyNorm: the op with its autograd node and the CPU kernels, forward and backward side by side.
// Row norms and dot products are accumulated in double.
#include "layers/keynorm.h"

#include <cmath>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {

Tensor key_norm(const Tensor& k, double eps) {
  TSTL_CHECK(k.dim() >= 1 && k.size(-1) > 0, "key_norm: expected (..., d) with d > 0, got ", shape_str(k.shape()));
  TSTL_CHECK(eps > 0, "key_norm: eps must be > 0, got ", eps);
  TSTL_CHECK(k.dtype() == DType::F32 || k.dtype() == DType::F64 || k.dtype() == DType::BF16,
             "key_norm: expected f32, f64 or bf16, got ", dtype_name(k.dtype()));
  if (is_bf16_on_cpu(k)) return round_to_bf16(key_norm(widen_bf16(k), eps));
  const int64_t d = k.size(-1), rows = k.numel() / d;
  Tensor kn = Tensor::empty(k.shape(), k.dtype(), k.device());  // (..., d)
  // Norms are kept in f32 for bf16 keys and in the keys' dtype otherwise.
  const DType norm_dtype = k.dtype() == DType::BF16 ? DType::F32 : k.dtype();
  Tensor norm = Tensor::empty({rows}, norm_dtype, k.device());  // (rows)
  TSTL_ON_DEVICE(k, keynorm_forward, k, eps, kn, norm);
  if (needs_grad({&k})) {
    Tensor saved_kn = kn.detach();
    record(kn, "key_norm", {k}, [saved_kn, norm, eps](const Tensor& g) {
      Tensor dk = Tensor::empty(g.shape(), g.dtype(), g.device());  // (..., d)
      TSTL_ON_DEVICE(g, keynorm_backward, saved_kn, norm, g, eps, dk);
      return std::vector<Tensor>{dk};
    });
  }
  return kn;
}

namespace kernels {

void keynorm_forward_cpu(const Tensor& k, double eps, Tensor& kn, Tensor& norm) {
  const int64_t d = k.size(-1), rows = k.numel() / d;
  visit_float(k.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pk = k.data<T>();  // (rows, d)
    T* pkn = kn.data<T>();      // (rows, d)
    T* pnorm = norm.data<T>();  // (rows)
#pragma omp parallel for schedule(static) if (rows * d > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const T* kr = pk + r * d;
      double sq = 0;
      for (int64_t j = 0; j < d; ++j) sq += static_cast<double>(kr[j]) * kr[j];
      const double n = std::sqrt(sq);
      const double inv = 1.0 / keynorm_divisor(n, eps);
      for (int64_t j = 0; j < d; ++j) pkn[r * d + j] = static_cast<T>(kr[j] * inv);
      pnorm[r] = static_cast<T>(n);
    }
  });
}

void keynorm_backward_cpu(const Tensor& kn, const Tensor& norm, const Tensor& g, double eps, Tensor& dk) {
  const int64_t d = kn.size(-1), rows = kn.numel() / d;
  visit_float(kn.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pkn = kn.data<T>();      // (rows, d)
    const T* pnorm = norm.data<T>();  // (rows)
    const T* pg = g.data<T>();        // (rows, d)
    T* pdk = dk.data<T>();            // (rows, d)
#pragma omp parallel for schedule(static) if (rows * d > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(pkn[r * d + j]) * pg[r * d + j];
      for (int64_t j = 0; j < d; ++j)
        pdk[r * d + j] = static_cast<T>(keynorm_backward_element<double>(pg[r * d + j], pkn[r * d + j], dot,
                                                                         pnorm[r], eps));
    }
  });
}

}  // namespace kernels

}  // namespace tstl
