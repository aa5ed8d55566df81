// Device building blocks of the tensor-core flash attention kernels (layers/flash_mma_forward.cu,
// layers/flash_mma_backward.cu): the PTX instructions (cp.async, ldmatrix, mma.sync m16n8k16
// bf16), swizzled tile loads, and the two warp-level products every kernel is made of. Which
// lane holds or addresses which element is the TSTL_HD math of layers/flash_mma.h, tested on the
// CPU. Requires sm_80 or newer. Include only from .cu files.
#pragma once

#include <cstdint>

#include "core/cuda_context.h"
#include "layers/flash_attention.h"
#include "layers/flash_mma.h"

namespace tstl::kernels::mma_device {

using mma::kChunk;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * cuda::kWarp;
constexpr int kRowsPerWarp = mma::kM;  // every warp owns 16 rows of the block's outer tile

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `Pending` committed groups of this thread are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// c (16 x 8, f32) += a (16 x 16, bf16) b (16 x 8, bf16).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to bf16 (nearest even) in one register, `lo` in the low half: the element
// with the lower column index, as the fragments expect.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Copies rows [0, valid_rows) of a (Rows, D) bf16 tile (row i at src + i * row_stride) into the
// swizzled shared tile dst, asynchronously; rows >= valid_rows are zero-filled. All threads of
// the block take part; the caller commits and waits.
template <int Rows, int D>
__device__ __forceinline__ void load_tile_async(bf16* dst, const bf16* src, int64_t row_stride, int64_t valid_rows) {
  constexpr int kChunks = D / kChunk;
#pragma unroll
  for (int idx = threadIdx.x; idx < Rows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < valid_rows;
    const bf16* from = src + (valid ? r * row_stride + c * kChunk : 0);  // a mapped address either way
    cp_async_16(dst + r * D + mma::swizzle_chunk(r, c, kChunks) * kChunk, from, valid);
  }
}

// acc (16 x 8 NT) += A B^T: A the 16 rows [a_row0, a_row0 + 16) of the swizzled (., D) tile a,
// B the 8 NT rows [b_row0, ...) of the swizzled (., D) tile b (Q K^T, dO V^T, K Q^T, V dO^T).
template <int NT, int D>
__device__ __forceinline__ void warp_mma_abt(float (&acc)[NT][4], const bf16* a, int a_row0, const bf16* b,
                                             int b_row0) {
  static_assert(NT % 2 == 0, "n tiles come in pairs (one ldmatrix.x4 each)");
  const int lane = threadIdx.x % cuda::kWarp;
  const mma::Coord a_at = mma::ldmatrix_a_address(lane), b_at = mma::ldmatrix_b_address(lane);
#pragma unroll
  for (int kk = 0; kk < D / mma::kK; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(af, a + mma::swizzled_offset(a_row0 + a_at.row, kk * mma::kK + a_at.col, D));
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + mma::swizzled_offset(b_row0 + np * 16 + b_at.row, kk * mma::kK + b_at.col, D));
      mma_bf16(acc[2 * np], af, bf[0], bf[1]);
      mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// The C fragments c (16 x 16 KT, f32) as the A fragments of the next product, rounded to bf16
// (mma::c_tile_of_a / c_slot_of_a: register r of k step kk is C tile 2 kk + r / 2, slots
// 2 (r % 2), +1).
template <int KT>
__device__ __forceinline__ void c_to_a(const float (&c)[2 * KT][4], uint32_t (&a)[KT][4]) {
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int tile = 2 * kk + mma::c_tile_of_a(2 * r), slot = mma::c_slot_of_a(2 * r);
      a[kk][r] = pack_bf16x2(c[tile][slot], c[tile][slot + 1]);
    }
  }
}

