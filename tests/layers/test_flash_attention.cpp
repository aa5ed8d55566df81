// Flash attention (layers/flash_attention.h) checked three ways: against an independent naive
// O(N^2) reference with a hand-derived backward (f32, 1e-5 relative, every configuration the
// variants use), against float64 finite differences, and on a long sequence (N = M = 4096)
// against rows computed naively. Also the naive attention_scores / attention_probabilities.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "common/gradcheck.h"
#include "common/threads.h"
#include "layers/flash_naive_reference.h"
#include "layers/attention_reference.h"
#include "layers/flash_attention.h"

namespace tstl {
namespace {

using testing::alibi_slopes_by_rule;
using testing::expect_gradients_match;
using testing::naive_attention;
using testing::NaiveSizes;
using testing::random_input;

struct FlashCase {
  const char* name;
  int64_t batch, heads, n_queries, n_keys, head_dim;
  double scale;
  bool alibi, logn;
  int64_t query_offset;  // -1: M - N
  FlashTiles tiles;
  double input_std = 1.0;
};

int64_t resolved_offset(const FlashCase& c) { return c.query_offset == -1 ? c.n_keys - c.n_queries : c.query_offset; }

// Log-n factors as pretraining uses them, log(p + 1) / log(L_train) with L_train = 16 (0 at p = 0).
std::vector<double> logn_factors(const FlashCase& c) {
  std::vector<double> f;
  for (int64_t n = 0; n < c.n_queries; ++n)
    f.push_back(std::log(static_cast<double>(resolved_offset(c) + n + 1)) / std::log(16.0));
  return f;
}

AttentionOptions options_for(const FlashCase& c, DType dtype) {
  AttentionOptions opt;
  opt.scale = c.scale;
  opt.query_offset = c.query_offset;
  if (c.alibi) opt.alibi_slopes = Tensor::from_vector(alibi_slopes_by_rule(c.heads), {c.heads}).to(dtype);
  if (c.logn) opt.logn = Tensor::from_vector(logn_factors(c), {c.n_queries}).to(dtype);
  return opt;
}

const double kInvSqrt16 = 0.25, kInvSqrt8 = 1.0 / std::sqrt(8.0);

// The configurations the variants use, at sizes that are not multiples of the tiles.
std::vector<FlashCase> f32_cases() {
  return {
      {"rope_scaled", 2, 3, 77, 77, 16, kInvSqrt16, false, false, -1, {32, 32}},
      {"keynorm_scale_one", 2, 2, 77, 77, 8, 1.0, false, false, -1, {64, 64}, 0.5},
      {"alibi_12_heads", 2, 12, 77, 77, 8, kInvSqrt8, true, false, -1, {32, 64}},
      {"logn", 2, 2, 77, 77, 16, kInvSqrt16, false, true, -1, {64, 32}},
      {"kv_cache_offset", 2, 3, 19, 77, 16, kInvSqrt16, false, false, -1, {16, 32}},
      {"explicit_offset_keys_unseen", 2, 3, 19, 77, 16, kInvSqrt16, false, false, 30, {8, 16}},
      {"decode_one_query", 2, 3, 1, 77, 16, kInvSqrt16, true, true, -1, {64, 32}},
      {"alibi_logn_offset", 2, 12, 23, 70, 8, kInvSqrt8, true, true, -1, {32, 32}},
      {"odd_tiles", 2, 3, 77, 77, 16, kInvSqrt16, true, false, -1, {7, 5}},
      {"default_tiles", 2, 3, 77, 77, 16, kInvSqrt16, false, false, -1, FlashTiles{}},
  };
}

double rel_diff(const std::vector<double>& a, const std::vector<double>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < ref.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return diff / std::max(scale, 1e-30);
}

Tensor leaf_f32(const Shape& shape, uint64_t seed, double std) {
  Tensor t = random_input(shape, seed, std, false).to(DType::F32);
  t.set_requires_grad(true);
  return t;
}

class FlashMatchesNaive : public ::testing::TestWithParam<FlashCase> {};

TEST_P(FlashMatchesNaive, ForwardAndGradientsF32) {
  const FlashCase c = GetParam();
  const Shape q_shape{c.batch, c.heads, c.n_queries, c.head_dim}, kv_shape{c.batch, c.heads, c.n_keys, c.head_dim};
  Tensor q = leaf_f32(q_shape, 11, c.input_std), k = leaf_f32(kv_shape, 12, c.input_std), v = leaf_f32(kv_shape, 13, 1.0);
  const Tensor d_o = random_input(q_shape, 14, 1.0, false).to(DType::F32);
  const AttentionOptions opt = options_for(c, DType::F32);

  Tensor o = flash_attention(q, k, v, opt, c.tiles);
  o.backward(d_o);

  const NaiveSizes sizes{c.batch, c.heads, c.n_queries, c.n_keys, c.head_dim, resolved_offset(c)};
  const auto ref = naive_attention(sizes, q.to_vector<double>(), k.to_vector<double>(), v.to_vector<double>(),
                                   d_o.to_vector<double>(), c.scale,
                                   c.alibi ? opt.alibi_slopes.to_vector<double>() : std::vector<double>{},
                                   c.logn ? opt.logn.to_vector<double>() : std::vector<double>{});
  EXPECT_LT(rel_diff(o.to_vector<double>(), ref.o), 1e-5) << "O";
  EXPECT_LT(rel_diff(q.grad().to_vector<double>(), ref.dq), 1e-5) << "dQ";
  EXPECT_LT(rel_diff(k.grad().to_vector<double>(), ref.dk), 1e-5) << "dK";
  EXPECT_LT(rel_diff(v.grad().to_vector<double>(), ref.dv), 1e-5) << "dV";
  if (c.query_offset >= 0 && c.query_offset + c.n_queries < c.n_keys) {
    // Keys past the last query position are never attended: exactly zero gradient.
    const auto dk = k.grad().to_vector<double>();
    for (int64_t j = c.query_offset + c.n_queries; j < c.n_keys; ++j)
      EXPECT_EQ(dk[static_cast<size_t>(j * c.head_dim)], 0.0) << "key " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Configurations, FlashMatchesNaive, ::testing::ValuesIn(f32_cases()),
                         [](const ::testing::TestParamInfo<FlashCase>& info) { return std::string(info.param.name); });

// The same configurations at small odd sizes, in float64 against finite differences.
std::vector<FlashCase> gradcheck_cases() {
  return {
      {"rope_scaled", 2, 3, 7, 7, 3, 1.0 / std::sqrt(3.0), false, false, -1, {3, 2}},
      {"keynorm_scale_one", 1, 2, 7, 7, 5, 1.0, false, false, -1, {4, 4}, 0.5},
      {"alibi_3_heads", 2, 3, 7, 7, 3, 1.0 / std::sqrt(3.0), true, false, -1, {2, 3}},
      {"logn", 1, 2, 7, 7, 3, 1.0 / std::sqrt(3.0), false, true, -1, {3, 3}},
      {"kv_cache_offset", 2, 2, 3, 7, 3, 1.0 / std::sqrt(3.0), true, true, -1, {2, 3}},
      {"explicit_offset", 1, 2, 3, 7, 3, 1.0 / std::sqrt(3.0), false, false, 2, {2, 2}},
      {"decode_one_query", 2, 3, 1, 5, 3, 1.0 / std::sqrt(3.0), true, true, -1, {1, 2}},
      // Key tiles wider than query tiles: the backward's blocks on the diagonal stop at the last
      // key their rows see (block_keys_seen).
      {"wide_key_tiles", 1, 2, 7, 7, 3, 1.0 / std::sqrt(3.0), true, false, -1, {2, 5}},
  };
}

class FlashGradcheck : public ::testing::TestWithParam<FlashCase> {};

TEST_P(FlashGradcheck, FiniteDifferencesF64) {
  const FlashCase c = GetParam();
  const Shape q_shape{c.batch, c.heads, c.n_queries, c.head_dim}, kv_shape{c.batch, c.heads, c.n_keys, c.head_dim};
  const AttentionOptions opt = options_for(c, DType::F64);
  const FlashTiles tiles = c.tiles;
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return flash_attention(in[0], in[1], in[2], opt, tiles); },
      {random_input(q_shape, 21, c.input_std), random_input(kv_shape, 22, c.input_std), random_input(kv_shape, 23)});
}

INSTANTIATE_TEST_SUITE_P(Configurations, FlashGradcheck, ::testing::ValuesIn(gradcheck_cases()),
                         [](const ::testing::TestParamInfo<FlashCase>& info) { return std::string(info.param.name); });

TEST(FlashAttention, AlibiSlopesRuleMatchesTheDocumentedExample) {
  const auto slopes = alibi_slopes_by_rule(12);
  ASSERT_EQ(slopes.size(), 12u);
  for (int h = 0; h < 8; ++h) EXPECT_DOUBLE_EQ(slopes[static_cast<size_t>(h)], std::pow(2.0, -(h + 1)));
  EXPECT_DOUBLE_EQ(slopes[8], std::pow(2.0, -0.5));
  EXPECT_DOUBLE_EQ(slopes[9], std::pow(2.0, -1.5));
  EXPECT_DOUBLE_EQ(slopes[10], std::pow(2.0, -2.5));
  EXPECT_DOUBLE_EQ(slopes[11], std::pow(2.0, -3.5));
}

// The forward keeps only tile-sized scratch (see layers/flash_attention_cpu.cpp): per thread
// (Bq, Bk) + (Bq, d) + a few (Bq) floats, ~40 KiB at 64 x 128 tiles, where the N x M scores of
// this case alone would be 64 MiB in f32. Rows sampled at tile edges.
TEST(FlashAttention, LongSequenceMatchesNaiveRows) {
  const int64_t n = 4096, d = 16;
  const Tensor q = random_input({1, 1, n, d}, 31, 1.0, false).to(DType::F32);
  const Tensor k = random_input({1, 1, n, d}, 32, 1.0, false).to(DType::F32);
  const Tensor v = random_input({1, 1, n, d}, 33, 1.0, false).to(DType::F32);
  AttentionOptions opt;
  opt.scale = 0.25;
  opt.alibi_slopes = Tensor::from_vector(std::vector<double>{1.0 / 256}, {1}).to(DType::F32);
  const auto start = std::chrono::steady_clock::now();
  const Tensor o = flash_attention(q, k, v, opt);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("flash forward N = M = %lld, d = %lld: %.3f s\n", static_cast<long long>(n), static_cast<long long>(d),
              seconds);
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>(), ov = o.to_vector<double>();
  for (int64_t row : {0, 1, 63, 64, 1000, 2047, 4032, 4095}) {
    std::vector<double> s(static_cast<size_t>(row + 1));
    double row_max = -INFINITY;
    for (int64_t j = 0; j <= row; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) dot += qv[static_cast<size_t>(row * d + c)] * kv[static_cast<size_t>(j * d + c)];
      s[static_cast<size_t>(j)] = 0.25 * dot - static_cast<double>(row - j) / 256;
      row_max = std::max(row_max, s[static_cast<size_t>(j)]);
    }
    double sum = 0;
    for (double& x : s) sum += x = std::exp(x - row_max);
    std::vector<double> expected(static_cast<size_t>(d), 0.0), actual(static_cast<size_t>(d));
    for (int64_t c = 0; c < d; ++c) {
      for (int64_t j = 0; j <= row; ++j)
        expected[static_cast<size_t>(c)] += s[static_cast<size_t>(j)] / sum * vv[static_cast<size_t>(j * d + c)];
      actual[static_cast<size_t>(c)] = ov[static_cast<size_t>(row * d + c)];
    }
    EXPECT_LT(rel_diff(actual, expected), 1e-5) << "row " << row;
  }
}

