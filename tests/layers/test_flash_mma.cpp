// The index math of the tensor-core flash attention (layers/flash_mma.h), checked on the CPU:
// the fragment layouts against the PTX ISA's tables (hand-copied values for chosen lanes), the
// ldmatrix address patterns against the fragments they must produce, the swizzle (a bijection
// with conflict-free ldmatrix rows), the causal tile bounds against brute force, the exp2 online
// softmax against the natural-log one of layers/flash_attention.h, and finally whole kernels,
// emulated lane by lane (tests/layers/flash_mma_emulator.h), against the naive attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "layers/flash_mma.h"
#include "layers/flash_mma_emulator.h"
#include "layers/flash_naive_reference.h"

namespace tstl {
namespace {

namespace emu = testing::mma_emu;
using mma::Coord;

bool operator==(const Coord& a, const Coord& b) { return a.row == b.row && a.col == b.col; }

// ---- Fragment layouts ---------------------------------------------------------------------------

TEST(FlashMmaLayout, FragmentsMatchThePtxTablesForChosenLanes) {
  // Read off the PTX ISA's figures for m16n8k16 .bf16 (rows, cols of the tile).
  // Lane 0 (group 0, thread 0), lane 5 (group 1, thread 1), lane 31 (group 7, thread 3).
  const std::vector<Coord> a0 = {{0, 0}, {0, 1}, {8, 0}, {8, 1}, {0, 8}, {0, 9}, {8, 8}, {8, 9}};
  const std::vector<Coord> a5 = {{1, 2}, {1, 3}, {9, 2}, {9, 3}, {1, 10}, {1, 11}, {9, 10}, {9, 11}};
  const std::vector<Coord> a31 = {{7, 6}, {7, 7}, {15, 6}, {15, 7}, {7, 14}, {7, 15}, {15, 14}, {15, 15}};
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(mma::a_fragment(0, i) == a0[i]) << i;
    EXPECT_TRUE(mma::a_fragment(5, i) == a5[i]) << i;
    EXPECT_TRUE(mma::a_fragment(31, i) == a31[i]) << i;
  }
  const std::vector<Coord> b5 = {{2, 1}, {3, 1}, {10, 1}, {11, 1}}, b30 = {{4, 7}, {5, 7}, {12, 7}, {13, 7}};
  const std::vector<Coord> c5 = {{1, 2}, {1, 3}, {9, 2}, {9, 3}}, c30 = {{7, 4}, {7, 5}, {15, 4}, {15, 5}};
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(mma::b_fragment(5, i) == b5[i]) << i;
    EXPECT_TRUE(mma::b_fragment(30, i) == b30[i]) << i;
    EXPECT_TRUE(mma::c_fragment(5, i) == c5[i]) << i;
    EXPECT_TRUE(mma::c_fragment(30, i) == c30[i]) << i;
  }
}

TEST(FlashMmaLayout, FragmentsEqualThePtxRulesAndCoverEachTileOnce) {
  std::set<std::pair<int, int>> a, b, c;
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 8; ++i) {
      EXPECT_TRUE(mma::a_fragment(lane, i) == emu::ptx_a(lane, i)) << lane << " " << i;
      a.insert({mma::a_fragment(lane, i).row, mma::a_fragment(lane, i).col});
    }
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(mma::b_fragment(lane, i) == emu::ptx_b(lane, i)) << lane << " " << i;
      EXPECT_TRUE(mma::c_fragment(lane, i) == emu::ptx_c(lane, i)) << lane << " " << i;
      b.insert({mma::b_fragment(lane, i).row, mma::b_fragment(lane, i).col});
      c.insert({mma::c_fragment(lane, i).row, mma::c_fragment(lane, i).col});
    }
  }
  EXPECT_EQ(a.size(), 256u);  // 16 x 16, each element held by exactly one (lane, slot)
  EXPECT_EQ(b.size(), 128u);  // 16 x 8
  EXPECT_EQ(c.size(), 128u);  // 16 x 8
}

TEST(FlashMmaLayout, TwoCTilesAreOneAFragment) {
  // A slot i must hold the element that C slot c_slot_of_a(i) of n tile c_tile_of_a(i) holds.
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 8; ++i) {
      const Coord c = mma::c_fragment(lane, mma::c_slot_of_a(i));
      const Coord from_c{c.row, c.col + 8 * mma::c_tile_of_a(i)};
      EXPECT_TRUE(mma::a_fragment(lane, i) == from_c) << lane << " " << i;
    }
}

