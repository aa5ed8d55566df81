// Fused softmax cross-entropy on the CPU: OpenMP over rows, double accumulation.
#include "core/cross_entropy.h"
#include "core/kernels.h"

namespace tstl::kernels {

void cross_entropy_forward_cpu(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                               Tensor& lse) {
  const int64_t vocab = logits.size(-1), rows = logits.numel() / vocab;
  const bool wide = targets.dtype() == DType::I64;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = load_target(targets.raw(), wide, r);
    TSTL_CHECK(t == ignore_index || (t >= 0 && t < vocab), "cross_entropy: target ", t, " at row ", r,
               " outside [0, ", vocab, ")");
  }
  visit_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = logits.data<T>();
    T* pl = loss.data<T>();
    T* plse = lse.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = px + r * vocab;
      const double l = row_logsumexp<double>(row, vocab);
      const int64_t t = load_target(targets.raw(), wide, r);
      plse[r] = static_cast<T>(l);
      pl[r] = t == ignore_index ? T(0) : static_cast<T>(l - row[t]);
    }
  });
}

void cross_entropy_backward_cpu(const Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t ignore_index,
                                const Tensor& dloss, double inv_count, Tensor& dlogits) {
  const int64_t vocab = logits.size(-1), rows = logits.numel() / vocab;
  const bool wide = targets.dtype() == DType::I64;
  visit_float(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = logits.data<T>();
    const T* plse = lse.data<T>();
    T* pg = dlogits.data<T>();
    const double scale = static_cast<double>(dloss.data<T>()[0]) * inv_count;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = load_target(targets.raw(), wide, r);
      T* grow = pg + r * vocab;
      const T* row = px + r * vocab;
      if (t == ignore_index) {
        for (int64_t j = 0; j < vocab; ++j) grow[j] = T(0);
        continue;
      }
      const double l = static_cast<double>(plse[r]);
      for (int64_t j = 0; j < vocab; ++j) grow[j] = cross_entropy_grad<double>(row[j], l, j == t, scale);
    }
  });
}

}  // namespace tstl::kernels
