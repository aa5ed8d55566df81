// The split-key decoding forward (layers/flash_decode_cuda.cu), emulated on the CPU: the same
// split of the visible keys into chunks (layers/flash_tiles.h), the same assignment of a chunk's
// keys to four warps, the same per-key online softmax (flash_online_softmax_update with a tile of
// one key), the same merges (flash_partial_lse, flash_merged_lse, flash_partial_weight of
// layers/flash_attention.h), in f32 as on the GPU, against the float64 naive attention
// (tests/layers/flash_naive_reference.h) and a naive log-sum-exp. Every variant's logit: scaled,
// scale 1, ALiBi, log-n; query offsets M - N and smaller (chunks with no visible key).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "layers/flash_attention.h"
#include "layers/flash_naive_reference.h"
#include "layers/flash_tiles.h"

namespace tstl {
namespace {

namespace ft = kernels::flash_tiles;
using testing::NaiveSizes;

constexpr int kWarps = ft::kWarps;

struct DecodeCase {
  int64_t batch, heads, n_queries, n_keys, head_dim;
  int64_t query_offset;  // resolved
  double scale;
  bool alibi, logn;
};

struct DecodeResult {
  std::vector<double> o, lse;  // (B, H, N, d), (B, H, N)
};

// The two kernels of layers/flash_decode_cuda.cu for one keys_per_split, in f32.
DecodeResult emulate_decode(const DecodeCase& c, const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<float>& v, const std::vector<float>& slopes,
                            const std::vector<float>& logn, int64_t keys_per_split) {
  const int64_t N = c.n_queries, M = c.n_keys, D = c.head_dim;
  FlashParams<float> p;  // for flash_row_scale / flash_head_slope, as the kernel calls them
  p.scale = c.scale;
  p.has_alibi = c.alibi;
  p.has_logn = c.logn;
  p.alibi_slopes = slopes.data();
  p.logn = logn.data();
  const int64_t key_end = flash_key_end(c.query_offset, N, M);
  const int64_t splits = ft::decode_splits(key_end, keys_per_split);
  std::vector<float> part_o(static_cast<size_t>(c.batch * c.heads * splits * N * D));
  std::vector<float> part_lse(static_cast<size_t>(c.batch * c.heads * splits * N));
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    const int64_t h = bh % c.heads;
    const float slope = c.alibi ? flash_head_slope<true, float>(p, h) : flash_head_slope<false, float>(p, h);
    for (int64_t split = 0; split < splits; ++split) {
      const FlashKeyRange range = flash_split_range(split, keys_per_split, key_end);
      for (int64_t r = 0; r < N; ++r) {
        const float row_scale = c.logn ? flash_row_scale<true, float>(p, r) : flash_row_scale<false, float>(p, r);
        float warp_lse[kWarps];
        std::vector<float> warp_o(static_cast<size_t>(kWarps * D));
        for (int w = 0; w < kWarps; ++w) {
          float row_max = -INFINITY, row_sum = 0;
          std::vector<float> o(static_cast<size_t>(D), 0.f);
          for (int64_t j = range.begin + w; j < range.end; j += kWarps) {
            float dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot = std::fma(q[static_cast<size_t>((bh * N + r) * D + d)], k[static_cast<size_t>((bh * M + j) * D + d)],
                             dot);
            float prob = c.alibi ? flash_logit<true>(dot, row_scale, slope, c.query_offset + r, j)
                                 : flash_logit<false>(dot, row_scale, slope, c.query_offset + r, j);
            const float correction = flash_online_softmax_update(&prob, 1, row_max, row_sum);
            for (int64_t d = 0; d < D; ++d)
              o[static_cast<size_t>(d)] =
                  std::fma(prob, v[static_cast<size_t>((bh * M + j) * D + d)], o[static_cast<size_t>(d)] * correction);
          }
          const float inv_sum = row_sum > 0.f ? 1.f / row_sum : 0.f;
          warp_lse[w] = flash_partial_lse(row_max, row_sum);
          for (int64_t d = 0; d < D; ++d) warp_o[static_cast<size_t>(w * D + d)] = o[static_cast<size_t>(d)] * inv_sum;
        }
        const float merged = flash_merged_lse(warp_lse, kWarps, 1);
        const int64_t row = (bh * splits + split) * N + r;
        for (int64_t d = 0; d < D; ++d) {
          float value = 0;
          for (int w = 0; w < kWarps; ++w)
            value += flash_partial_weight(warp_lse[w], merged) * warp_o[static_cast<size_t>(w * D + d)];
          part_o[static_cast<size_t>(row * D + d)] = value;
        }
        part_lse[static_cast<size_t>(row)] = merged == INFINITY ? -INFINITY : merged;
      }
    }
  }
  DecodeResult out;
  out.o.resize(static_cast<size_t>(c.batch * c.heads * N * D));
  out.lse.resize(static_cast<size_t>(c.batch * c.heads * N));
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    for (int64_t r = 0; r < N; ++r) {
      const int64_t first = bh * splits * N + r;
      const float merged = flash_merged_lse(part_lse.data() + first, splits, N);
      for (int64_t d = 0; d < D; ++d) {
        float value = 0;
        for (int64_t s = 0; s < splits; ++s) {
          const int64_t row = first + s * N;
          value += flash_partial_weight(part_lse[static_cast<size_t>(row)], merged) *
                   part_o[static_cast<size_t>(row * D + d)];
        }
        out.o[static_cast<size_t>((bh * N + r) * D + d)] = value;
      }
      out.lse[static_cast<size_t>(bh * N + r)] = merged;
    }
  }
  return out;
}