// ---- ldmatrix addresses and the swizzle -------------------------------------------------------

// A (rows, cols) tile holding value(row, col) at its swizzled offsets.
emu::Tile numbered_tile(int rows, int cols) {
  emu::Tile t(rows, cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      t.data[static_cast<size_t>(mma::swizzled_offset(r, c, cols))] = float_to_bf16(static_cast<float>(r * 256 + c));
  return t;
}
float value_at(int row, int col) { return bf16_to_float(float_to_bf16(static_cast<float>(row * 256 + col))); }

TEST(FlashMmaLayout, LdmatrixAddressesLoadTheFragments) {
  for (int cols : {32, 64, 128, 256}) {
    const emu::Tile tile = numbered_tile(64, cols);
    for (int row0 : {0, 16, 48})
      for (int col0 = 0; col0 < cols; col0 += 16) {
        emu::PerLane<int> a_addr{}, b_addr{};
        for (int l = 0; l < 32; ++l) {
          a_addr[l] = mma::swizzled_offset(row0 + mma::ldmatrix_a_address(l).row, col0 + mma::ldmatrix_a_address(l).col, cols);
          b_addr[l] = mma::swizzled_offset(row0 + mma::ldmatrix_b_address(l).row, col0 + mma::ldmatrix_b_address(l).col, cols);
        }
        const emu::AFrag a = emu::ldmatrix_x4(tile, a_addr, false);
        const emu::AFrag b = emu::ldmatrix_x4(tile, b_addr, false);
        const emu::AFrag bt = emu::ldmatrix_x4(tile, a_addr, true);
        for (int l = 0; l < 32; ++l) {
          for (int i = 0; i < 8; ++i) {  // A = tile[row0.., col0..]
            const Coord at = mma::a_fragment(l, i);
            ASSERT_EQ(emu::half_of(a[l][i / 2], i % 2), value_at(row0 + at.row, col0 + at.col)) << cols << " " << l << " " << i;
          }
          for (int r = 0; r < 4; ++r)
            for (int half = 0; half < 2; ++half) {
              const Coord kn = mma::b_fragment(l, 2 * (r % 2) + half);  // {k, n} in n tile r / 2
              // Stored (n, k): B[k][n] = tile[row0 + n][col0 + k].
              ASSERT_EQ(emu::half_of(b[l][r], half), value_at(row0 + 8 * (r / 2) + kn.col, col0 + kn.row)) << l;
              // Stored (k, n), .trans: B[k][n] = tile[row0 + k][col0 + n].
              ASSERT_EQ(emu::half_of(bt[l][r], half), value_at(row0 + kn.row, col0 + 8 * (r / 2) + kn.col)) << l;
            }
        }
      }
  }
}

TEST(FlashMmaLayout, SwizzleIsABijectionWithConflictFreeLdmatrixRows) {
  for (int cols : {32, 64, 128, 256}) {
    const int chunks = cols / mma::kChunk;
    for (int row = 0; row < 64; ++row) {
      std::set<int> seen;
      for (int c = 0; c < chunks; ++c) seen.insert(mma::swizzle_chunk(row, c, chunks));
      EXPECT_EQ(seen.size(), static_cast<size_t>(chunks)) << cols << " row " << row;
      EXPECT_EQ(*seen.rbegin(), chunks - 1);
    }
    // One ldmatrix matrix: eight consecutive rows (from a multiple of 8), one logical chunk. Its
    // eight 16-byte rows must lie in eight different 16-byte groups of the 32 four-byte banks.
    for (int row0 = 0; row0 < 64; row0 += 8)
      for (int c = 0; c < chunks; ++c) {
        std::set<int> groups;
        for (int r = row0; r < row0 + 8; ++r) groups.insert((mma::swizzled_offset(r, c * 8, cols) * 2 / 16) % 8);
        EXPECT_EQ(groups.size(), 8u) << "cols " << cols << " rows " << row0 << " chunk " << c;
      }
  }
}

// ---- Causal tile bounds ---------------------------------------------------------------------------

TEST(FlashMmaBounds, TileBoundsMatchBruteForce) {
  for (int64_t offset : {0, 3, 40})
    for (int64_t n_queries : {1, 17, 64, 100})
      for (int64_t n_keys : {offset + n_queries, offset + n_queries + 5}) {
        const auto visible = [&](int64_t n, int64_t j) { return n < n_queries && j < n_keys && j <= offset + n; };
        for (int64_t row_begin = 0; row_begin < n_queries; ++row_begin) {
          int64_t free_end = 0;  // keys [0, free_end) visible to every row >= row_begin
          while (free_end < n_keys && visible(row_begin, free_end)) ++free_end;
          EXPECT_EQ(mma::mask_free_key_end(offset, row_begin, n_keys), free_end);
          for (int64_t key_begin = 0; key_begin < n_keys; ++key_begin) {
            bool any_hidden = false;
            for (int64_t n = row_begin; n < row_begin + 32; ++n)
              for (int64_t j = key_begin; j < key_begin + 16; ++j) any_hidden |= !visible(n, j);
            EXPECT_EQ(mma::tile_needs_mask(offset, row_begin, 32, key_begin, 16, n_queries, n_keys), any_hidden)
                << offset << " " << n_queries << " " << n_keys << " " << row_begin << " " << key_begin;
          }
        }
        for (int64_t key = 0; key < n_keys; ++key) {
          int64_t first = 0;
          while (first < n_queries && !visible(first, key)) ++first;
          if (first < n_queries) {
            EXPECT_EQ(mma::first_query_row(offset, key), first) << offset << " " << key;
          }
        }
      }
}

// ---- The exp2 online softmax --------------------------------------------------------------------

TEST(FlashMmaSoftmax, Exp2UpdateMatchesTheNaturalLogUpdate) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 4.f);
  for (int trial = 0; trial < 20; ++trial) {
    mma::RowState row2;
    float row_max = -INFINITY, row_sum = 0.f, out2 = 0.f, out = 0.f;  // out: a one-column output accumulator
    for (int tile = 0; tile < 5; ++tile) {
      std::vector<float> s(8), s2(8);
      for (int j = 0; j < 8; ++j) {
        s[j] = (trial + tile == 0 && j < 3) ? -INFINITY : normal(rng);  // masked keys on some tiles
        s2[j] = s[j] * mma::kLog2e;
      }
      float tile_max = -INFINITY, shift = 0.f;
      for (float x : s2) tile_max = std::max(tile_max, x);
      const float correction2 = mma::rescale_row(row2, tile_max, shift);
      out2 *= correction2;
      for (int j = 0; j < 8; ++j) {
        const float p = mma::exp2_approx(s2[j] - shift);
        row2.sum += p;
        out2 += p * static_cast<float>(j + tile);
      }
      std::vector<float> e = s;
      const float correction = flash_online_softmax_update(e.data(), 8, row_max, row_sum);
      out *= correction;
      for (int j = 0; j < 8; ++j) out += e[j] * static_cast<float>(j + tile);
      EXPECT_NEAR(correction2, correction, 1e-5f * std::max(1.f, correction));
    }
    EXPECT_NEAR(mma::row_lse(row2.max, row2.sum), flash_row_lse(row_max, row_sum), 1e-5f * std::fabs(flash_row_lse(row_max, row_sum)) + 1e-5f);
    EXPECT_NEAR(out2 / row2.sum, out / row_sum, 1e-5f * std::fabs(out / row_sum) + 1e-6f);
    // probability2 recomputes P from the base-2 logit and LSE.
    const float lse2 = mma::kLog2e * mma::row_lse(row2.max, row2.sum);
    EXPECT_NEAR(mma::probability2(row2.max, lse2), std::exp(row_max - flash_row_lse(row_max, row_sum)), 1e-5f);
  }
  EXPECT_EQ(mma::row_lse(-INFINITY, 0.f), INFINITY);  // a row without keys
  EXPECT_EQ(mma::probability2(-INFINITY, 3.f), 0.f);
}

