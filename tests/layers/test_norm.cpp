// LayerNorm and RMSNorm: forward against a naive double reference written here, every gradient
// against float64 finite differences, the f32 path against the f64 one, the op structure, and
// the same bits at 1, 2, 3 and 7 threads.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "common/threads.h"
#include "layers/norm.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::max_relative_difference;
using testing::random_input;

// y[r, c] = (x[r, c] - mean_r) / sqrt(var_r + eps) * gain[c] + bias[c], straight from the definition.
Tensor naive_norm(const Tensor& x, const Tensor& gain, const Tensor& bias, double eps, bool centered) {
  const auto vx = x.to_vector<double>(), vg = gain.to_vector<double>();
  const auto vb = bias.defined() ? bias.to_vector<double>() : std::vector<double>(vg.size(), 0.0);
  const size_t cols = vg.size(), rows = vx.size() / cols;
  std::vector<double> y(vx.size());
  for (size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    if (centered) {
      for (size_t c = 0; c < cols; ++c) mean += vx[r * cols + c];
      mean /= static_cast<double>(cols);
    }
    for (size_t c = 0; c < cols; ++c) var += (vx[r * cols + c] - mean) * (vx[r * cols + c] - mean);
    var /= static_cast<double>(cols);
    for (size_t c = 0; c < cols; ++c)
      y[r * cols + c] = (vx[r * cols + c] - mean) / std::sqrt(var + eps) * vg[c] + vb[c];
  }
  return Tensor::from_vector(y, x.shape());
}

TEST(LayerNorm, ForwardMatchesNaiveReference) {
  const Tensor x = random_input({3, 5, 7}, 1, 2.0), gain = random_input({7}, 2), bias = random_input({7}, 3);
  EXPECT_LT(max_relative_difference(layer_norm(x, gain, bias, 1e-5), naive_norm(x, gain, bias, 1e-5, true)), 1e-13);
  EXPECT_LT(max_relative_difference(layer_norm(x, gain, Tensor(), 0.1), naive_norm(x, gain, Tensor(), 0.1, true)),
            1e-13);
}

TEST(LayerNorm, HandComputedRow) {
  // x = (1, 2, 3, 6): mean 3, var (4 + 1 + 0 + 9) / 4 = 3.5; eps 0.5 makes the denominator 2.
  const Tensor x = Tensor::from_vector<double>({1, 2, 3, 6}, {1, 4});
  const Tensor gain = Tensor::from_vector<double>({1, 2, 1, -1}, {4});
  const Tensor bias = Tensor::from_vector<double>({0, 0, 10, 0}, {4});
  const auto y = layer_norm(x, gain, bias, 0.5).to_vector<double>();
  const std::vector<double> expected{-1.0, -1.0, 10.0, -1.5};
  for (size_t i = 0; i < y.size(); ++i) EXPECT_DOUBLE_EQ(y[i], expected[i]) << i;
}

TEST(LayerNorm, LargeOffsetKeepsPrecisionInF32) {
  // f32 rows sitting on a common offset of 1e4, with unit spread: the statistics must keep the spread.
  const Tensor noise = random_input({5, 7}, 4, 1.0, false);
  const Tensor x64 = add(noise, Tensor::full({7}, 1e4, DType::F64));
  const Tensor gain = random_input({7}, 5, 1.0, false), bias = random_input({7}, 6, 1.0, false);
  const Tensor y32 = layer_norm(x64.to(DType::F32), gain.to(DType::F32), bias.to(DType::F32), 1e-5);
  EXPECT_EQ(y32.dtype(), DType::F32);
  // f32 storage of x itself rounds 1e4 + noise to ~1e-3, so compare with the f64 result of the rounded input.
  const Tensor rounded = x64.to(DType::F32).to(DType::F64);
  EXPECT_LT(max_relative_difference(y32, naive_norm(rounded, gain, bias, 1e-5, true)), 1e-5);
}

TEST(LayerNorm, F32MatchesF64) {
  const Tensor x = random_input({3, 5, 7}, 7, 1.0, false), gain = random_input({7}, 8, 1.0, false),
               bias = random_input({7}, 9, 1.0, false);
  const Tensor y32 = layer_norm(x.to(DType::F32), gain.to(DType::F32), bias.to(DType::F32), 1e-5);
  EXPECT_LT(max_relative_difference(y32, layer_norm(x, gain, bias, 1e-5)), 1e-6);

  // Backward in f32 against f64 for every gradient.
  std::vector<Tensor> grads[2];
  for (int wide = 0; wide < 2; ++wide) {
    const DType t = wide ? DType::F64 : DType::F32;
    Tensor xs = x.to(t), gs = gain.to(t), bs = bias.to(t);
    for (Tensor* p : {&xs, &gs, &bs}) p->set_requires_grad(true);
    sum(mul(layer_norm(xs, gs, bs, 1e-5), random_input({3, 5, 7}, 10, 1.0, false).to(t))).backward();
    grads[wide] = {xs.grad(), gs.grad(), bs.grad()};
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_LT(max_relative_difference(grads[0][i], grads[1][i]), 1e-5) << i;
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                         {random_input({3, 5, 7}, 11, 1.5), random_input({7}, 12), random_input({7}, 13)});
}