// ln sum_j exp(S[n, j]) over the visible keys, in double, from the definition.
std::vector<double> naive_lse(const DecodeCase& c, const std::vector<double>& q, const std::vector<double>& k,
                              const std::vector<double>& slopes, const std::vector<double>& logn) {
  const int64_t N = c.n_queries, M = c.n_keys, D = c.head_dim;
  std::vector<double> lse;
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t pos = c.query_offset + n;
      std::vector<double> s;
      for (int64_t j = 0; j <= pos && j < M; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += q[static_cast<size_t>((bh * N + n) * D + d)] * k[static_cast<size_t>((bh * M + j) * D + d)];
        s.push_back((logn.empty() ? 1.0 : logn[static_cast<size_t>(n)]) * c.scale * dot -
                    (slopes.empty() ? 0.0 : slopes[static_cast<size_t>(bh % c.heads)] * static_cast<double>(pos - j)));
      }
      double max = -INFINITY, sum = 0;
      for (double x : s) max = std::max(max, x);
      for (double x : s) sum += std::exp(x - max);
      lse.push_back(max + std::log(sum));
    }
  }
  return lse;
}

// Max |emulated - naive| over O relative to max |naive O|, and max |LSE difference|, for each of
// the split sizes.
void check_case(const DecodeCase& c, const std::vector<int64_t>& split_sizes) {
  std::mt19937 gen(static_cast<uint32_t>(c.n_keys * 31 + c.n_queries * 7 + c.head_dim + c.query_offset));
  std::normal_distribution<double> normal(0.0, 1.0);
  const auto fill = [&](int64_t count) {
    std::vector<double> x(static_cast<size_t>(count));
    for (double& e : x) e = static_cast<double>(static_cast<float>(normal(gen)));  // exact in f32
    return x;
  };
  const int64_t bh = c.batch * c.heads;
  const std::vector<double> q = fill(bh * c.n_queries * c.head_dim), k = fill(bh * c.n_keys * c.head_dim),
                            v = fill(bh * c.n_keys * c.head_dim);
  std::vector<double> slopes, logn;
  if (c.alibi) slopes = testing::alibi_slopes_by_rule(c.heads);
  if (c.logn)
    for (int64_t n = 0; n < c.n_queries; ++n)
      logn.push_back(std::log(static_cast<double>(c.query_offset + n + 1)) / std::log(64.0));
  const auto to_f32 = [](const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); };
  const NaiveSizes sizes{c.batch, c.heads, c.n_queries, c.n_keys, c.head_dim, c.query_offset};
  const testing::NaiveAttention ref = testing::naive_attention(sizes, q, k, v, {}, c.scale, slopes, logn);
  const std::vector<double> ref_lse = naive_lse(c, q, k, slopes, logn);
  double ref_max = 0;
  for (double x : ref.o) ref_max = std::max(ref_max, std::abs(x));
  for (int64_t keys_per_split : split_sizes) {
    const DecodeResult got =
        emulate_decode(c, to_f32(q), to_f32(k), to_f32(v), to_f32(slopes), to_f32(logn), keys_per_split);
    double o_err = 0, lse_err = 0;
    for (size_t i = 0; i < ref.o.size(); ++i) o_err = std::max(o_err, std::abs(got.o[i] - ref.o[i]));
    for (size_t i = 0; i < ref_lse.size(); ++i) lse_err = std::max(lse_err, std::abs(got.lse[i] - ref_lse[i]));
    EXPECT_LE(o_err / ref_max, 2e-5) << "keys_per_split " << keys_per_split << " N " << c.n_queries << " M "
                                     << c.n_keys;
    EXPECT_LE(lse_err, 2e-4) << "keys_per_split " << keys_per_split << " N " << c.n_queries << " M " << c.n_keys;
  }
}