// ---- Whole kernels, emulated, against naive attention --------------------------------------

struct MmaCase {
  const char* name;
  int64_t batch, heads, n_queries, n_keys, head_dim;
  double scale;
  bool alibi, logn;
  int64_t query_offset;  // resolved
  double input_std;
  int block_k = 64;           // the forward's key tile (32: d = 256 on a 99 KiB device)
  bool forward_only = false;  // d = 256: the GPU's backward is the SIMT one, not emulated here
};

// The largest |a - b| relative to max |b|.
double relative_error(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

std::vector<bf16> random_bf16(size_t n, double std, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, std);
  std::vector<bf16> x(n);
  for (bf16& e : x) e = float_to_bf16(static_cast<float>(normal(rng)));
  return x;
}
std::vector<double> widen(const std::vector<bf16>& x) {
  std::vector<double> y;
  for (bf16 e : x) y.push_back(bf16_to_float(e));
  return y;
}
std::vector<float> widen_f(const std::vector<bf16>& x) {
  std::vector<float> y;
  for (bf16 e : x) y.push_back(bf16_to_float(e));
  return y;
}

// Tolerances of the emulated kernels against the float64 naive attention on the same bf16
// inputs, relative to the reference's largest magnitude (LSE: absolute). The error comes from
// the bf16 rounding of P and dS before their products and of the stored O (read back for D);
// the largest errors measured over these cases were below half of each bound (see the log).
constexpr double kTolO = 8e-3, kTolLse = 1e-4, kTolDv = 8e-3, kTolDqDk = 1.5e-2;