// Each OpenMP task owns its outputs and sums in a fixed order (row sums, D, and dK/dV over the
// query tiles): any thread count gives the same bits. Both backward schedules (whole heads at
// B H >= 8, key then query tiles below), f32 and f64, all above the threading threshold, at 1,
// 2, 3 and 7 threads.
TEST(FlashAttention, BitwiseDeterministicAcrossThreadCounts) {
  for (const FlashCase& c : {FlashCase{"split_heads", 2, 3, 45, 61, 8, kInvSqrt8, true, true, -1, {16, 16}},
                             FlashCase{"whole_heads", 2, 4, 45, 45, 8, kInvSqrt8, false, true, -1, {16, 8}}}) {
    for (DType dtype : {DType::F32, DType::F64}) {
      ASSERT_GE(c.batch * c.heads * c.n_queries * c.n_keys * c.head_dim, int64_t{1} << 16) << "threaded path";
      auto run = [&] {
        auto leaf = [&](const Shape& shape, uint64_t seed) {
          Tensor t = random_input(shape, seed, 1.0, false).to(dtype);
          t.set_requires_grad(true);
          return t;
        };
        Tensor q = leaf({c.batch, c.heads, c.n_queries, c.head_dim}, 41);
        Tensor k = leaf({c.batch, c.heads, c.n_keys, c.head_dim}, 42);
        Tensor v = leaf({c.batch, c.heads, c.n_keys, c.head_dim}, 43);
        Tensor o = flash_attention(q, k, v, options_for(c, dtype), c.tiles);
        o.backward(random_input({c.batch, c.heads, c.n_queries, c.head_dim}, 44, 1.0, false).to(dtype));
        return std::vector<std::string>{test::tensor_bytes(o), test::tensor_bytes(q.grad()),
                                        test::tensor_bytes(k.grad()), test::tensor_bytes(v.grad())};
      };
      const char* names[] = {"O", "dQ", "dK", "dV"};
      const auto reference = test::with_threads(1, run);
      for (int threads : test::kThreadCounts) {
        const auto got = test::with_threads(threads, run);
        for (size_t i = 0; i < got.size(); ++i)
          EXPECT_EQ(got[i], reference[i]) << c.name << " " << dtype_name(dtype) << ", " << threads << " threads, "
                                          << names[i];
      }
    }
  }
}

