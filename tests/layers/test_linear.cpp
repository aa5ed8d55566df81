// linear and gelu_mlp: forward and every gradient against naive loops in double that call no
// tstl kernel (GELU from std::erf), against the same computation composed of the generic ops
// (matmul, add, gelu) and their autograd, and against float64 finite differences, with and
// without biases; and the single-node structure.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "layers/linear.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::max_relative_difference;
using testing::random_input;

Tensor composed_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Tensor y = matmul(x.dim() == 1 ? x.reshape({1, x.size(0)}) : x, w, false, true);
  const Tensor y_shaped = x.dim() == 1 ? y.reshape({w.size(0)}) : y;
  return b.defined() ? add(y_shaped, b) : y_shaped;
}

Tensor composed_mlp(const Tensor& x, const Tensor& w_in, const Tensor& b_in, const Tensor& w_out, const Tensor& b_out) {
  return composed_linear(gelu(composed_linear(x, w_in, b_in)), w_out, b_out);
}

// Runs f on fresh leaf copies of `inputs` (undefined stays undefined), backpropagates sum(f * seed)
// and returns the output followed by the gradient of every defined input.
std::vector<Tensor> output_and_grads(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                     const std::vector<Tensor>& inputs, uint64_t seed) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) {
    Tensor leaf = t.defined() ? t.clone() : Tensor();
    if (leaf.defined()) leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  const Tensor y = f(leaves);
  sum(mul(y, random_input(y.shape(), seed, 1.0, false))).backward();
  std::vector<Tensor> result{y.detach()};
  for (const Tensor& t : leaves)
    if (t.defined()) result.push_back(t.grad());
  return result;
}

void expect_same_as_composition(const std::function<Tensor(const std::vector<Tensor>&)>& fused,
                                const std::function<Tensor(const std::vector<Tensor>&)>& composed,
                                const std::vector<Tensor>& inputs) {
  const auto a = output_and_grads(fused, inputs, 99), b = output_and_grads(composed, inputs, 99);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].shape(), b[i].shape()) << (i ? "gradient " : "output ") << i;
    EXPECT_LT(max_relative_difference(a[i], b[i]), 1e-12) << (i ? "gradient " : "output ") << i;
  }
}

// ---- An independent reference: plain loops in double, GELU from std::erf ----------------------
// Nothing here calls a tstl kernel, so a wrong gemm layout, a wrong GELU or GELU derivative, or a
// missing bias gradient in the ops cannot cancel out against the same mistake in the reference.
using Matrix = std::vector<double>;  // row-major