class FlashMmaEmulated : public ::testing::TestWithParam<MmaCase> {};

TEST_P(FlashMmaEmulated, ForwardAndBackwardMatchNaiveAttention) {
  const MmaCase& c = GetParam();
  const size_t q_size = static_cast<size_t>(c.batch * c.heads * c.n_queries * c.head_dim);
  const size_t kv_size = static_cast<size_t>(c.batch * c.heads * c.n_keys * c.head_dim);
  const std::vector<bf16> q = random_bf16(q_size, c.input_std, 1), k = random_bf16(kv_size, c.input_std, 2),
                          v = random_bf16(kv_size, 1.0, 3), d_o = random_bf16(q_size, 1.0, 4);
  std::vector<float> slopes, logn;
  if (c.alibi)
    for (double s : testing::alibi_slopes_by_rule(c.heads)) slopes.push_back(static_cast<float>(s));
  if (c.logn)
    for (int64_t n = 0; n < c.n_queries; ++n)
      logn.push_back(static_cast<float>(std::log(static_cast<double>(c.query_offset + n + 1)) / std::log(16.0)));

  std::vector<bf16> o(q_size), dq(q_size), dk(kv_size), dv(kv_size);
  std::vector<float> lse(static_cast<size_t>(c.batch * c.heads * c.n_queries));
  FlashParams<bf16, float> p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.lse = lse.data();
  p.d_o = d_o.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.has_alibi = c.alibi;
  p.has_logn = c.logn;
  p.alibi_slopes = slopes.data();
  p.logn = logn.data();
  p.batch = c.batch;
  p.heads = c.heads;
  p.n_queries = c.n_queries;
  p.n_keys = c.n_keys;
  p.head_dim = c.head_dim;
  p.q_row_stride = c.head_dim;
  p.q_head_stride = c.n_queries * c.head_dim;
  p.q_batch_stride = c.heads * p.q_head_stride;
  p.kv_row_stride = c.head_dim;
  p.kv_head_stride = c.n_keys * c.head_dim;
  p.kv_batch_stride = c.heads * p.kv_head_stride;
  p.lse_head_stride = c.n_queries;
  p.lse_batch_stride = c.heads * c.n_queries;
  p.query_offset = c.query_offset;
  p.scale = c.scale;

  TSTL_FLASH_BOOL_SWITCH(c.alibi, HasAlibi, [&] {
    TSTL_FLASH_BOOL_SWITCH(c.logn, HasLogn, [&] {
      emu::forward<HasAlibi, HasLogn>(p, c.block_k);
      if (c.forward_only) return;
      const std::vector<float> delta = emu::delta(p);
      emu::dkdv<HasAlibi, HasLogn>(p, delta);
      emu::dq<HasAlibi, HasLogn>(p, delta);
    });
  });

  const testing::NaiveSizes z{c.batch, c.heads, c.n_queries, c.n_keys, c.head_dim, c.query_offset};
  const std::vector<double> slopes_d(slopes.begin(), slopes.end()), logn_d(logn.begin(), logn.end());
  const testing::NaiveAttention ref =
      testing::naive_attention(z, widen(q), widen(k), widen(v), widen(d_o), c.scale, slopes_d, logn_d);
  // LSE by its definition, log sum_j exp(S[n, j]) over the visible keys, in double.
  std::vector<double> lse_ref;
  const std::vector<double> qd = widen(q), kd = widen(k);
  double lse_err = 0;
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh)
    for (int64_t n = 0; n < c.n_queries; ++n) {
      const int64_t pos = c.query_offset + n;
      std::vector<double> s;
      for (int64_t j = 0; j <= pos && j < c.n_keys; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < c.head_dim; ++e)
          dot += qd[static_cast<size_t>((bh * c.n_queries + n) * c.head_dim + e)] *
                 kd[static_cast<size_t>((bh * c.n_keys + j) * c.head_dim + e)];
        s.push_back((c.logn ? logn_d[static_cast<size_t>(n)] : 1.0) * c.scale * dot -
                    (c.alibi ? slopes_d[static_cast<size_t>(bh % c.heads)] * static_cast<double>(pos - j) : 0.0));
      }
      const double m = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double x : s) sum += std::exp(x - m);
      lse_err = std::max(lse_err, std::fabs(lse[static_cast<size_t>(bh * c.n_queries + n)] - (m + std::log(sum))));
    }
  const double o_err = relative_error(widen_f(o), ref.o), dq_err = relative_error(widen_f(dq), ref.dq),
               dk_err = relative_error(widen_f(dk), ref.dk), dv_err = relative_error(widen_f(dv), ref.dv);
  EXPECT_LE(o_err, kTolO);
  EXPECT_LE(lse_err, kTolLse);
  if (c.forward_only) {
    std::printf("%s: O %.2e  LSE %.2e (abs), forward only\n", c.name, o_err, lse_err);
    return;
  }
  EXPECT_LE(dv_err, kTolDv);
  EXPECT_LE(dq_err, kTolDqDk);
  EXPECT_LE(dk_err, kTolDqDk);
  std::printf("%s: O %.2e  LSE %.2e (abs)  dQ %.2e  dK %.2e  dV %.2e\n", c.name, o_err, lse_err, dq_err, dk_err,
              dv_err);
}