// The backward runs whole heads per task when B H >= 8 and (key tile, then query tile) tasks
// below; both sum in the same order, so a head's gradients are the same bits either way: B = 2,
// H = 4 (whole heads) against each batch element alone (B H = 4, split).
TEST(FlashAttention, BackwardSchedulesGiveTheSameBits) {
  const FlashCase c{"sched", 2, 4, 37, 53, 8, kInvSqrt8, true, true, -1, {16, 8}};
  const AttentionOptions opt = options_for(c, DType::F32);
  auto grads = [&](const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& d_o) {
    Tensor q = q0.detach(), k = k0.detach(), v = v0.detach();
    q.set_requires_grad(true), k.set_requires_grad(true), v.set_requires_grad(true);
    flash_attention(q, k, v, opt, c.tiles).backward(d_o);
    return std::vector<std::vector<float>>{q.grad().to_vector<float>(), k.grad().to_vector<float>(),
                                           v.grad().to_vector<float>()};
  };
  const Tensor q = random_input({2, 4, 37, 8}, 61, 1.0, false).to(DType::F32);
  const Tensor k = random_input({2, 4, 53, 8}, 62, 1.0, false).to(DType::F32);
  const Tensor v = random_input({2, 4, 53, 8}, 63, 1.0, false).to(DType::F32);
  const Tensor d_o = random_input({2, 4, 37, 8}, 64, 1.0, false).to(DType::F32);
  const auto whole = grads(q, k, v, d_o);
  for (int64_t b = 0; b < 2; ++b) {
    auto part = [&](const Tensor& t) { return narrow(t, 0, b, 1); };
    const auto split = grads(part(q), part(k), part(v), part(d_o));
    for (size_t g = 0; g < 3; ++g) {
      const size_t half = whole[g].size() / 2;
      const std::vector<float> expected(whole[g].begin() + static_cast<std::ptrdiff_t>(b * half),
                                        whole[g].begin() + static_cast<std::ptrdiff_t>((b + 1) * half));
      EXPECT_EQ(split[g], expected) << "gradient " << g << ", batch " << b;
    }
  }
}