// y (R, O) = x (R, I) W^T + b, W (O, I), b (O) or empty.
Matrix naive_affine(const Matrix& x, const Matrix& w, const Matrix& b, size_t rows, size_t in, size_t out) {
  Matrix y(rows * out);
  for (size_t r = 0; r < rows; ++r)
    for (size_t o = 0; o < out; ++o) {
      double acc = b.empty() ? 0.0 : b[o];
      for (size_t i = 0; i < in; ++i) acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

double naive_gelu(double h) { return 0.5 * h * (1.0 + std::erf(h / std::sqrt(2.0))); }
double naive_gelu_derivative(double h) {  // Phi(h) + h phi(h)
  return 0.5 * (1.0 + std::erf(h / std::sqrt(2.0))) + h * std::exp(-0.5 * h * h) / std::sqrt(2.0 * M_PI);
}

// The backward of naive_affine for dy (R, O): dx = dy W, dW = dy^T x, db = column sums of dy.
struct AffineGrads {
  Matrix dx, dw, db;
};
AffineGrads naive_affine_backward(const Matrix& dy, const Matrix& x, const Matrix& w, size_t rows, size_t in, size_t out) {
  AffineGrads g{Matrix(rows * in, 0.0), Matrix(out * in, 0.0), Matrix(out, 0.0)};
  for (size_t r = 0; r < rows; ++r)
    for (size_t o = 0; o < out; ++o) {
      const double d = dy[r * out + o];
      g.db[o] += d;
      for (size_t i = 0; i < in; ++i) {
        g.dx[r * in + i] += d * w[o * in + i];
        g.dw[o * in + i] += d * x[r * in + i];
      }
    }
  return g;
}

void expect_near_all(const Tensor& got, const Matrix& expected, const char* what) {
  const std::vector<double> v = got.to_vector<double>();
  ASSERT_EQ(v.size(), expected.size()) << what;
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_NEAR(v[i], expected[i], 1e-12 * (1 + std::fabs(expected[i]))) << what << "[" << i << "]";
}

TEST(Linear, ForwardAndGradientsMatchNaiveLoops) {
  const size_t rows = 15, in = 7, out = 9;
  Tensor x = random_input({3, 5, 7}, 101), w = random_input({9, 7}, 102), b = random_input({9}, 103);
  const Tensor dy = random_input({3, 5, 9}, 104, 1.0, false);
  const Tensor y = linear(x, w, b);
  const Matrix vx = x.to_vector<double>(), vw = w.to_vector<double>(), vb = b.to_vector<double>();
  expect_near_all(y, naive_affine(vx, vw, vb, rows, in, out), "y");
  y.backward(dy);
  const AffineGrads g = naive_affine_backward(dy.to_vector<double>(), vx, vw, rows, in, out);
  expect_near_all(x.grad(), g.dx, "dx");
  expect_near_all(w.grad(), g.dw, "dW");
  expect_near_all(b.grad(), g.db, "db");
}

TEST(GeluMlp, ForwardAndGradientsMatchNaiveLoops) {
  const size_t rows = 15, c = 7, f = 11, c_out = 5;
  Tensor x = random_input({3, 5, 7}, 111), w_in = random_input({11, 7}, 112, 0.7), b_in = random_input({11}, 113),
         w_out = random_input({5, 11}, 114, 0.7), b_out = random_input({5}, 115);
  const Tensor dy = random_input({3, 5, 5}, 116, 1.0, false);
  const Tensor y = gelu_mlp(x, w_in, b_in, w_out, b_out);
  const Matrix vx = x.to_vector<double>(), vw1 = w_in.to_vector<double>(), vb1 = b_in.to_vector<double>(),
               vw2 = w_out.to_vector<double>(), vb2 = b_out.to_vector<double>();
  const Matrix h = naive_affine(vx, vw1, vb1, rows, c, f);
  Matrix a(h.size());
  for (size_t i = 0; i < h.size(); ++i) a[i] = naive_gelu(h[i]);
  expect_near_all(y, naive_affine(a, vw2, vb2, rows, f, c_out), "y");
  y.backward(dy);
  const AffineGrads second = naive_affine_backward(dy.to_vector<double>(), a, vw2, rows, f, c_out);
  Matrix dh(h.size());
  for (size_t i = 0; i < h.size(); ++i) dh[i] = second.dx[i] * naive_gelu_derivative(h[i]);
  const AffineGrads first = naive_affine_backward(dh, vx, vw1, rows, c, f);
  expect_near_all(w_out.grad(), second.dw, "dW_out");
  expect_near_all(b_out.grad(), second.db, "db_out");
  expect_near_all(w_in.grad(), first.dw, "dW_in");
  expect_near_all(b_in.grad(), first.db, "db_in");
  expect_near_all(x.grad(), first.dx, "dx");
}

TEST(Linear, MatchesComposedOpsWithAndWithoutBias) {
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    const std::vector<Tensor> in{random_input({3, 5, 7}, 1, 1.0, false), random_input({9, 7}, 2, 1.0, false),
                                 with_bias ? random_input({9}, 3, 1.0, false) : Tensor()};
    expect_same_as_composition([](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); },
                               [](const std::vector<Tensor>& v) { return composed_linear(v[0], v[1], v[2]); }, in);
  }
}

TEST(Linear, HandComputed) {
  // x (1, 2) = (1, 2); W (3, 2) rows (1, 0), (0, 1), (1, -1); b = (10, 20, 30): y = (11, 22, 29).
  const Tensor x = Tensor::from_vector<double>({1, 2}, {1, 2});
  const Tensor w = Tensor::from_vector<double>({1, 0, 0, 1, 1, -1}, {3, 2});
  const Tensor b = Tensor::from_vector<double>({10, 20, 30}, {3});
  EXPECT_EQ(linear(x, w, b).to_vector<double>(), (std::vector<double>{11, 22, 29}));
  EXPECT_EQ(linear(x.reshape({2}), w, Tensor()).shape(), (Shape{3}));  // a single vector
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                         {random_input({3, 5, 7}, 4), random_input({9, 7}, 5), random_input({9}, 6)});
  expect_gradients_match([](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); },
                         {random_input({3, 5, 7}, 7), random_input({9, 7}, 8)});
  // Frozen weight: only x and the bias.
  const Tensor w = random_input({4, 7}, 9, 1.0, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return linear(in[0], w, in[1]); },
                         {random_input({5, 7}, 10), random_input({4}, 11)});
}

TEST(Linear, F32MatchesF64) {
  const Tensor x = random_input({3, 5, 7}, 12, 1.0, false), w = random_input({9, 7}, 13, 1.0, false),
               b = random_input({9}, 14, 1.0, false);
  const Tensor y32 = linear(x.to(DType::F32), w.to(DType::F32), b.to(DType::F32));
  EXPECT_EQ(y32.dtype(), DType::F32);
  EXPECT_LT(max_relative_difference(y32, linear(x, w, b)), 1e-6);
}