// Each head dim, several query and key tiles, N and M not multiples of the tiles, offsets (chunked
// prefill, one-row decoding), and the settings of each variant: scaled (rope, coca, coca-strict,
// alibi) or scale 1 on unit-length keys (keynorm), ALiBi slopes, log-n.
INSTANTIATE_TEST_SUITE_P(
    Cases, FlashMmaEmulated,
    ::testing::Values(MmaCase{"d64_rope", 1, 2, 130, 130, 64, 0.125, false, false, 0, 1.0},
                      MmaCase{"d32_alibi", 1, 3, 97, 97, 32, 1.0 / std::sqrt(32.0), true, false, 0, 1.0},
                      MmaCase{"d128_logn", 1, 1, 75, 75, 128, 1.0 / std::sqrt(128.0), false, true, 0, 1.0},
                      MmaCase{"d64_keynorm_scale1", 2, 1, 70, 70, 64, 1.0, false, false, 0, 0.125},
                      MmaCase{"d64_alibi_logn_offset", 1, 2, 40, 150, 64, 0.125, true, true, 110, 1.0},
                      MmaCase{"d128_decode_one_row", 1, 2, 1, 140, 128, 1.0 / std::sqrt(128.0), true, false, 139, 1.0},
                      MmaCase{"d32_explicit_offset", 1, 1, 66, 200, 32, 1.0 / std::sqrt(32.0), false, true, 62, 1.0},
                      MmaCase{"d256_forward_64_keys", 1, 1, 70, 70, 256, 1.0 / 16.0, true, false, 0, 1.0, 64, true},
                      MmaCase{"d256_forward_32_keys_logn", 1, 1, 70, 100, 256, 1.0 / 16.0, false, true, 30, 1.0, 32,
                              true}),
    [](const ::testing::TestParamInfo<MmaCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tstl