// The default tiles follow the shape: 32 x 128 up to 256 queries, 64 x 128 above; the same bits
// as passing those tiles, forward and backward.
TEST(FlashAttention, DefaultTilesFollowTheShape) {
  for (const auto& [n, block_q] : {std::pair<int64_t, int64_t>{256, 32}, {257, 64}}) {
    auto run = [&](const FlashTiles& tiles) {
      auto leaf = [&](uint64_t seed) {
        Tensor t = random_input({1, 2, n, 4}, seed, 1.0, false).to(DType::F32);
        t.set_requires_grad(true);
        return t;
      };
      Tensor q = leaf(71), k = leaf(72), v = leaf(73);
      AttentionOptions opt;
      opt.scale = 0.5;
      Tensor o = flash_attention(q, k, v, opt, tiles);
      o.backward(random_input({1, 2, n, 4}, 74, 1.0, false).to(DType::F32));
      return std::vector<std::string>{test::tensor_bytes(o), test::tensor_bytes(q.grad()),
                                      test::tensor_bytes(k.grad()), test::tensor_bytes(v.grad())};
    };
    const auto by_shape = run(FlashTiles{}), explicit_tiles = run(FlashTiles{block_q, 128});
    const auto other = run(FlashTiles{block_q == 32 ? 64 : 32, 128});
    EXPECT_EQ(by_shape, explicit_tiles) << "N = " << n;
    EXPECT_NE(by_shape[2], other[2]) << "N = " << n << ": the other tiling sums dK over other query tiles";
  }
}