TEST(Linear, IsOneNodeAndChecksShapes) {
  const Tensor x = random_input({3, 5, 7}, 15), w = random_input({9, 7}, 16), b = random_input({9}, 17);
  const Tensor y = linear(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{3, 5, 9}));
  ASSERT_TRUE(y.grad_fn());
  EXPECT_STREQ(y.grad_fn()->name, "linear");
  for (const Edge& e : y.grad_fn()->edges) EXPECT_TRUE(e.leaf && !e.node);
  EXPECT_THROW(linear(x, random_input({9, 6}, 18), b), Error);
  EXPECT_THROW(linear(x, w, random_input({8}, 19)), Error);
  EXPECT_THROW(linear(x, w.to(DType::F32), b), Error);
}

TEST(GeluMlp, MatchesComposedOpsWithAndWithoutBiases) {
  for (int biases = 0; biases < 4; ++biases) {
    SCOPED_TRACE(::testing::Message() << "b_in " << (biases & 1) << ", b_out " << (biases >> 1 & 1));
    const std::vector<Tensor> in{random_input({3, 5, 7}, 20, 1.0, false), random_input({9, 7}, 21, 1.0, false),
                                 biases & 1 ? random_input({9}, 22, 1.0, false) : Tensor(),
                                 random_input({5, 9}, 23, 1.0, false),
                                 biases & 2 ? random_input({5}, 24, 1.0, false) : Tensor()};
    expect_same_as_composition([](const std::vector<Tensor>& v) { return gelu_mlp(v[0], v[1], v[2], v[3], v[4]); },
                               [](const std::vector<Tensor>& v) { return composed_mlp(v[0], v[1], v[2], v[3], v[4]); },
                               in);
  }
}

TEST(GeluMlp, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return gelu_mlp(in[0], in[1], in[2], in[3], in[4]); },
                         {random_input({3, 5, 7}, 25), random_input({9, 7}, 26, 0.5), random_input({9}, 27),
                          random_input({7, 9}, 28, 0.5), random_input({7}, 29)});
  expect_gradients_match(
      [](const std::vector<Tensor>& in) { return gelu_mlp(in[0], in[1], Tensor(), in[2], Tensor()); },
      {random_input({3, 5, 7}, 30), random_input({9, 7}, 31, 0.5), random_input({5, 9}, 32, 0.5)});
}

TEST(GeluMlp, GradientsOfPartlyFrozenInputs) {
  // x needs no gradient: only the parameters.
  const Tensor x = random_input({5, 7}, 33, 1.0, false);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return gelu_mlp(x, in[0], in[1], in[2], in[3]); },
      {random_input({9, 7}, 34, 0.5), random_input({9}, 35), random_input({7, 9}, 36, 0.5), random_input({7}, 37)});
  // Only x and the output bias: the first layer's weights are frozen.
  const Tensor w_in = random_input({9, 7}, 38, 0.5, false), w_out = random_input({7, 9}, 39, 0.5, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return gelu_mlp(in[0], w_in, Tensor(), w_out, in[1]); },
                         {random_input({3, 7}, 40), random_input({7}, 41)});
}

TEST(GeluMlp, IsOneNodeAndF32MatchesF64) {
  const Tensor x = random_input({3, 5, 7}, 42), w_in = random_input({9, 7}, 43), b_in = random_input({9}, 44),
               w_out = random_input({7, 9}, 45), b_out = random_input({7}, 46);
  const Tensor y = gelu_mlp(x, w_in, b_in, w_out, b_out);
  EXPECT_EQ(y.shape(), (Shape{3, 5, 7}));
  ASSERT_TRUE(y.grad_fn());
  EXPECT_STREQ(y.grad_fn()->name, "gelu_mlp");
  ASSERT_EQ(y.grad_fn()->edges.size(), 5u);
  for (const Edge& e : y.grad_fn()->edges) EXPECT_TRUE(e.leaf && !e.node);
  const Tensor y32 =
      gelu_mlp(x.to(DType::F32), w_in.to(DType::F32), b_in.to(DType::F32), w_out.to(DType::F32), b_out.to(DType::F32));
  EXPECT_LT(max_relative_difference(y32, y), 1e-5);
  EXPECT_THROW(gelu_mlp(x, w_in, b_in, random_input({7, 8}, 47), b_out), Error);
  EXPECT_THROW(gelu_mlp(x, w_in, random_input({7}, 48), w_out, b_out), Error);
}

}  // namespace
}  // namespace tstl