// acc (16 x D) += A B: A (16 x 16 KT) given as fragments, B the rows [b_row0, b_row0 + 16 KT) of
// the swizzled (., D) tile b stored (k, n) row-major, read with ldmatrix.trans (P V, dS K,
// P^T dO, dS^T Q).
template <int KT, int D>
__device__ __forceinline__ void warp_mma_ab(float (&acc)[D / 8][4], const uint32_t (&a)[KT][4], const bf16* b,
                                            int b_row0) {
  const int lane = threadIdx.x % cuda::kWarp;
  const mma::Coord at = mma::ldmatrix_a_address(lane);
#pragma unroll
  for (int kk = 0; kk < KT; ++kk) {
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + mma::swizzled_offset(b_row0 + kk * mma::kK + at.row, dp * 16 + at.col, D));
      mma_bf16(acc[2 * dp], a[kk], bf[0], bf[1]);
      mma_bf16(acc[2 * dp + 1], a[kk], bf[2], bf[3]);
    }
  }
}

// Max and sum over the four lanes of a quad (the lanes that share a row of a C fragment).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Writes the warp's 16 x D accumulator rows [row0, row0 + 16) of a (rows, D) matrix at dst (row
// stride D, rows >= valid_rows skipped), each value multiplied by its row's factor, as bf16.
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, const float (&acc)[D / 8][4], const float (&row_factor)[2],
                                           int row0, int64_t valid_rows) {
  const int lane = threadIdx.x % cuda::kWarp;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const mma::Coord at = mma::c_fragment(lane, 2 * half);
      const int row = row0 + at.row;
      if (row < valid_rows) {
        const uint32_t packed =
            pack_bf16x2(acc[dt][2 * half] * row_factor[half], acc[dt][2 * half + 1] * row_factor[half]);
        *reinterpret_cast<uint32_t*>(dst + static_cast<int64_t>(row) * D + dt * 8 + at.col) = packed;
      }
    }
  }
}

// Block index -> (b, h, tile), the tiles of one (b, h) adjacent (they share K/V in L2);
// heavy_first reverses the tile order (causal query tiles grow with their index).
struct TileAt {
  int64_t b, h, tile;
};
__device__ __forceinline__ TileAt tile_at(int64_t tiles, int64_t heads, bool heavy_first) {
  const int64_t bh = blockIdx.x / tiles, t = blockIdx.x % tiles;
  return {bh / heads, bh % heads, heavy_first ? tiles - 1 - t : t};
}

// What a query-tile kernel (forward, dQ) starts from: the (b, h, 64-row tile) this block owns,
// the keys that tile can see, and the constants of this thread's two rows (the C fragment rows
// lane / 4 and lane / 4 + 8 of its warp's 16).
struct QueryTile {
  TileAt at;
  int64_t n0, rows;     // first query row of the tile, rows in it (< block_rows at the end)
  int64_t key_end;      // one past the last key any row of the tile sees
  const bf16* k;        // (M, d) keys of (b, h)
  const bf16* v;        // (M, d) values of (b, h)
  int64_t row[2];       // this thread's query rows (may be >= N in the last tile)
  int64_t query_pos[2]; // their positions query_offset + row
  float row_scale[2];   // scale logn of each (0 past N: such rows are never stored)
  float slope2;         // log2(e) m_h (0 without ALiBi)
};

template <bool HasAlibi, bool HasLogn>
__device__ __forceinline__ QueryTile query_tile_prologue(const FlashParams<bf16, float>& p, int block_rows) {
  QueryTile qt;
  const int lane = threadIdx.x % cuda::kWarp, warp = threadIdx.x / cuda::kWarp;
  const int64_t q_tiles = (p.n_queries + block_rows - 1) / block_rows;
  qt.at = tile_at(q_tiles, p.heads, true);
  qt.n0 = qt.at.tile * block_rows;
  qt.rows = min(static_cast<int64_t>(block_rows), p.n_queries - qt.n0);
  qt.key_end = flash_key_end(p.query_offset, qt.n0 + qt.rows, p.n_keys);
  qt.k = p.k + p.kv_index(qt.at.b, qt.at.h, 0);
  qt.v = p.v + p.kv_index(qt.at.b, qt.at.h, 0);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qt.row[r] = qt.n0 + warp * kRowsPerWarp + mma::c_fragment(lane, 2 * r).row;
    qt.query_pos[r] = p.query_offset + qt.row[r];
    qt.row_scale[r] = qt.row[r] < p.n_queries ? flash_row_scale<HasLogn, float>(p, qt.row[r]) : 0.f;
  }
  qt.slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, qt.at.h);
  return qt;
}

}  // namespace tstl::kernels::mma_device