TEST(FlashAttention, ReferenceScoresAndProbabilitiesMatchTheNaiveOnes) {
  const FlashCase c{"ref", 2, 3, 5, 9, 4, 0.5, true, true, -1, {}};
  const Tensor q = random_input({2, 3, 5, 4}, 51, 1.0, false), k = random_input({2, 3, 9, 4}, 52, 1.0, false);
  const AttentionOptions opt = options_for(c, DType::F64);
  const Tensor p = attention_probabilities(q, k, opt), s = attention_scores(q, k, opt);
  ASSERT_EQ(p.shape(), (Shape{2, 3, 5, 9}));
  ASSERT_EQ(s.shape(), (Shape{2, 3, 5, 9}));
  const NaiveSizes sizes{2, 3, 5, 9, 4, 4};
  const auto ref = naive_attention(sizes, q.to_vector<double>(), k.to_vector<double>(),
                                   std::vector<double>(2 * 3 * 9 * 4, 0.0), {}, 0.5,
                                   opt.alibi_slopes.to_vector<double>(), opt.logn.to_vector<double>());
  EXPECT_LT(rel_diff(p.to_vector<double>(), ref.p), 1e-12);
  const auto pv = p.to_vector<double>(), sv = s.to_vector<double>();
  for (int64_t row = 0; row < 2 * 3 * 5; ++row) {
    const int64_t pos = 4 + row % 5;  // offset M - N = 4
    double sum = 0;
    for (int64_t j = 0; j < 9; ++j) {
      const size_t i = static_cast<size_t>(row * 9 + j);
      sum += pv[i];
      if (j > pos) {
        EXPECT_EQ(pv[i], 0.0);
        EXPECT_EQ(sv[i], -INFINITY);
      } else {
        EXPECT_TRUE(std::isfinite(sv[i]));
      }
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
  // S itself: row 0 of (b 0, h 0) by hand, position 4, slope m_1 = 2^-4 (H = 3: slopes(2) first).
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>();
  const double logn0 = std::log(5.0) / std::log(16.0);
  for (int64_t j = 0; j <= 4; ++j) {
    double dot = 0;
    for (int64_t c2 = 0; c2 < 4; ++c2) dot += qv[static_cast<size_t>(c2)] * kv[static_cast<size_t>(j * 4 + c2)];
    EXPECT_NEAR(sv[static_cast<size_t>(j)], logn0 * 0.5 * dot - std::pow(2.0, -4) * static_cast<double>(4 - j), 1e-12);
  }
}

TEST(FlashAttention, RejectsBadInputsWithClearErrors) {
  const Tensor q = random_input({1, 2, 5, 4}, 1, 1.0, false), k = random_input({1, 2, 7, 4}, 2, 1.0, false);
  const Tensor v = random_input({1, 2, 7, 4}, 3, 1.0, false);
  AttentionOptions opt;
  EXPECT_THROW(flash_attention(q, random_input({1, 2, 7, 3}, 4, 1.0, false), v, opt), Error);  // head dim
  EXPECT_THROW(flash_attention(q, k, random_input({1, 2, 6, 4}, 5, 1.0, false), opt), Error);  // v length
  EXPECT_THROW(flash_attention(k, q, q, opt), Error);  // N = 7 > M = 5: default offset negative
  AttentionOptions bad_slopes;
  bad_slopes.alibi_slopes = Tensor::zeros({3}, DType::F64);
  EXPECT_THROW(flash_attention(q, k, v, bad_slopes), Error);
  AttentionOptions bad_logn;
  bad_logn.logn = Tensor::zeros({7}, DType::F64);
  EXPECT_THROW(flash_attention(q, k, v, bad_logn), Error);
  try {
    flash_attention(q, k, v, bad_logn);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("logn"), std::string::npos) << e.what();
  }
  EXPECT_THROW(flash_attention(q, k, v, opt, FlashTiles{0, 4}), Error);
}

}  // namespace
}  // namespace tstl
