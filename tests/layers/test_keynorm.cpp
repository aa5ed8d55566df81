// KeyNorm: finite differences, unit rows, the clamped branch, RoPE commuting with it, and the
// same bits at 1, 2, 3 and 7 threads.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "common/threads.h"
#include "layers/keynorm.h"
#include "layers/rope.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::max_relative_difference;
using testing::random_input;

TEST(KeyNorm, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return key_norm(in[0]); },
                         {random_input({2, 3, 7, 10}, 31)});
  expect_gradients_match([](const std::vector<Tensor>& in) { return key_norm(in[0]); },
                         {random_input({3, 5}, 32, 0.01)});
}

TEST(KeyNorm, RowsHaveUnitNormAndKeepDirection) {
  const Tensor k = random_input({2, 3, 7, 10}, 33, 3.0, false);
  const auto kv = k.to_vector<double>(), out = key_norm(k).to_vector<double>();
  for (size_t r = 0; r < kv.size() / 10; ++r) {
    double sq = 0;
    for (size_t j = 0; j < 10; ++j) sq += kv[r * 10 + j] * kv[r * 10 + j];
    const double norm = std::sqrt(sq);
    for (size_t j = 0; j < 10; ++j) EXPECT_NEAR(out[r * 10 + j], kv[r * 10 + j] / norm, 1e-15);
  }
  const Tensor k32 = k.to(DType::F32);
  EXPECT_LT(max_relative_difference(key_norm(k32), key_norm(k)), 1e-6);
}

TEST(KeyNorm, ClampedBranchDividesByEps) {
  // Row 0 is zero, row 1 has norm 5e-13 < eps: both give k / eps and dk = g / eps.
  Tensor k = Tensor::from_vector(std::vector<double>{0, 0, 0, 3e-13, 4e-13, 0}, {2, 3});
  k.set_requires_grad(true);
  const double eps = 1e-12;
  const auto out = key_norm(k, eps).to_vector<double>();
  EXPECT_EQ(out[0], 0.0);
  EXPECT_NEAR(out[3], 0.3, 1e-15);
  EXPECT_NEAR(out[4], 0.4, 1e-15);
  const Tensor g = Tensor::from_vector(std::vector<double>{1, -2, 3, 0.5, 1.5, -1}, {2, 3});
  key_norm(k, eps).backward(g);
  const auto dk = k.grad().to_vector<double>(), gv = g.to_vector<double>();
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(dk[i], gv[i] / eps, 1e-3) << i;  // values ~1e12
}

TEST(KeyNorm, SameBeforeOrAfterRope) {
  const Tensor k = random_input({2, 3, 7, 10}, 34, 1.0, false);
  for (RopeScaling scaling : {RopeScaling::None, RopeScaling::DynamicNTK}) {
    RopeOptions o;
    o.scaling = scaling;
    o.factor = 2;
    o.train_len = 8;
    const RopeTable table = rope_table(10, 6, 7, 13, o, DType::F64);
    EXPECT_LT(max_relative_difference(key_norm(rope(k, table)), rope(key_norm(k), table)), 1e-14);
  }
}

// Each row's norm and gradient dot product are summed by one thread in order.
TEST(KeyNorm, SameBitsForAnyThreadCount) {
  auto run = [] {
    Tensor k = random_input({2, 4, 300, 32}, 61, 1.0, false).to(DType::F32);  // 76800 > the threshold
    k.set_requires_grad(true);
    Tensor kn = key_norm(k);
    kn.backward(random_input({2, 4, 300, 32}, 62, 1.0, false).to(DType::F32));
    return std::vector<std::string>{test::tensor_bytes(kn), test::tensor_bytes(k.grad())};
  };
  const auto reference = test::with_threads(1, run);
  for (int threads : test::kThreadCounts) EXPECT_EQ(test::with_threads(threads, run), reference) << threads << " threads";
}

TEST(KeyNorm, RejectsBadArguments) {
  EXPECT_THROW(key_norm(random_input({3, 4}, 1), 0.0), Error);
  EXPECT_THROW(key_norm(Tensor::zeros({3, 4}, DType::I32)), Error);
}

}  // namespace
}  // namespace tstl
