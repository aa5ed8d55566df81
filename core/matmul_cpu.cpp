// CPU gemm: one cblas call per batch entry (a single call when the right operand is shared and
// the left is not transposed: the batch folds into M), straight on the tensors' memory: no copy.
// With args.accumulate the first call adds into C (beta = 1) too.
#include <cblas.h>

#include <type_traits>

#include "core/kernels.h"

namespace tstl::kernels {

void gemm_cpu(const GemmArgs& g, const Tensor& a, const Tensor& b, Tensor& c) {
  const CBLAS_TRANSPOSE ta = g.transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.transpose_b ? CblasTrans : CblasNoTrans;
  const int64_t lda = g.transpose_a ? g.m : g.k, ldb = g.transpose_b ? g.k : g.n;
  const int64_t a_stride = g.a_shared ? 0 : g.m * g.k, b_stride = g.b_shared ? 0 : g.k * g.n;
  int64_t batch = g.batch, m = g.m;
  const int64_t c_stride = g.c_shared ? 0 : g.m * g.n;
  if (g.b_shared && !g.a_shared && !g.c_shared && !g.transpose_a) {  // (batch*M, K) x (K, N) in one call
    m *= batch;
    batch = 1;
  }
  visit_float(c.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    for (int64_t i = 0; i < batch; ++i) {
      if constexpr (std::is_same_v<T, float>) {
        cblas_sgemm(CblasRowMajor, ta, tb, m, g.n, g.k, 1.0f, pa + i * a_stride, lda, pb + i * b_stride, ldb,
                    (i && g.c_shared) || g.accumulate ? 1.0f : 0.0f, pc + i * c_stride, g.n);
      } else {
        cblas_dgemm(CblasRowMajor, ta, tb, m, g.n, g.k, 1.0, pa + i * a_stride, lda, pb + i * b_stride, ldb,
                    (i && g.c_shared) || g.accumulate ? 1.0 : 0.0, pc + i * c_stride, g.n);
      }
    }
  });
}

}  // namespace tstl::kernels
