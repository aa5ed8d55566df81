// The CPU twins of the gemm epilogue kernels (core/kernels.h gemm_bias, gemm_bias_gelu,
// gemm_bias_grad) against naive float64 loops on odd shapes, and their argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/kernels.h"

namespace tstl {
namespace {

std::vector<double> values(int64_t n, double phase) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = std::sin(0.37 * static_cast<double>(i) + phase);
  return v;
}

double gelu_exact(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}

// C (M, N) = op(A) op(B) in float64, A stored (K, M) when transposed, B stored (N, K) when transposed.
std::vector<double> naive_product(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t n,
                                  int64_t k, bool ta, bool tb) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += a[static_cast<size_t>(ta ? p * m + i : i * k + p)] * b[static_cast<size_t>(tb ? j * k + p : p * n + j)];
      c[static_cast<size_t>(i * n + j)] = s;
    }
  return c;
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol, const char* what) {
  const std::vector<double> g = got.to_vector<double>();
  ASSERT_EQ(g.size(), want.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want[i], tol) << what << " element " << i;
}

TEST(GemmEpilogueCpu, BiasAndBiasGeluMatchNaiveLoops) {
  const int64_t m = 7, n = 13, k = 5;  // x (7, 5) W^T, W (13, 5), bias (13)
  const std::vector<double> x = values(m * k, 0.1), w = values(n * k, 0.7), bias = values(n, 1.3);
  kernels::GemmArgs g;
  g.m = m, g.n = n, g.k = k, g.transpose_b = true;
  const Tensor tx = Tensor::from_vector(x, {m, k}), tw = Tensor::from_vector(w, {n, k});
  const Tensor tb = Tensor::from_vector(bias, {n});
  std::vector<double> h = naive_product(x, w, m, n, k, false, true), y(h.size());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) h[static_cast<size_t>(i * n + j)] += bias[static_cast<size_t>(j)];
  for (size_t i = 0; i < h.size(); ++i) y[i] = gelu_exact(h[i]);

  Tensor c = Tensor::empty({m, n}, DType::F64);
  kernels::gemm_bias_cpu(g, tx, tw, tb, c);
  expect_near_all(c, h, 1e-12, "gemm_bias");
  Tensor th = Tensor::empty({m, n}, DType::F64), ty = Tensor::empty({m, n}, DType::F64);
  kernels::gemm_bias_gelu_cpu(g, tx, tw, tb, th, ty);
  expect_near_all(th, h, 1e-12, "gemm_bias_gelu h");
  expect_near_all(ty, y, 1e-12, "gemm_bias_gelu y");
}

TEST(GemmEpilogueCpu, BiasGradSumsTheRowsOfA) {
  const int64_t rows = 11, out = 6, in = 9;  // dW (6, 9) = dy^T (6, 11) x (11, 9), db (6)
  const std::vector<double> dy = values(rows * out, 0.2), x = values(rows * in, 0.9);
  kernels::GemmArgs g;
  g.m = out, g.n = in, g.k = rows, g.transpose_a = true;
  Tensor dw = Tensor::empty({out, in}, DType::F64), db = Tensor::empty({out}, DType::F64);
  kernels::gemm_bias_grad_cpu(g, Tensor::from_vector(dy, {rows, out}), Tensor::from_vector(x, {rows, in}), dw, db);
  expect_near_all(dw, naive_product(dy, x, out, in, rows, true, false), 1e-12, "dW");
  std::vector<double> want_db(static_cast<size_t>(out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < out; ++j) want_db[static_cast<size_t>(j)] += dy[static_cast<size_t>(r * out + j)];
  expect_near_all(db, want_db, 1e-12, "db");
}

TEST(GemmEpilogueCpu, RejectsABatchAWrongVectorAndAnUntransposedA) {
  kernels::GemmArgs g;
  g.m = 2, g.n = 3, g.k = 4, g.transpose_b = true;
  const Tensor a = Tensor::zeros({2, 4}), b = Tensor::zeros({3, 4}), bias = Tensor::zeros({3});
  Tensor c = Tensor::empty({2, 3});
  Tensor short_bias = Tensor::zeros({2});
  EXPECT_THROW(kernels::gemm_bias_cpu(g, a, b, short_bias, c), Error);
  kernels::GemmArgs batched = g;
  batched.batch = 2;
  EXPECT_THROW(kernels::gemm_bias_cpu(batched, a, b, bias, c), Error);
  kernels::GemmArgs grad;
  grad.m = 2, grad.n = 3, grad.k = 4;  // A (2, 4) not transposed: no rows to sum
  Tensor db = Tensor::empty({2});
  EXPECT_THROW(kernels::gemm_bias_grad_cpu(grad, a, Tensor::zeros({4, 3}), c, db), Error);
}

}  // namespace
}  // namespace tstl
