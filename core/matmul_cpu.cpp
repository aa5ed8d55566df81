// CPU gemm: one cblas call per batch entry (a single call when the right operand is shared and
// the left is not transposed: the batch folds into M), straight on the tensors' memory: no copy.
// The gemm_bias* twins are the gemm followed by the elementwise passes their CUDA twins fuse.
// With args.accumulate the first call adds into C (beta = 1) too.
#include <cblas.h>

#include <algorithm>
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

void check_gemm_epilogue_args(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c,
                              const Tensor& vec, int64_t vec_size, const char* kernel) {
  TSTL_CHECK(args.batch == 1 && !args.c_shared, kernel, ": expected one product (batch 1, C not shared), got batch ",
             args.batch, args.c_shared ? " with a shared C" : "");
  TSTL_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype() && a.dtype() == vec.dtype(), kernel,
             ": dtypes differ: ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()), ", ", dtype_name(c.dtype()),
             ", ", dtype_name(vec.dtype()));
  TSTL_CHECK(a.numel() == args.m * args.k && b.numel() == args.k * args.n && c.numel() == args.m * args.n &&
                 vec.numel() == vec_size,
             kernel, ": operand sizes ", a.numel(), ", ", b.numel(), ", ", c.numel(), ", ", vec.numel(),
             " do not fit (", args.m, ", ", args.k, ") x (", args.k, ", ", args.n, ") with a vector of ", vec_size);
}

namespace {

// C (M, N) = the bias (N) in every row, then the gemm adds A B onto it (beta = 1): one pass over C,
// where a beta = 0 gemm (which zeroes C first) and a bias pass take two.
void gemm_onto_bias(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  const int64_t rows = args.m, cols = args.n;
  visit_float(c.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pb = bias.data<T>();
    T* pc = c.data<T>();
#pragma omp parallel for schedule(static) if (rows * cols > (int64_t{1} << 18))
    for (int64_t r = 0; r < rows; ++r) std::copy(pb, pb + cols, pc + r * cols);
  });
  GemmArgs onto = args;
  onto.accumulate = true;
  gemm_cpu(onto, a, b, c);
}

}  // namespace

void gemm_bias_cpu(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  check_gemm_epilogue_args(args, a, b, c, bias, args.n, "gemm_bias");
  gemm_onto_bias(args, a, b, bias, c);
}

void gemm_bias_gelu_cpu(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& h,
                        Tensor& y) {
  check_gemm_epilogue_args(args, a, b, h, bias, args.n, "gemm_bias_gelu");
  gemm_onto_bias(args, a, b, bias, h);
  gelu_forward_cpu(h, y);
}

void gemm_bias_grad_cpu(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c, Tensor& bias_grad) {
  check_gemm_epilogue_args(args, a, b, c, bias_grad, args.m, "gemm_bias_grad");
  TSTL_CHECK(args.transpose_a, "gemm_bias_grad: A must be transposed (A (K, M) holds the rows to sum)");
  gemm_cpu(args, a, b, c);
  sum_rows_cpu(a, bias_grad);
}

}  // namespace tstl::kernels
