// RoPE: tables under every scaling against the formulas evaluated here, float64 finite-difference
// checks of the op (every scaling, positions starting at an offset, odd sizes), relative-position
// dependence of dot products, norm preservation, log-n factors and the error messages.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "layers/rope.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::max_relative_difference;
using testing::random_input;

constexpr double kPi = 3.14159265358979323846;

// Expected (count, h) cos and sin from per-dim frequencies, a position scale and a magnitude.
void expect_table(const RopeTable& t, int64_t start, int64_t count, const std::vector<double>& theta,
                  double position_scale, double magnitude) {
  const int64_t h = static_cast<int64_t>(theta.size());
  ASSERT_EQ(t.cos.shape(), (Shape{count, h}));
  ASSERT_EQ(t.sin.shape(), (Shape{count, h}));
  EXPECT_EQ(t.start, start);
  const auto c = t.cos.to_vector<double>(), s = t.sin.to_vector<double>();
  for (int64_t r = 0; r < count; ++r) {
    for (int64_t i = 0; i < h; ++i) {
      const double angle = static_cast<double>(start + r) * position_scale * theta[static_cast<size_t>(i)];
      EXPECT_NEAR(c[static_cast<size_t>(r * h + i)], magnitude * std::cos(angle), 1e-13) << "row " << r << " dim " << i;
      EXPECT_NEAR(s[static_cast<size_t>(r * h + i)], magnitude * std::sin(angle), 1e-13) << "row " << r << " dim " << i;
    }
  }
}

RopeOptions options(RopeScaling scaling, double factor, int64_t train_len) {
  RopeOptions o;
  o.scaling = scaling;
  o.factor = factor;
  o.train_len = train_len;
  return o;
}

TEST(RopeTable, PlainMatchesFormula) {
  // d = 4: theta = (1, 10000^(-1/2)) = (1, 0.01).
  expect_table(rope_table(4, 3, 5, 8, RopeOptions{}, DType::F64), 3, 5, {1.0, 0.01}, 1.0, 1.0);
}

TEST(RopeTable, PositionInterpolationDividesPositions) {
  expect_table(rope_table(4, 2, 6, 8, options(RopeScaling::PI, 4, 16), DType::F64), 2, 6, {1.0, 0.01}, 0.25, 1.0);
}

TEST(RopeTable, StaticNtkRaisesBase) {
  // base' = 10000 * 4^(4/2) = 160000, theta_1 = 160000^(-1/2) = 1/400.
  expect_table(rope_table(4, 0, 7, 7, options(RopeScaling::NTK, 4, 16), DType::F64), 0, 7, {1.0, 1.0 / 400}, 1.0, 1.0);
  // d = 6: base' = 10000 * 2^(6/4); theta_i = base'^(-2i/6).
  const double base = 10000 * std::pow(2.0, 1.5);
  expect_table(rope_table(6, 1, 3, 4, options(RopeScaling::NTK, 2, 16), DType::F64), 1, 3,
               {1.0, std::pow(base, -1.0 / 3), std::pow(base, -2.0 / 3)}, 1.0, 1.0);
}

TEST(RopeTable, DynamicNtkDependsOnTotalLength) {
  // a = 2, L_train = 16, L = 32: base' = 10000 * (2*32/16 - 1)^(4/2) = 90000, theta_1 = 1/300.
  const RopeOptions o = options(RopeScaling::DynamicNTK, 2, 16);
  expect_table(rope_table(4, 28, 4, 32, o, DType::F64), 28, 4, {1.0, 1.0 / 300}, 1.0, 1.0);
  // L = 24: base' = 10000 * (2*24/16 - 1)^2 = 40000, theta_1 = 1/200: a table is per length.
  expect_table(rope_table(4, 20, 4, 24, o, DType::F64), 20, 4, {1.0, 1.0 / 200}, 1.0, 1.0);
  // L <= L_train: the plain table, exactly.
  for (int64_t total : {5, 16}) {
    const RopeTable dyn = rope_table(6, 0, 5, total, o, DType::F64);
    const RopeTable plain = rope_table(6, 0, 5, total, RopeOptions{}, DType::F64);
    EXPECT_EQ(dyn.cos.to_vector<double>(), plain.cos.to_vector<double>());
    EXPECT_EQ(dyn.sin.to_vector<double>(), plain.sin.to_vector<double>());
  }
}

