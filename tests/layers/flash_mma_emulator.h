// A CPU emulation of the tensor-core flash attention kernels (layers/flash_mma_forward.cu,
// layers/flash_mma_backward.cu), lane by lane, so that CI (no GPU) checks their index math.
//
// The instructions are emulated from the PTX ISA's text, written out here independently of
// layers/flash_mma.h: ldmatrix (lane l receives elements (l / 4, 2 (l % 4) + {0, 1}) of each
// 8 x 8 matrix, transposed with .trans) and mma.m16n8k16 (its A, B, C fragment tables). The
// kernels' own steps (which lane supplies which ldmatrix address, the swizzle, the C -> A
// register reuse, the causal tile bounds, the exp2 online softmax, bf16 rounding points) are
// taken from layers/flash_mma.h and mirrored statement by statement. A wrong layout function
// therefore gives a wrong attention here, and the tests compare with a naive one.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "layers/flash_attention.h"
#include "layers/flash_mma.h"

namespace tstl::testing::mma_emu {

constexpr int kLanes = 32, kWarps = 4, kRowsPerWarp = 16, kOuter = 64;

template <class T>
using PerLane = std::array<T, kLanes>;
using CFrag = PerLane<std::array<float, 4>>;     // one n8 tile of a C fragment, every lane
using AFrag = PerLane<std::array<uint32_t, 4>>;  // one k16 step of an A fragment, every lane

// ---- The PTX ISA's fragment tables, as its text states them ------------------------------------

inline mma::Coord ptx_a(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
  const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
  return {row, col};
}
inline mma::Coord ptx_b(int lane, int i) {  // {k, n}
  const int group = lane >> 2, tig = lane % 4;
  return {tig * 2 + (i & 1) + (i >= 2 ? 8 : 0), group};
}
inline mma::Coord ptx_c(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  return {i < 2 ? group : group + 8, tig * 2 + (i & 1)};
}

inline uint32_t pack(bf16 lo, bf16 hi) { return lo.bits | (static_cast<uint32_t>(hi.bits) << 16); }
inline float half_of(uint32_t r, int which) { return bf16_to_float(bf16{static_cast<uint16_t>(r >> (16 * which))}); }

// A shared-memory tile: `data` holds the bf16 elements at the kernel's (swizzled) offsets.
struct Tile {
  int rows = 0, cols = 0;
  std::vector<bf16> data;
  Tile(int r, int c) : rows(r), cols(c), data(static_cast<size_t>(r * c), bf16{0}) {}
  bf16 at(int row, int col) const { return data[static_cast<size_t>(mma::swizzled_offset(row, col, cols))]; }
};

// ldmatrix.x4 (.trans): lanes 8m .. 8m+7 give the element offsets of the rows of matrix m.
inline AFrag ldmatrix_x4(const Tile& s, const PerLane<int>& address, bool trans) {
  AFrag out{};
  for (int l = 0; l < kLanes; ++l) {
    for (int m = 0; m < 4; ++m) {
      const int r = l / 4, c = 2 * (l % 4);
      const auto elem = [&](int row, int col) { return s.data[static_cast<size_t>(address[8 * m + row] + col)]; };
      out[l][m] = trans ? pack(elem(c, r), elem(c + 1, r)) : pack(elem(r, c), elem(r, c + 1));
    }
  }
  return out;
}

// mma.m16n8k16 bf16 with f32 accumulation: c += A B, A and B gathered by the PTX tables.
inline void mma_m16n8k16(CFrag& c, const AFrag& a, const PerLane<std::array<uint32_t, 2>>& b) {
  float A[16][16], B[16][8];
  for (int l = 0; l < kLanes; ++l) {
    for (int i = 0; i < 8; ++i) A[ptx_a(l, i).row][ptx_a(l, i).col] = half_of(a[l][i / 2], i % 2);
    for (int i = 0; i < 4; ++i) B[ptx_b(l, i).row][ptx_b(l, i).col] = half_of(b[l][i / 2], i % 2);
  }
  for (int l = 0; l < kLanes; ++l) {
    for (int i = 0; i < 4; ++i) {
      const mma::Coord at = ptx_c(l, i);
      float dot = 0.f;
      for (int k = 0; k < 16; ++k) dot += A[at.row][k] * B[k][at.col];
      c[l][i] += dot;
    }
  }
}

// ---- The kernels' warp-level steps (layers/flash_mma_device.cuh), mirrored -------------------

// Copies rows [0, valid_rows) (row i at src + i * row_stride) into the swizzled tile, zero after.
inline void load_tile(Tile& t, const bf16* src, int64_t row_stride, int64_t valid_rows) {
  const int chunks = t.cols / mma::kChunk;
  for (int r = 0; r < t.rows; ++r)
    for (int c = 0; c < chunks; ++c)
      for (int e = 0; e < mma::kChunk; ++e)
        t.data[static_cast<size_t>(r * t.cols + mma::swizzle_chunk(r, c, chunks) * mma::kChunk + e)] =
            r < valid_rows ? src[r * row_stride + c * mma::kChunk + e] : bf16{0};
}

// acc (16 x 8 NT) += A B^T (warp_mma_abt).
inline void warp_mma_abt(std::vector<CFrag>& acc, const Tile& a, int a_row0, const Tile& b, int b_row0) {
  const int D = a.cols, NT = static_cast<int>(acc.size());
  for (int kk = 0; kk < D / 16; ++kk) {
    PerLane<int> a_addr{}, b_addr{};
    for (int l = 0; l < kLanes; ++l) {
      const mma::Coord at = mma::ldmatrix_a_address(l);
      a_addr[l] = mma::swizzled_offset(a_row0 + at.row, kk * 16 + at.col, D);
    }
    const AFrag af = ldmatrix_x4(a, a_addr, false);
    for (int np = 0; np < NT / 2; ++np) {
      for (int l = 0; l < kLanes; ++l) {
        const mma::Coord at = mma::ldmatrix_b_address(l);
        b_addr[l] = mma::swizzled_offset(b_row0 + np * 16 + at.row, kk * 16 + at.col, D);
      }
      const AFrag bf = ldmatrix_x4(b, b_addr, false);
      PerLane<std::array<uint32_t, 2>> b0{}, b1{};
      for (int l = 0; l < kLanes; ++l) {
        b0[l] = {bf[l][0], bf[l][1]};
        b1[l] = {bf[l][2], bf[l][3]};
      }
      mma_m16n8k16(acc[static_cast<size_t>(2 * np)], af, b0);
      mma_m16n8k16(acc[static_cast<size_t>(2 * np + 1)], af, b1);
    }
  }
}

// C fragments (16 x 16 KT) -> A fragments, rounded to bf16 (c_to_a).
inline std::vector<AFrag> c_to_a(const std::vector<CFrag>& c) {
  std::vector<AFrag> a(c.size() / 2);
  for (size_t kk = 0; kk < a.size(); ++kk)
    for (int l = 0; l < kLanes; ++l)
      for (int r = 0; r < 4; ++r) {
        const size_t tile = 2 * kk + static_cast<size_t>(mma::c_tile_of_a(2 * r));
        const int slot = mma::c_slot_of_a(2 * r);
        a[kk][l][r] = pack(float_to_bf16(c[tile][l][slot]), float_to_bf16(c[tile][l][slot + 1]));
      }
  return a;
}

// acc (16 x D) += A B with B rows [b_row0, ...) of a (k, n) tile through ldmatrix.trans (warp_mma_ab).
inline void warp_mma_ab(std::vector<CFrag>& acc, const std::vector<AFrag>& a, const Tile& b, int b_row0) {
  const int D = b.cols;
  for (size_t kk = 0; kk < a.size(); ++kk) {
    for (int dp = 0; dp < D / 16; ++dp) {
      PerLane<int> addr{};
      for (int l = 0; l < kLanes; ++l) {
        const mma::Coord at = mma::ldmatrix_a_address(l);
        addr[l] = mma::swizzled_offset(b_row0 + static_cast<int>(kk) * 16 + at.row, dp * 16 + at.col, D);
      }
      const AFrag bf = ldmatrix_x4(b, addr, true);
      PerLane<std::array<uint32_t, 2>> b0{}, b1{};
      for (int l = 0; l < kLanes; ++l) {
        b0[l] = {bf[l][0], bf[l][1]};
        b1[l] = {bf[l][2], bf[l][3]};
      }
      mma_m16n8k16(acc[static_cast<size_t>(2 * dp)], a[kk], b0);
      mma_m16n8k16(acc[static_cast<size_t>(2 * dp + 1)], a[kk], b1);
    }
  }
}

// __shfl_xor_sync butterflies over a quad (masks 1 then 2), as quad_max / quad_sum do.
inline PerLane<float> quad_reduce(PerLane<float> x, bool max) {
  for (int mask : {1, 2}) {
    PerLane<float> y{};
    for (int l = 0; l < kLanes; ++l) y[l] = max ? std::fmax(x[l], x[l ^ mask]) : x[l] + x[l ^ mask];
    x = y;
  }
  return x;
}

// Stores the warp's 16 x D rows (times a per-row factor) as bf16 into dst (row stride D).
inline void store_rows(bf16* dst, const std::vector<CFrag>& acc, const PerLane<std::array<float, 2>>& factor,
                       int row0, int64_t valid_rows) {
  for (int l = 0; l < kLanes; ++l)
    for (size_t dt = 0; dt < acc.size(); ++dt)
      for (int i = 0; i < 4; ++i) {
        const mma::Coord at = mma::c_fragment(l, i);
        const int64_t row = row0 + at.row;
        if (row < valid_rows)
          dst[row * static_cast<int64_t>(acc.size()) * 8 + static_cast<int64_t>(dt) * 8 + at.col] =
              float_to_bf16(acc[dt][l][i] * factor[l][i / 2]);
      }
}

// ---- The kernels, block by block -------------------------------------------------------------

using Params = FlashParams<bf16, float>;

template <bool HasAlibi, bool Mask>
float logit(float dot, float scale2, float slope2, int64_t query_pos, int64_t key, int64_t n_keys) {
  return mma::logit2<HasAlibi, Mask>(dot, scale2, slope2, query_pos, key, n_keys);
}
template <bool HasAlibi>
float masked_logit(bool masked, float dot, float scale2, float slope2, int64_t query_pos, int64_t key,
                   int64_t n_keys) {
  return masked ? logit<HasAlibi, true>(dot, scale2, slope2, query_pos, key, n_keys)
                : logit<HasAlibi, false>(dot, scale2, slope2, query_pos, key, n_keys);
}

// flash_mma_forward_kernel<D, block_k> for every block (b, h, query tile); block_k is 64, or 32
// where the device's shared memory does not hold 64 (layers/flash_tiles.h: d = 256 on sm_86/89).
template <bool HasAlibi, bool HasLogn>
void forward(const Params& p, int block_k = 64) {
  const int D = static_cast<int>(p.head_dim), BK = block_k, NT = BK / 8;
  const int64_t q_tiles = (p.n_queries + kOuter - 1) / kOuter;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t tile = 0; tile < q_tiles; ++tile) {
        const int64_t n0 = tile * kOuter, rows = std::min<int64_t>(kOuter, p.n_queries - n0);
        const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
        const int64_t mask_free = mma::mask_free_key_end(p.query_offset, n0, p.n_keys);
        Tile q_s(kOuter, D), k_s(BK, D), v_s(BK, D);
        load_tile(q_s, p.q + p.q_index(b, h, n0), p.q_row_stride, rows);
        const float slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, h);
        for (int warp = 0; warp < kWarps; ++warp) {
          PerLane<std::array<float, 2>> scale2{}, inv_sum{};
          PerLane<std::array<int64_t, 2>> query_pos{};
          PerLane<std::array<mma::RowState, 2>> row{};
          for (int l = 0; l < kLanes; ++l)
            for (int r = 0; r < 2; ++r) {
              const int64_t n = n0 + warp * kRowsPerWarp + mma::c_fragment(l, 2 * r).row;
              // mma_device::query_tile_prologue: scale 0 for rows past N (never stored).
              scale2[l][r] = n < p.n_queries ? mma::kLog2e * flash_row_scale<HasLogn, float>(p, n) : 0.f;
              query_pos[l][r] = p.query_offset + n;
            }
          std::vector<CFrag> o(static_cast<size_t>(D / 8), CFrag{});
          for (int64_t j0 = 0; j0 < key_end; j0 += BK) {
            load_tile(k_s, p.k + p.kv_index(b, h, j0), p.kv_row_stride, key_end - j0);
            load_tile(v_s, p.v + p.kv_index(b, h, j0), p.kv_row_stride, key_end - j0);
            std::vector<CFrag> s(static_cast<size_t>(NT), CFrag{});
            warp_mma_abt(s, q_s, warp * kRowsPerWarp, k_s, 0);
            const bool masked = j0 + BK > mask_free;
            std::array<PerLane<float>, 2> tile_max{};
            for (auto& m : tile_max) m.fill(-INFINITY);
            for (int l = 0; l < kLanes; ++l)
              for (int nt = 0; nt < NT; ++nt)
                for (int i = 0; i < 4; ++i) {
                  const int64_t key = j0 + nt * 8 + mma::c_fragment(l, i).col;
                  float& x = s[static_cast<size_t>(nt)][l][i];
                  x = masked_logit<HasAlibi>(masked, x, scale2[l][i / 2], slope2, query_pos[l][i / 2], key, p.n_keys);
                  tile_max[i / 2][l] = std::fmax(tile_max[i / 2][l], x);
                }
            const std::array<PerLane<float>, 2> quad_max = {quad_reduce(tile_max[0], true),
                                                            quad_reduce(tile_max[1], true)};
            for (int l = 0; l < kLanes; ++l) {
              float correction[2], shift[2];
              for (int r = 0; r < 2; ++r) correction[r] = mma::rescale_row(row[l][r], quad_max[r][l], shift[r]);
              for (int nt = 0; nt < NT; ++nt)
                for (int i = 0; i < 4; ++i) {
                  float& x = s[static_cast<size_t>(nt)][l][i];
                  x = mma::exp2_approx(x - shift[i / 2]);
                  row[l][i / 2].sum += x;
                }
              for (auto& dt : o)
                for (int i = 0; i < 4; ++i) dt[l][i] *= correction[i / 2];
            }
            warp_mma_ab(o, c_to_a(s), v_s, 0);
          }
          for (int r = 0; r < 2; ++r) {
            PerLane<float> sums{};
            for (int l = 0; l < kLanes; ++l) sums[l] = row[l][r].sum;
            sums = quad_reduce(sums, false);
            for (int l = 0; l < kLanes; ++l) {
              inv_sum[l][r] = sums[l] > 0.f ? 1.f / sums[l] : 0.f;
              const int64_t n = n0 + warp * kRowsPerWarp + mma::c_fragment(l, 2 * r).row;
              if (l % 4 == 0 && n < p.n_queries) p.lse[p.lse_index(b, h, n)] = mma::row_lse(row[l][r].max, sums[l]);
            }
          }
          store_rows(p.o + p.q_index(b, h, n0), o, inv_sum, warp * kRowsPerWarp, rows);
        }
      }
}