TEST(FlashDecode, SplitSizes) {
  // Hand-computed: 8 heads, 16384 keys, 132 SMs: ceil(528 / 8) = 66 splits of ceil(16384 / 66) = 249.
  EXPECT_EQ(ft::decode_keys_per_split(8, 16384, 132), 249);
  EXPECT_EQ(ft::decode_splits(16384, 249), 66);
  EXPECT_EQ(ft::decode_keys_per_split(1024, 4096, 132), 4096);  // the heads fill the device
  EXPECT_EQ(ft::decode_keys_per_split(1, 100, 132), 100);       // two chunks would be under 64 keys
  EXPECT_EQ(ft::decode_keys_per_split(1, 128, 132), 64);
  EXPECT_EQ(ft::decode_keys_per_split(1, 64, 132), 64);
  EXPECT_EQ(ft::decode_keys_per_split(1, 1, 132), 1);
  for (int64_t key_end : {1, 63, 64, 65, 1000, 16385}) {
    for (int64_t rows : {1, 7, 64, 4096}) {
      const int64_t per = ft::decode_keys_per_split(rows, key_end, 108);
      const int64_t splits = ft::decode_splits(key_end, per);
      EXPECT_GE(per * splits, key_end);        // every key in a chunk
      EXPECT_LT(per * (splits - 1), key_end);  // no empty chunk at the end
      EXPECT_TRUE(splits == 1 || per >= ft::kDecodeMinKeysPerSplit) << key_end << " " << rows;
    }
  }
}

TEST(FlashDecode, OneQueryMatchesNaive) {
  const int64_t M = 1000;  // not a multiple of a chunk or of the warps
  check_case({1, 2, 1, M, 64, M - 1, 0.125, false, false}, {1, 7, 64, 249, 1000, ft::decode_keys_per_split(2, M, 132)});
}

TEST(FlashDecode, EveryVariantAndFewRows) {
  const int64_t M = 517;
  for (bool alibi : {false, true}) {
    for (bool logn : {false, true}) {
      if (alibi && logn) continue;  // the decoder never combines them (model.logn is for the rotary variants)
      for (double scale : {1.0, 1.0 / std::sqrt(32.0)}) {
        check_case({2, 3, 3, M, 32, M - 3, scale, alibi, logn}, {5, 64, 200, M});
      }
    }
  }
}

TEST(FlashDecode, OffsetBeforeTheEndLeavesChunksEmpty) {
  // Queries at positions 300, 301 of 900 cached keys: chunks past key 301 see nothing.
  check_case({1, 4, 2, 900, 48, 300, 0.2, true, false}, {64, 100, 450});
  check_case({1, 1, 4, 900, 40, 0, 0.2, false, true}, {1, 64});  // rows see keys 0..3 only
}

}  // namespace
}  // namespace tstl
