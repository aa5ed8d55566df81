// Tensor-core flash attention (layers/flash_mma_forward.cu, layers/flash_mma_backward.cu): the
// index math of its tiles and fragments, kept here as TSTL_HD functions so that CPU tests check
// it against the PTX ISA's documented layouts and against naive attention (a CPU emulation of
// one warp's tile computed through these functions, tests/layers/test_flash_mma.cpp).
//
// The kernels compute what layers/flash_attention.h states (same logits, mask, ALiBi, log-n,
// LSE and gradient contract) for bf16 q, k, v with head dim 32, 64 or 128 (forward also 256), with
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32   (D = A B + C, A 16x16, B 16x8, f32 C)
//   ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16       (four 8x8 b16 matrices per warp)
//   cp.async.cg.shared.global 16 bytes                     (double-buffered tiles, zero-fill)
// and an online softmax in the exp2 domain: logits are multiplied by log2(e) once (folded into
// the row scale and the ALiBi slope), so every exponential is one ex2 instruction.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .bf16), for lane l:
// group g = l / 4, thread-in-group t = l % 4; each 32-bit register holds two consecutive b16.
//   A (16 x 16, row): element i < 8 at row g + 8 * ((i / 2) % 2), col 2t + i % 2 + 8 * (i / 4)
//   B (16 x 8, col):  element i < 4 at row (k) 2t + i % 2 + 8 * (i / 2),  col (n) g
//   C (16 x 8, f32):  element i < 4 at row g + 8 * (i / 2),              col 2t + i % 2
// ldmatrix .x4: lanes 8m .. 8m+7 give the row addresses of matrix m; lane l receives in register
// m the elements (row l / 4, cols 2 (l % 4), +1) of matrix m, or with .trans (rows 2 (l % 4), +1,
// col l / 4).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl::mma {

constexpr int kWarpLanes = 32;
constexpr int kM = 16, kN = 8, kK = 16;  // the mma shape
constexpr int kChunk = 8;                // b16 elements per 16-byte chunk (cp.async and ldmatrix rows)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Coord {
  int row, col;
};

// ---- mma.m16n8k16 fragments: which element of the tile lane `lane` holds in slot i ------------

TSTL_HD Coord a_fragment(int lane, int i) {  // i < 8, registers i / 2
  return {lane / 4 + 8 * ((i / 2) % 2), 2 * (lane % 4) + i % 2 + 8 * (i / 4)};
}
TSTL_HD Coord b_fragment(int lane, int i) {  // i < 4: {k, n}
  return {2 * (lane % 4) + i % 2 + 8 * (i / 2), lane / 4};
}
TSTL_HD Coord c_fragment(int lane, int i) {  // i < 4
  return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2};
}

// The C fragments of two adjacent n8 tiles (cols 0-7 and 8-15 of a 16 x 16 result) are, element
// for element, the A fragment of that 16 x 16 block: A slot i is C slot c_slot_of_a(i) of n8 tile
// c_tile_of_a(i). This is how P (and dS) go from one mma's output to the next mma's input
// without shared memory.
TSTL_HD int c_tile_of_a(int i) { return i / 4; }
TSTL_HD int c_slot_of_a(int i) { return i % 4; }

// ---- ldmatrix .x4 row addresses: the tile element whose address lane `lane` supplies ---------

// A operand (16 x 16 at (row0, col0) of a row-major tile): matrices (rows 0-7, cols 0-7),
// (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) land in registers a0a1, a2a3, a4a5, a6a7.
// The same addresses with .trans load B for two n8 tiles from a tile stored (k, n) row-major (V,
// dO, Q, K when they are the right operand of P V, P^T dO, dS^T Q, dS K): registers 0, 1 are
// b0b1, b2b3 of n tile 0 and registers 2, 3 those of n tile 1.
TSTL_HD Coord ldmatrix_a_address(int lane) { return {lane % 8 + 8 * ((lane / 8) % 2), 8 * (lane / 16)}; }

// B operand for two n8 tiles from a tile stored (n, k) row-major (K in Q K^T, V in dO V^T):
// matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15), no .trans;
// registers 0, 1 are b0b1, b2b3 of n tile 0 and registers 2, 3 those of n tile 1.
TSTL_HD Coord ldmatrix_b_address(int lane) { return {lane % 8 + 8 * (lane / 16), 8 * ((lane / 8) % 2)}; }

// ---- Shared-memory swizzle --------------------------------------------------------------------

// A tile of rows of `cols` b16 (cols a multiple of 8, a power of two) is stored as 16-byte
// chunks; chunk c of row r is stored at chunk position c ^ f(r), so that the eight row addresses
// of one ldmatrix matrix (eight rows, the same logical chunk) hit eight different 16-byte bank
// groups: f(r) = r % 8 when a row has >= 8 chunks; with 4 chunks (d = 32, two rows per 128-byte
// line) f(r) = (r / 2) % 4. cp.async writes whole chunks, so the permutation costs nothing.
TSTL_HD int swizzle_chunk(int row, int chunk, int chunks_per_row) {
  const int rows_per_line = chunks_per_row >= 8 ? 1 : 8 / chunks_per_row;
  const int period = chunks_per_row >= 8 ? 8 : chunks_per_row;
  return chunk ^ ((row / rows_per_line) % period);
}
// Offset (in elements) of element (row, col) of a swizzled (rows, cols) b16 tile.
TSTL_HD int swizzled_offset(int row, int col, int cols) {
  return row * cols + swizzle_chunk(row, col / kChunk, cols / kChunk) * kChunk + col % kChunk;
}

