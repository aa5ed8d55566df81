// CoCA prologue: finite differences of the four ops, the fused score Q~ . K~ / sqrt(d) against the
// released score evaluated directly here, and the strict form's purely relative score.
#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "layers/coca.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::random_input;

constexpr int64_t B = 2, H = 3, N = 7, D = 10, HALF = D / 2;

RopeOptions scaled(RopeScaling scaling) {
  RopeOptions o;
  o.scaling = scaling;
  o.factor = 2;
  o.train_len = 8;
  return o;
}

TEST(Coca, GradientsMatchFiniteDifferences) {
  for (RopeScaling scaling : {RopeScaling::None, RopeScaling::DynamicNTK, RopeScaling::YaRN}) {
    SCOPED_TRACE(rope_scaling_name(scaling));
    const RopeTable table = rope_table(D, 4, N, 15, scaled(scaling), DType::F64);
    const auto check = [&](Tensor (*op)(const Tensor&, const RopeTable&), const char* name) {
      SCOPED_TRACE(name);
      expect_gradients_match([&](const std::vector<Tensor>& in) { return op(in[0], table); },
                             {random_input({B, H, N, D}, 41)});
    };
    check(coca_query, "coca_query");
    check(coca_key, "coca_key");
    check(coca_strict_query, "coca_strict_query");
    check(coca_strict_key, "coca_strict_key");
  }
}

// Per-(b, h) position-p rotation of a d-vector by the plain RoPE angles, written out here.
std::vector<double> rotate(const std::vector<double>& x, int64_t p) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < HALF; ++i) {
    const double angle = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(i) / D);
    y[i] = x[i] * std::cos(angle) - x[i + HALF] * std::sin(angle);
    y[i + HALF] = x[i + HALF] * std::cos(angle) + x[i] * std::sin(angle);
  }
  return y;
}

std::vector<double> row(const std::vector<double>& all, int64_t b, int64_t h, int64_t n) {
  const auto first = all.begin() + ((b * H + h) * N + n) * D;
  return std::vector<double>(first, first + D);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t j = 0; j < a.size(); ++j) s += a[j] * b[j];
  return s;
}

TEST(Coca, FusedScoresEqualTheReleasedScore) {
  const int64_t start = 3;
  const Tensor q = random_input({B, H, N, D}, 42, 1.0, false), t_raw = random_input({B, H, N, D}, 43, 1.0, false);
  const RopeTable table = rope_table(D, start, N, start + N, RopeOptions{}, DType::F64);
  const auto q_tilde = coca_query(q, table).to_vector<double>(), k_tilde = coca_key(t_raw, table).to_vector<double>();
  const auto qv = q.to_vector<double>(), tv = t_raw.to_vector<double>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t s = 0; s < N; ++s) {
        // K~ built directly: tbar = relu(mean of halves), duplicated, rotated to position start + s.
        const auto t = row(tv, b, h, s);
        std::vector<double> dup(D);
        for (int64_t i = 0; i < HALF; ++i) dup[i] = dup[i + HALF] = std::max(0.0, (t[i] + t[i + HALF]) / 2);
        const auto k_direct = rotate(dup, start + s);
        const auto k_fused = row(k_tilde, b, h, s);
        for (int64_t j = 0; j < D; ++j) EXPECT_NEAR(k_fused[j], k_direct[j], 1e-14);
        for (int64_t n = 0; n < N; ++n) {
          const auto qn = row(qv, b, h, n), rq = rotate(qn, start + n);
          double direct = 0;
          for (int64_t j = 0; j < D; ++j) direct += qn[j] * k_direct[j] * rq[j];
          direct /= std::sqrt(static_cast<double>(D));
          const double fused = dot(row(q_tilde, b, h, n), k_fused) / std::sqrt(static_cast<double>(D));
          EXPECT_NEAR(fused, direct, 1e-13) << "b " << b << " h " << h << " n " << n << " s " << s;
        }
      }
    }
  }
}

// q_s . k_s = sum_i (q[i]^2 + q[i+h]^2) tbar_i cos((p - p') theta_i): relative only.
TEST(Coca, StrictScoreIsRelative) {
  const Tensor q = random_input({1, 1, 1, D}, 44, 1.0, false), t_raw = random_input({1, 1, 1, D}, 45, 1.0, false);
  const auto qv = q.to_vector<double>(), tv = t_raw.to_vector<double>();
  const auto score = [&](Tensor (*op_q)(const Tensor&, const RopeTable&),
                         Tensor (*op_k)(const Tensor&, const RopeTable&), int64_t p, int64_t p_key) {
    const auto qs = op_q(q, rope_table(D, p, 1, p + 1, RopeOptions{}, DType::F64)).to_vector<double>();
    const auto ks = op_k(t_raw, rope_table(D, p_key, 1, p_key + 1, RopeOptions{}, DType::F64)).to_vector<double>();
    return dot(qs, ks);
  };
  for (int64_t p : {2, 9, 40}) {
    for (int64_t back : {0, 1, 2}) {
      double expected = 0;
      for (int64_t i = 0; i < HALF; ++i) {
        const double tbar = std::max(0.0, (tv[i] + tv[i + HALF]) / 2);
        expected += (qv[i] * qv[i] + qv[i + HALF] * qv[i + HALF]) * tbar *
                    std::cos(static_cast<double>(back) * std::pow(10000.0, -2.0 * static_cast<double>(i) / D));
      }
      EXPECT_NEAR(score(coca_strict_query, coca_strict_key, p, p - back), expected, 1e-12) << p << " " << back;
    }
  }
  // The released form keeps an absolute-position term: shifting both positions changes it.
  EXPECT_GT(std::fabs(score(coca_query, coca_key, 9, 7) - score(coca_query, coca_key, 40, 38)), 1e-6);
}

TEST(Coca, KeyMagnitudesAreNonNegativeAndShared) {
  const Tensor t_raw = random_input({B, H, N, D}, 46, 1.0, false);
  const RopeTable table = rope_table(D, 0, N, N, RopeOptions{}, DType::F64);
  const auto k = coca_key(t_raw, table).to_vector<double>();
  const auto tv = t_raw.to_vector<double>();
  for (int64_t r = 0; r < B * H * N; ++r) {
    for (int64_t i = 0; i < HALF; ++i) {
      const size_t a = static_cast<size_t>(r * D + i), b = a + HALF;
      const double tbar = std::max(0.0, (tv[a] + tv[b]) / 2);
      // K~ plane = R [tbar, tbar]: its length is sqrt(2) tbar.
      EXPECT_NEAR(std::hypot(k[a], k[b]), std::sqrt(2.0) * tbar, 1e-14);
    }
  }
}

TEST(Coca, Float32MatchesFloat64) {
  const Tensor q = random_input({B, H, N, D}, 47, 1.0, false);
  const RopeTable table = rope_table(D, 2, N, 9, RopeOptions{}, DType::F64);
  for (auto op : {coca_query, coca_key, coca_strict_query, coca_strict_key})
    EXPECT_LT(testing::max_relative_difference(op(q.to(DType::F32), table), op(q, table)), 1e-6);
}

}  // namespace
}  // namespace tstl