TEST(RopeTable, YarnRampsFrequenciesAndScalesMagnitude) {
  // d = 6, base 10000: theta = (1, 10000^(-1/3), 10000^(-2/3)); L_train = 256, a = 4.
  // Turns L_train theta / 2pi = (40.7, 1.89, 0.0876): kept, ramped, divided by a.
  const double a = 4, train = 256;
  std::vector<double> theta = {1.0, std::pow(10000.0, -1.0 / 3), std::pow(10000.0, -2.0 / 3)};
  const double turns1 = train * theta[1] / (2 * kPi);
  const double gamma1 = (turns1 - 1) / 31;
  ASSERT_GT(gamma1, 0.0);
  ASSERT_LT(gamma1, 1.0);
  const std::vector<double> expected = {theta[0], (1 - gamma1) * theta[1] / a + gamma1 * theta[1], theta[2] / a};
  expect_table(rope_table(6, 5, 9, 14, options(RopeScaling::YaRN, a, 256), DType::F64), 5, 9, expected, 1.0,
               0.1 * std::log(a) + 1);
}

TEST(RopeTable, ConvertsToRequestedDtype) {
  const RopeTable t = rope_table(10, 4, 7, 11, RopeOptions{});
  EXPECT_EQ(t.cos.dtype(), DType::F32);
  const RopeTable t64 = rope_table(10, 4, 7, 11, RopeOptions{}, DType::F64);
  EXPECT_LT(max_relative_difference(t.cos, t64.cos), 1e-7);
}

TEST(RopeTable, RejectsBadArguments) {
  EXPECT_THROW(rope_table(5, 0, 3, 3, RopeOptions{}), Error);                                  // odd d
  EXPECT_THROW(rope_table(4, 2, 3, 4, RopeOptions{}), Error);                                  // total < start+count
  EXPECT_THROW(rope_table(4, 0, 3, 3, options(RopeScaling::PI, 0.5, 8)), Error);               // factor < 1
  EXPECT_THROW(rope_table(4, 0, 3, 3, options(RopeScaling::YaRN, 2, 0)), Error);               // no train_len
  EXPECT_THROW(rope_table(2, 0, 3, 3, options(RopeScaling::NTK, 2, 8)), Error);                // d/(d-2)
}

// Finite differences of rope under every scaling, at B=2, H=3, N=7, d=10, positions from 5.
TEST(Rope, GradientsMatchFiniteDifferencesForEveryScaling) {
  for (RopeScaling scaling : {RopeScaling::None, RopeScaling::PI, RopeScaling::NTK, RopeScaling::DynamicNTK,
                              RopeScaling::YaRN}) {
    SCOPED_TRACE(rope_scaling_name(scaling));
    const RopeTable table = rope_table(10, 5, 7, 12, options(scaling, 3, 8), DType::F64);
    expect_gradients_match([table](const std::vector<Tensor>& in) { return rope(in[0], table); },
                           {random_input({2, 3, 7, 10}, 11)});
  }
}

TEST(Rope, MatchesPlaneFormulaAndFloat32) {
  const Tensor x = random_input({2, 3, 7, 10}, 3, 1.0, false);
  const RopeTable table = rope_table(10, 4, 7, 11, options(RopeScaling::YaRN, 2, 8), DType::F64);
  const auto y = rope(x, table).to_vector<double>();
  const auto xv = x.to_vector<double>(), c = table.cos.to_vector<double>(), s = table.sin.to_vector<double>();
  for (int64_t row = 0; row < 2 * 3 * 7; ++row) {
    const int64_t n = row % 7;
    for (int64_t i = 0; i < 5; ++i) {
      const size_t a = static_cast<size_t>(row * 10 + i), b = a + 5, t = static_cast<size_t>(n * 5 + i);
      EXPECT_NEAR(y[a], xv[a] * c[t] - xv[b] * s[t], 1e-14);
      EXPECT_NEAR(y[b], xv[b] * c[t] + xv[a] * s[t], 1e-14);
    }
  }
  // The f32 path (an f32 table converted from f64, and an f64 table converted to f32) agrees.
  const Tensor y32 = rope(x.to(DType::F32), rope_table(10, 4, 7, 11, options(RopeScaling::YaRN, 2, 8)));
  EXPECT_LT(max_relative_difference(y32, rope(x, table)), 1e-6);
  EXPECT_LT(max_relative_difference(rope(x.to(DType::F32), table), rope(x, table)), 1e-6);
}

