// split_heads / merge_heads: the GPT-NeoX fused-QKV index mapping checked by hand on a tiny
// tensor, round trips against a naive packing written here, and float64 finite differences.
#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "layers/heads.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::random_input;

std::vector<double> iota(size_t n) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i);
  return v;
}

TEST(SplitHeads, HandCheckedMapping) {
  // B = 1, N = 2, H = 2, d = 2: each token's 12 columns are [q0 k0 v0 | q1 k1 v1], 2 values each.
  // Token 0 holds 0..11, token 1 holds 12..23, so q of head 1 at token 1 is columns 6, 7 = 18, 19.
  const Tensor qkv = Tensor::from_vector(iota(24), {1, 2, 12});
  const Tensor q = split_heads(qkv, 2, 0), k = split_heads(qkv, 2, 1), v = split_heads(qkv, 2, 2);
  EXPECT_EQ(q.shape(), (Shape{1, 2, 2, 2}));
  // (b, h, n, j) order: h0 n0, h0 n1, h1 n0, h1 n1.
  EXPECT_EQ(q.to_vector<double>(), (std::vector<double>{0, 1, 12, 13, 6, 7, 18, 19}));
  EXPECT_EQ(k.to_vector<double>(), (std::vector<double>{2, 3, 14, 15, 8, 9, 20, 21}));
  EXPECT_EQ(v.to_vector<double>(), (std::vector<double>{4, 5, 16, 17, 10, 11, 22, 23}));
}

TEST(MergeHeads, HandCheckedMapping) {
  // x (1, 2, 2, 2) with x[0, h, n, j] = 4h + 2n + j; merged[n] = [head 0 (d) | head 1 (d)].
  const Tensor x = Tensor::from_vector(iota(8), {1, 2, 2, 2});
  const Tensor merged = merge_heads(x);
  EXPECT_EQ(merged.shape(), (Shape{1, 2, 4}));
  EXPECT_EQ(merged.to_vector<double>(), (std::vector<double>{0, 1, 4, 5, 2, 3, 6, 7}));
}

TEST(SplitHeads, RoundTripsWithNaivePacking) {
  const int64_t B = 2, N = 5, H = 3, d = 3;
  const Tensor parts[3] = {random_input({B, H, N, d}, 1, 1.0, false), random_input({B, H, N, d}, 2, 1.0, false),
                           random_input({B, H, N, d}, 3, 1.0, false)};
  // Naive GPT-NeoX packing: qkv[b, n, h*3d + which*d + j] = part[which][b, h, n, j].
  std::vector<double> packed(static_cast<size_t>(B * N * 3 * H * d));
  for (int which = 0; which < 3; ++which) {
    const auto p = parts[which].to_vector<double>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n)
          for (int64_t j = 0; j < d; ++j)
            packed[static_cast<size_t>((b * N + n) * 3 * H * d + h * 3 * d + which * d + j)] =
                p[static_cast<size_t>(((b * H + h) * N + n) * d + j)];
  }
  const Tensor qkv = Tensor::from_vector(packed, {B, N, 3 * H * d});
  for (int which = 0; which < 3; ++which) {
    const Tensor part = split_heads(qkv, H, which);
    EXPECT_EQ(part.to_vector<double>(), parts[which].to_vector<double>()) << which;
    // merge(split) is the token-major view of that part: merged[b, n, h*d + j] = qkv[b, n, h*3d + which*d + j].
    const auto merged = merge_heads(part).to_vector<double>();
    ASSERT_EQ(merged.size(), static_cast<size_t>(B * N * H * d));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < d; ++j)
            EXPECT_EQ(merged[static_cast<size_t>((b * N + n) * H * d + h * d + j)],
                      packed[static_cast<size_t>((b * N + n) * 3 * H * d + h * 3 * d + which * d + j)]);
  }
}

TEST(MergeHeads, BackwardInvertsForward) {
  // merge is a permutation, so its backward applied to its own output must give x back.
  const Tensor x = random_input({2, 3, 5, 3}, 4);
  const Tensor merged = merge_heads(x);
  merged.backward(merged.detach());
  EXPECT_EQ(x.grad().to_vector<double>(), x.to_vector<double>());
}

TEST(SplitHeads, GradientsMatchFiniteDifferences) {
  for (int which = 0; which < 3; ++which) {
    SCOPED_TRACE(which);
    expect_gradients_match([which](const std::vector<Tensor>& in) { return split_heads(in[0], 3, which); },
                           {random_input({2, 5, 27}, 5 + static_cast<uint64_t>(which))});
  }
  // q, k and v of one qkv used together: the three zero-padded gradients sum.
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        return add(mul(split_heads(in[0], 3, 0), split_heads(in[0], 3, 1)), split_heads(in[0], 3, 2));
      },
      {random_input({2, 5, 27}, 8)});
}

TEST(MergeHeads, GradientsMatchFiniteDifferences) {
  expect_gradients_match([](const std::vector<Tensor>& in) { return merge_heads(in[0]); },
                         {random_input({2, 3, 5, 7}, 9)});
}

TEST(SplitHeads, RejectsBadShapes) {
  EXPECT_THROW(split_heads(random_input({2, 5, 26}, 10), 3, 0), Error);  // 26 is not 3 * 3 * d
  EXPECT_THROW(split_heads(random_input({2, 5, 27}, 10), 3, 3), Error);
  EXPECT_THROW(split_heads(random_input({10, 27}, 10), 3, 0), Error);
  EXPECT_THROW(merge_heads(random_input({2, 5, 27}, 10)), Error);
}

}  // namespace
}  // namespace tstl