// ---- Causal tile bounds -----------------------------------------------------------------------

// Keys [0, mask_free_end) are visible to every query row in [row_begin, ...): a key tile that ends
// at or before it needs no mask. Query row n sits at position query_offset + n.
TSTL_HD int64_t mask_free_key_end(int64_t query_offset, int64_t row_begin, int64_t n_keys) {
  const int64_t end = query_offset + row_begin + 1;
  return end < n_keys ? end : n_keys;
}
// The first query row that sees key `key_begin` (the dK/dV kernels skip the rows before it).
TSTL_HD int64_t first_query_row(int64_t query_offset, int64_t key_begin) {
  return key_begin > query_offset ? key_begin - query_offset : 0;
}
// Whether the (block_rows x block_keys) tile at (row_begin, key_begin) holds any element that the
// causal mask hides or that lies outside (n_queries, n_keys): only such tiles pay for masking.
TSTL_HD bool tile_needs_mask(int64_t query_offset, int64_t row_begin, int64_t block_rows, int64_t key_begin,
                             int64_t block_keys, int64_t n_queries, int64_t n_keys) {
  return row_begin + block_rows > n_queries || key_begin + block_keys > n_keys ||
         key_begin + block_keys > query_offset + row_begin + 1;
}

// ---- Online softmax in the exp2 domain ---------------------------------------------------------

TSTL_HD float exp2_approx(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));  // exp2(-inf) = +0
  return y;
#else
  return std::exp2(x);
#endif
}

// The base-2 logit: log2(e) * S[n, j] of layers/flash_attention.h, from the raw dot product,
// row_scale2 = log2(e) * scale * logn[n] and slope2 = log2(e) * m_h; -inf where masked (key after
// the query, or key_pos >= n_keys).
template <bool HasAlibi, bool Mask>
TSTL_HD float logit2(float dot, float row_scale2, float slope2, int64_t query_pos, int64_t key_pos, int64_t n_keys) {
  if (Mask && (key_pos > query_pos || key_pos >= n_keys)) return -INFINITY;
  float s = row_scale2 * dot;
  if constexpr (HasAlibi) s -= slope2 * static_cast<float>(query_pos - key_pos);
  return s;
}

// A row's running state: max of the base-2 logits and the sum of exp2(logit - max) over the
// elements this thread holds (the four lanes of a quad share the row; their sums are added once
// at the end, as in FlashAttention-2, since the rescale factor is the same for all four).
struct RowState {
  float max = -INFINITY;
  float sum = 0.f;
};

// Folds a tile whose row maximum (over the whole row, already reduced across the quad) is
// tile_max into the state: returns the factor exp2(old_max - new_max) by which the row's output
// accumulator and sum are rescaled, and sets `shift`, the value to subtract before exp2. A row
// with no visible key so far keeps max -inf (shift 0 avoids inf - inf).
TSTL_HD float rescale_row(RowState& row, float tile_max, float& shift) {
  const float new_max = tile_max > row.max ? tile_max : row.max;
  shift = new_max == -INFINITY ? 0.f : new_max;
  const float correction = exp2_approx(row.max - shift);
  row.sum *= correction;
  row.max = new_max;
  return correction;
}

// The natural-log LSE of a row from its base-2 state (sum summed over the quad):
// ln(sum_j e^S) = ln2 * (max + log2(sum)); +inf for a row without keys (its P is 0).
TSTL_HD float row_lse(float max2, float sum) {
  return sum > 0.f ? kLn2 * (max2 + log2f(sum)) : INFINITY;
}

// The probability recomputed in backward from the base-2 logit and lse2 = log2(e) * LSE.
TSTL_HD float probability2(float logit2_value, float lse2) { return exp2_approx(logit2_value - lse2); }

}  // namespace tstl::mma

namespace tstl::kernels {
// The device's opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin) of the
// current device, queried once per device; the kernels' tiles are chosen from it
// (layers/flash_tiles.h).
size_t device_smem_optin();
// Whether the tensor-core kernels take this call: bf16 on CUDA, rows 16-byte aligned, and head dim
// 32, 64, 128 (forward and backward) or 256 (forward, where a key tile fits the shared memory);
// the other cases run the SIMT kernels of layers/flash_attention_cuda.cu.
bool flash_mma_forward_supported(const Tensor& q, const Tensor& k, const Tensor& v);
bool flash_mma_backward_supported(const Tensor& q, const Tensor& k, const Tensor& v);
// Same contract as flash_forward_cuda / flash_backward_cuda (layers/flash_attention.h).
void flash_forward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                       int64_t query_offset, double scale, Tensor& o, Tensor& lse);
void flash_backward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                        int64_t query_offset, double scale, const Tensor& o, const Tensor& lse, const Tensor& d_o,
                        Tensor& dq, Tensor& dk, Tensor& dv);
}  // namespace tstl::kernels