// flash_mma_delta_kernel: D = rowsum(dO * O) in f32.
inline std::vector<float> delta(const Params& p) {
  std::vector<float> d(static_cast<size_t>(p.batch * p.heads * p.n_queries));
  for (size_t row = 0; row < d.size(); ++row) {
    float sum = 0.f;
    for (int64_t c = 0; c < p.head_dim; ++c) {
      const int64_t i = static_cast<int64_t>(row) * p.head_dim + c;
      sum += bf16_to_float(p.d_o[i]) * bf16_to_float(p.o[i]);
    }
    d[row] = sum;
  }
  return d;
}

// flash_mma_dkdv_kernel for every block (b, h, key tile).
template <bool HasAlibi, bool HasLogn>
void dkdv(const Params& p, const std::vector<float>& delta) {
  const int D = static_cast<int>(p.head_dim), BQ = D == 128 ? 32 : 64, NT = BQ / 8;
  const int64_t k_tiles = (p.n_keys + kOuter - 1) / kOuter;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t tile = 0; tile < k_tiles; ++tile) {
        const int64_t j0 = tile * kOuter, cols = std::min<int64_t>(kOuter, p.n_keys - j0);
        const int64_t first_row = mma::first_query_row(p.query_offset, j0);
        Tile k_s(kOuter, D), v_s(kOuter, D), q_s(BQ, D), do_s(BQ, D);
        load_tile(k_s, p.k + p.kv_index(b, h, j0), p.kv_row_stride, cols);
        load_tile(v_s, p.v + p.kv_index(b, h, j0), p.kv_row_stride, cols);
        const float slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, h);
        for (int warp = 0; warp < kWarps; ++warp) {
          std::vector<CFrag> dk(static_cast<size_t>(D / 8), CFrag{}), dv = dk;
          for (int64_t n0 = first_row; n0 < p.n_queries; n0 += BQ) {
            load_tile(q_s, p.q + p.q_index(b, h, n0), p.q_row_stride, p.n_queries - n0);
            load_tile(do_s, p.d_o + p.q_index(b, h, n0), p.q_row_stride, p.n_queries - n0);
            std::vector<float> lse2(static_cast<size_t>(BQ)), row_delta(lse2.size()), row_scale(lse2.size());
            for (int i = 0; i < BQ; ++i) {
              const int64_t n = n0 + i;
              const bool valid = n < p.n_queries;
              lse2[static_cast<size_t>(i)] = valid ? mma::kLog2e * p.lse[p.lse_index(b, h, n)] : INFINITY;
              row_delta[static_cast<size_t>(i)] = valid ? delta[static_cast<size_t>(p.lse_index(b, h, n))] : 0.f;
              row_scale[static_cast<size_t>(i)] = valid ? flash_row_scale<HasLogn, float>(p, n) : 0.f;
            }
            std::vector<CFrag> s(static_cast<size_t>(NT), CFrag{}), dp = s;
            warp_mma_abt(s, k_s, warp * kRowsPerWarp, q_s, 0);
            warp_mma_abt(dp, v_s, warp * kRowsPerWarp, do_s, 0);
            const bool masked = mma::tile_needs_mask(p.query_offset, n0, BQ, j0, kOuter, p.n_queries, p.n_keys);
            for (int l = 0; l < kLanes; ++l)
              for (int nt = 0; nt < NT; ++nt)
                for (int i = 0; i < 4; ++i) {
                  const size_t col = static_cast<size_t>(nt * 8 + mma::c_fragment(l, i).col);
                  const int64_t key = j0 + warp * kRowsPerWarp + mma::c_fragment(l, i).row;
                  const int64_t query_pos = p.query_offset + n0 + static_cast<int64_t>(col);
                  const float lg = masked_logit<HasAlibi>(masked, s[static_cast<size_t>(nt)][l][i],
                                                          mma::kLog2e * row_scale[col], slope2, query_pos, key,
                                                          p.n_keys);
                  const float prob = mma::probability2(lg, lse2[col]);
                  s[static_cast<size_t>(nt)][l][i] = prob;
                  float& g = dp[static_cast<size_t>(nt)][l][i];
                  g = flash_dot_grad(prob, g, row_delta[col], row_scale[col]);
                }
            warp_mma_ab(dv, c_to_a(s), do_s, 0);
            warp_mma_ab(dk, c_to_a(dp), q_s, 0);
          }
          PerLane<std::array<float, 2>> one{};
          for (auto& f : one) f = {1.f, 1.f};
          store_rows(p.dk + p.kv_index(b, h, j0), dk, one, warp * kRowsPerWarp, cols);
          store_rows(p.dv + p.kv_index(b, h, j0), dv, one, warp * kRowsPerWarp, cols);
        }
      }
}

