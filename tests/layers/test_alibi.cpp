// ALiBi slopes against literal numbers (power-of-two, non-power-of-two and single-head counts)
// and the inference-time rescalings: interpolation, static and dynamic NTK-ALiBi.
#include <gtest/gtest.h>

#include <cmath>

#include "layers/alibi.h"

namespace tstl {
namespace {

void expect_slopes(const std::vector<double>& got, const std::vector<double>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-15) << "head " << i;
}

AlibiOptions options(AlibiScaling scaling, double factor, int64_t train_len = 0) {
  AlibiOptions o;
  o.scaling = scaling;
  o.factor = factor;
  o.train_len = train_len;
  return o;
}

const std::vector<double> kEightHeads = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625};

TEST(AlibiSlopes, PowerOfTwoHeads) {
  expect_slopes(alibi_slopes(8), kEightHeads);
  expect_slopes(alibi_slopes(2), {0.0625, 0.00390625});
}

TEST(AlibiSlopes, NonPowerOfTwoHeads) {
  std::vector<double> twelve = kEightHeads;
  for (double v : {0.70710678118654752, 0.35355339059327376, 0.17677669529663688, 0.08838834764831844})
    twelve.push_back(v);  // 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
  expect_slopes(alibi_slopes(12), twelve);
  expect_slopes(alibi_slopes(3), {0.0625, 0.00390625, 0.25});  // slopes(2), then slopes(4)[0]
}

TEST(AlibiSlopes, SingleHead) {
  expect_slopes(alibi_slopes(1), {0.00390625});  // 2^-8
  EXPECT_THROW(alibi_slopes(0), Error);
}

TEST(AlibiScaling, InterpolationDividesEverySlope) {
  std::vector<double> expected;
  for (double m : kEightHeads) expected.push_back(m / 4);
  expect_slopes(alibi_scaled_slopes(8, 100, options(AlibiScaling::Interp, 4)), expected);
}

TEST(AlibiScaling, StaticNtkFollowsFormula) {
  const double a = 3;
  std::vector<double> expected;
  for (int h = 1; h <= 8; ++h) expected.push_back(std::exp2(-8.0 * h / 8) * std::pow(a, -(h - 1) / 7.0));
  const std::vector<double> got = alibi_scaled_slopes(8, 100, options(AlibiScaling::NTK, a));
  expect_slopes(got, expected);
  EXPECT_DOUBLE_EQ(got.front(), 0.5);               // the steepest head keeps its slope
  EXPECT_DOUBLE_EQ(got.back(), 0.00390625 / a);     // the flattest is divided by a
}

TEST(AlibiScaling, StaticNtkRanksNonPowerOfTwoHeadsBySlope) {
  const double a = 2;
  const std::vector<double> base = alibi_slopes(12), got = alibi_scaled_slopes(12, 0, options(AlibiScaling::NTK, a));
  EXPECT_DOUBLE_EQ(got[8], base[8]);       // 2^-0.5, the steepest, unchanged
  EXPECT_DOUBLE_EQ(got[7], base[7] / a);   // 2^-8, the flattest, divided by a
  EXPECT_NEAR(got[0], base[0] * std::pow(a, -1.0 / 11), 1e-15);   // 2^-1 is the second steepest
  EXPECT_NEAR(got[9], base[9] * std::pow(a, -2.0 / 11), 1e-15);   // 2^-1.5 the third
  for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(got[i], base[i]);
  // H = 1: the single head is the steepest and keeps its slope.
  expect_slopes(alibi_scaled_slopes(1, 0, options(AlibiScaling::NTK, 4)), {0.00390625});
}

TEST(AlibiScaling, DynamicNtkUsesLengthRatio) {
  const AlibiOptions dynamic = options(AlibiScaling::DynamicNTK, 1, 512);
  // L <= L_train / a0: a = 1, slopes unchanged.
  expect_slopes(alibi_scaled_slopes(8, 512, dynamic), kEightHeads);
  expect_slopes(alibi_scaled_slopes(8, 100, dynamic), kEightHeads);
  // L = 4 L_train with a0 = 1: the static formula at a = 4.
  expect_slopes(alibi_scaled_slopes(8, 2048, dynamic), alibi_scaled_slopes(8, 0, options(AlibiScaling::NTK, 4)));
  // a0 = 1.5, L = 2 L_train: a = 3.
  expect_slopes(alibi_scaled_slopes(8, 1024, options(AlibiScaling::DynamicNTK, 1.5, 512)),
                alibi_scaled_slopes(8, 0, options(AlibiScaling::NTK, 3)));
  EXPECT_THROW(alibi_scaled_slopes(8, 1024, options(AlibiScaling::DynamicNTK, 1.5, 0)), Error);
}

TEST(AlibiScaling, TensorAndNames) {
  const Tensor t = alibi_slopes_tensor(12, 0, AlibiOptions{}, DType::F32, Device::CPU);
  EXPECT_EQ(t.shape(), (Shape{12}));
  EXPECT_EQ(t.dtype(), DType::F32);
  const auto v = t.to_vector<double>();
  const auto ref = alibi_slopes(12);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], ref[i], 1e-7);
  EXPECT_THROW(alibi_scaled_slopes(8, 0, options(AlibiScaling::Interp, 0.5)), Error);
}

}  // namespace
}  // namespace tstl