TEST(Rope, PlainRotationPreservesNormsAndYarnScalesThem) {
  const Tensor x = random_input({1, 2, 9, 8}, 5, 1.0, false);
  const auto norms = [](const Tensor& t) {
    const auto v = t.to_vector<double>();
    std::vector<double> out;
    for (size_t r = 0; r < v.size() / 8; ++r) {
      double sq = 0;
      for (size_t j = 0; j < 8; ++j) sq += v[r * 8 + j] * v[r * 8 + j];
      out.push_back(std::sqrt(sq));
    }
    return out;
  };
  const auto before = norms(x);
  const auto plain = norms(rope(x, rope_table(8, 100, 9, 109, RopeOptions{}, DType::F64)));
  const auto yarn = norms(rope(x, rope_table(8, 100, 9, 109, options(RopeScaling::YaRN, 8, 32), DType::F64)));
  for (size_t r = 0; r < before.size(); ++r) {
    EXPECT_NEAR(plain[r], before[r], 1e-12);
    EXPECT_NEAR(yarn[r], before[r] * (0.1 * std::log(8.0) + 1), 1e-12);
  }
}

// (R_p q) . (R_p' k) depends only on p - p'.
TEST(Rope, DotProductsDependOnlyOnRelativePosition) {
  const int64_t d = 10;
  const Tensor q = random_input({1, 1, 1, d}, 21, 1.0, false), k = random_input({1, 1, 1, d}, 22, 1.0, false);
  const auto rotated = [&](const Tensor& x, int64_t p) {
    return rope(x, rope_table(d, p, 1, p + 1, RopeOptions{}, DType::F64)).to_vector<double>();
  };
  const auto dot = [](const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t j = 0; j < a.size(); ++j) s += a[j] * b[j];
    return s;
  };
  for (int64_t offset : {-3, 0, 4}) {
    const double reference = dot(rotated(q, 7), rotated(k, 7 - offset));
    for (int64_t shift : {1, 13, 250}) {
      EXPECT_NEAR(dot(rotated(q, 7 + shift), rotated(k, 7 - offset + shift)), reference, 1e-11)
          << "offset " << offset << " shift " << shift;
    }
  }
}

TEST(Rope, RejectsMismatchedTable) {
  const Tensor x = random_input({2, 3, 7, 10}, 1, 1.0, false);
  EXPECT_THROW(rope(x, rope_table(10, 0, 6, 6, RopeOptions{}, DType::F64)), Error);    // 6 rows for N = 7
  EXPECT_THROW(rope(x, rope_table(8, 0, 7, 7, RopeOptions{}, DType::F64)), Error);     // d = 8 table
  EXPECT_THROW(rope(random_input({3, 7, 10}, 1), rope_table(10, 0, 7, 7, RopeOptions{})), Error);  // 3-D
}

TEST(LogN, FactorsFollowTheFormula) {
  const auto train = logn_factors(0, 6, 4, false, DType::F64, Device::CPU).to_vector<double>();
  const auto infer = logn_factors(2, 6, 4, true, DType::F64, Device::CPU).to_vector<double>();
  for (int64_t r = 0; r < 6; ++r) {
    EXPECT_NEAR(train[static_cast<size_t>(r)], std::log(r + 1.0) / std::log(4.0), 1e-15);
    EXPECT_NEAR(infer[static_cast<size_t>(r)], std::max(1.0, std::log(r + 3.0) / std::log(4.0)), 1e-15);
  }
  EXPECT_EQ(train[0], 0.0);
  EXPECT_EQ(infer[0], 1.0);  // position 2: log 3 / log 4 < 1, clamped
  EXPECT_GT(infer[5], 1.0);  // position 7: log 8 / log 4 = 1.5
  EXPECT_NEAR(infer[5], 1.5, 1e-15);
  EXPECT_THROW(logn_factors(0, 3, 1, false, DType::F32, Device::CPU), Error);
}

}  // namespace
}  // namespace tstl
