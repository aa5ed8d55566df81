// CPU kernel of the fused AdamW update (math in optim/adamw.h), OpenMP over elements.
#include "optim/adamw.h"

namespace tstl::kernels {

void adamw_step_cpu(const AdamWScalars& s, Tensor& p, const Tensor& g, Tensor& m, Tensor& v) {
  const int64_t n = p.numel();
  visit_float(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* pp = p.data<T>();        // (n)
    const T* pg = g.data<T>();  // (n)
    T* pm = m.data<T>();        // (n)
    T* pv = v.data<T>();        // (n)
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) adamw_update(pp[i], pg[i], pm[i], pv[i], s);
  });
}

}  // namespace tstl::kernels
