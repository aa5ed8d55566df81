// Philox: known-answer values, reproducibility, independence from the thread count, statistics.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/ops.h"
#include "core/rng.h"

namespace tstl {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // Random123's published known-answer tests for philox4x32-10.
  Philox4 zero = philox4x32(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  Philox4 ones = philox4x32(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
  Philox4 pi = philox4x32(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

TEST(Generator, SameSeedSameValuesAndConsecutiveFillsDiffer) {
  Generator a{123, 0}, b{123, 0};
  Tensor x = randn({5, 7}, a), y = randn({5, 7}, b);
  EXPECT_EQ(x.to_vector<float>(), y.to_vector<float>());
  Tensor z = randn({5, 7}, a);
  EXPECT_NE(x.to_vector<float>(), z.to_vector<float>());
  EXPECT_EQ(a.offset, 70u);
}

TEST(Generator, ValuesDoNotDependOnThreadCount) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  Generator g1{9, 0};
  Tensor one = randn({300, 301}, g1);
  Tensor drop_one = dropout(Tensor::full({1000}, 1.0), 0.5, 9, 17);
  omp_set_num_threads(2);
  Generator g2{9, 0};
  Tensor two = randn({300, 301}, g2);
  Tensor drop_two = dropout(Tensor::full({1000}, 1.0), 0.5, 9, 17);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.to_vector<float>(), two.to_vector<float>());
  EXPECT_EQ(drop_one.to_vector<float>(), drop_two.to_vector<float>());
}

TEST(Generator, NormalAndUniformStatistics) {
  Generator g{2024, 0};
  const auto v = randn({200000}, g, DType::F64).to_vector<double>();
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= v.size();
  for (double x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.01);  // standard error 0.0022
  EXPECT_NEAR(var, 1.0, 0.02);
  Tensor u = Tensor::empty({100000}, DType::F64);
  uniform_(u, g, -1.0, 3.0);
  double umin = 10, umax = -10, umean = 0;
  for (double x : u.to_vector<double>()) umin = std::min(umin, x), umax = std::max(umax, x), umean += x;
  EXPECT_GE(umin, -1.0);
  EXPECT_LE(umax, 3.0);
  EXPECT_NEAR(umean / 100000, 1.0, 0.02);
}

TEST(Dropout, DropsTheRequestedFractionAndRescales) {
  Tensor y = dropout(Tensor::full({100000}, 1.0, DType::F64), 0.25, 5, 0);
  int64_t zeros = 0;
  for (double v : y.to_vector<double>()) {
    if (v == 0) {
      ++zeros;
    } else {
      EXPECT_DOUBLE_EQ(v, 1.0 / 0.75);
    }
  }
  EXPECT_NEAR(zeros / 100000.0, 0.25, 0.01);
  EXPECT_THROW(dropout(y, 1.0, 5, 0), Error);
}

}  // namespace
}  // namespace tstl