// flash_mma_dq_kernel for every block (b, h, query tile).
template <bool HasAlibi, bool HasLogn>
void dq(const Params& p, const std::vector<float>& delta) {
  const int D = static_cast<int>(p.head_dim), BK = 64, NT = BK / 8;
  const int64_t q_tiles = (p.n_queries + kOuter - 1) / kOuter;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t tile = 0; tile < q_tiles; ++tile) {
        const int64_t n0 = tile * kOuter, rows = std::min<int64_t>(kOuter, p.n_queries - n0);
        const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
        Tile q_s(kOuter, D), do_s(kOuter, D), k_s(BK, D), v_s(BK, D);
        load_tile(q_s, p.q + p.q_index(b, h, n0), p.q_row_stride, rows);
        load_tile(do_s, p.d_o + p.q_index(b, h, n0), p.q_row_stride, rows);
        const float slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, h);
        for (int warp = 0; warp < kWarps; ++warp) {
          PerLane<std::array<float, 2>> row_scale{}, lse2{}, row_delta{};
          PerLane<std::array<int64_t, 2>> query_pos{};
          for (int l = 0; l < kLanes; ++l)
            for (int r = 0; r < 2; ++r) {
              const int64_t n = n0 + warp * kRowsPerWarp + mma::c_fragment(l, 2 * r).row;
              const bool valid = n < p.n_queries;
              row_scale[l][r] = valid ? flash_row_scale<HasLogn, float>(p, n) : 0.f;
              lse2[l][r] = valid ? mma::kLog2e * p.lse[p.lse_index(b, h, n)] : INFINITY;
              row_delta[l][r] = valid ? delta[static_cast<size_t>(p.lse_index(b, h, n))] : 0.f;
              query_pos[l][r] = p.query_offset + n;
            }
          std::vector<CFrag> dq_acc(static_cast<size_t>(D / 8), CFrag{});
          for (int64_t j0 = 0; j0 < key_end; j0 += BK) {
            load_tile(k_s, p.k + p.kv_index(b, h, j0), p.kv_row_stride, key_end - j0);
            load_tile(v_s, p.v + p.kv_index(b, h, j0), p.kv_row_stride, key_end - j0);
            std::vector<CFrag> s(static_cast<size_t>(NT), CFrag{}), dp = s;
            warp_mma_abt(s, q_s, warp * kRowsPerWarp, k_s, 0);
            warp_mma_abt(dp, do_s, warp * kRowsPerWarp, v_s, 0);
            const bool masked = mma::tile_needs_mask(p.query_offset, n0, kOuter, j0, BK, p.n_queries, p.n_keys);
            for (int l = 0; l < kLanes; ++l)
              for (int nt = 0; nt < NT; ++nt)
                for (int i = 0; i < 4; ++i) {
                  const int64_t key = j0 + nt * 8 + mma::c_fragment(l, i).col;
                  const int r = i / 2;
                  const float lg = masked_logit<HasAlibi>(masked, s[static_cast<size_t>(nt)][l][i],
                                                          mma::kLog2e * row_scale[l][r], slope2, query_pos[l][r],
                                                          key, p.n_keys);
                  const float prob = mma::probability2(lg, lse2[l][r]);
                  float& g = dp[static_cast<size_t>(nt)][l][i];
                  g = flash_dot_grad(prob, g, row_delta[l][r], row_scale[l][r]);
                }
            warp_mma_ab(dq_acc, c_to_a(dp), k_s, 0);
          }
          PerLane<std::array<float, 2>> one{};
          for (auto& f : one) f = {1.f, 1.f};
          store_rows(p.dq + p.q_index(b, h, n0), dq_acc, one, warp * kRowsPerWarp, rows);
        }
      }
}

}  // namespace tstl::testing::mma_emu