TEST(LayerNorm, GradientsWithoutBiasMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor(), 1e-3); },
                         {random_input({3, 5, 7}, 14), random_input({7}, 15)});
}

TEST(LayerNorm, GradientOfFrozenParametersAndWideRows) {
  // Only x needs grad; 130 columns span three column blocks of the parameter reduction.
  const Tensor gain = random_input({130}, 17, 1.0, false), bias = random_input({130}, 18, 1.0, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return layer_norm(in[0], gain, bias, 1e-5); },
                         {random_input({3, 130}, 16)});
  // Only the parameters need grad.
  const Tensor x = random_input({5, 130}, 19, 1.0, false);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return layer_norm(x, in[0], in[1], 1e-5); },
                         {random_input({130}, 20), random_input({130}, 21)});
}

TEST(LayerNorm, IsOneNodeSavingRowStatistics) {
  const Tensor x = random_input({3, 5, 7}, 22), gain = random_input({7}, 23), bias = random_input({7}, 24);
  const Tensor y = layer_norm(x, gain, bias, 1e-5);
  ASSERT_TRUE(y.grad_fn());
  EXPECT_STREQ(y.grad_fn()->name, "layer_norm");
  ASSERT_EQ(y.grad_fn()->edges.size(), 3u);
  for (const Edge& e : y.grad_fn()->edges) EXPECT_TRUE(e.leaf && !e.node);  // straight to the leaves
  NoGradGuard no_grad;
  EXPECT_FALSE(layer_norm(x, gain, bias, 1e-5).grad_fn());
}

TEST(LayerNorm, RejectsMismatchedShapes) {
  const Tensor x = random_input({3, 7}, 25);
  EXPECT_THROW(layer_norm(x, random_input({6}, 26), Tensor(), 1e-5), Error);
  EXPECT_THROW(layer_norm(x, random_input({7}, 26), random_input({5}, 27), 1e-5), Error);
  EXPECT_THROW(layer_norm(x, random_input({7}, 26).to(DType::F32), Tensor(), 1e-5), Error);
  EXPECT_THROW(rms_norm(x, random_input({7, 1}, 26), 1e-5), Error);
}

// Row statistics (one row per task) and the gain/bias gradients (column blocks, each summing
// its rows in order) above the threading threshold: the same bytes for any thread count.
TEST(LayerNorm, SameBitsForAnyThreadCount) {
  for (const bool centered : {true, false}) {
    for (DType dtype : {DType::F32, DType::F64}) {
      auto run = [&] {
        auto leaf = [&](const Shape& shape, uint64_t seed) {
          Tensor t = random_input(shape, seed, 1.0, false).to(dtype);
          t.set_requires_grad(true);
          return t;
        };
        Tensor x = leaf({7, 101, 150}, 51), gain = leaf({150}, 52), bias = centered ? leaf({150}, 53) : Tensor();
        Tensor y = centered ? layer_norm(x, gain, bias, 1e-5) : rms_norm(x, gain, 1e-5);
        y.backward(random_input({7, 101, 150}, 54, 1.0, false).to(dtype));
        std::vector<std::string> out{test::tensor_bytes(y), test::tensor_bytes(x.grad()), test::tensor_bytes(gain.grad())};
        if (centered) out.push_back(test::tensor_bytes(bias.grad()));
        return out;
      };
      const auto reference = test::with_threads(1, run);
      for (int threads : test::kThreadCounts)
        EXPECT_EQ(test::with_threads(threads, run), reference)
            << (centered ? "layer_norm " : "rms_norm ") << dtype_name(dtype) << ", " << threads << " threads";
    }
  }
}

TEST(RmsNorm, ForwardMatchesNaiveReference) {
  const Tensor x = random_input({3, 5, 7}, 31, 2.0), gain = random_input({7}, 32);
  EXPECT_LT(max_relative_difference(rms_norm(x, gain, 1e-6), naive_norm(x, gain, Tensor(), 1e-6, false)), 1e-13);
}

TEST(RmsNorm, HandComputedRow) {
  // x = (3, -4, 0, 0, 5) (no centring): mean x^2 = 50 / 5 = 10, eps 6 makes the denominator 4.
  const Tensor x = Tensor::from_vector<double>({3, -4, 0, 0, 5}, {1, 5});
  const Tensor gain = Tensor::from_vector<double>({2, 1, 1, 1, -1}, {5});
  const auto y = rms_norm(x, gain, 6.0).to_vector<double>();
  const std::vector<double> expected{1.5, -1.0, 0.0, 0.0, -1.25};
  for (size_t i = 0; i < y.size(); ++i) EXPECT_DOUBLE_EQ(y[i], expected[i]) << i;
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); },
                         {random_input({3, 5, 7}, 33), random_input({7}, 34)});
  expect_gradients_match([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-2); },
                         {random_input({2, 67}, 35, 0.3), random_input({67}, 36)});
}

TEST(RmsNorm, F32MatchesF64) {
  const Tensor x = random_input({3, 5, 7}, 37, 1.0, false), gain = random_input({7}, 38, 1.0, false);
  EXPECT_LT(max_relative_difference(rms_norm(x.to(DType::F32), gain.to(DType::F32), 1e-6), rms_norm(x, gain, 1e-6)),
            1e-6);
}

}  // namespace
}  // namespace tstl
