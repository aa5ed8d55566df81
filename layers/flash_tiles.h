// Tile sizes of the CUDA flash kernels (layers/flash_attention_cuda.cu, flash_mma_forward.cu,
// flash_mma_backward.cu, flash_decode_cuda.cu) as host functions: the dynamic shared memory
// every kernel needs for a tile shape, and the choice of the largest tile that fits a device's
// opt-in limit (cudaDevAttrMaxSharedMemoryPerBlockOptin), made at run time. The kernels use
// these same formulas, so a CPU test (tests/layers/test_flash_tiles.cpp) checks the choice for
// the limits of sm_80 (163 KiB), sm_86/sm_89 (99 KiB) and sm_90 (227 KiB).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tstl::kernels::flash_tiles {

constexpr int kWarps = 4;   // warps per block, every kernel
constexpr int kLanes = 32;  // keys (SIMT inner tile) per staged K/V tile
constexpr size_t kBf16 = 2, kF32 = 4;

// Opt-in shared memory per block (bytes) of the architectures the tests name.
constexpr size_t kSmemSm80 = 163 * 1024;
constexpr size_t kSmemSm86 = 99 * 1024;  // also sm_89
constexpr size_t kSmemSm90 = 227 * 1024;

// ---- SIMT kernels (f32 tiles; f32 inputs, head dims the tensor cores do not take) --------------
// D is the head-dim bucket (64, 128, 256), R the rows per warp: the block's outer tile is 4 R
// query rows (forward, dQ) or key rows (dK/dV); the inner tile is 32 keys or queries, stored
// with row stride D + 1 (no bank conflicts).

enum class SimtKernel { kForward, kDq, kDkDv };

constexpr size_t simt_smem(SimtKernel kernel, int d, int rows_per_warp) {
  const size_t outer = static_cast<size_t>(kWarps) * rows_per_warp;
  const size_t inner = static_cast<size_t>(kLanes) * (d + 1);  // one (32, D + 1) tile
  switch (kernel) {
    case SimtKernel::kForward:
      return kF32 * (outer * d + 2 * inner + outer * kLanes);  // Q; K, V; P
    case SimtKernel::kDq:
      return kF32 * (2 * outer * d + 2 * inner + outer * kLanes);  // Q, dO; K, V; G
    case SimtKernel::kDkDv:
      return kF32 * (2 * outer * d + 2 * inner + 2 * outer * kLanes);  // K, V; Q, dO; P, G
  }
  return 0;
}

// The rows-per-warp values each bucket is compiled for, largest first: 16 for D = 64, 8 for
// D = 128 (both fit 99 KiB), and for D = 256 8 or, where that exceeds the limit (sm_86/sm_89:
// the forward needs 100.3 KiB, dQ 132 KiB, dK/dV 136 KiB), 2.
constexpr int kSimtRowsLarge = 8, kSimtRowsSmall = 2;
constexpr int simt_default_rows(int d) {
  return d <= 64 ? 16 : 8;
}

// The rows per warp to launch `kernel` with for bucket d under `smem_limit` bytes: the bucket's
// default when it fits, else 2 (D = 256 only); 0 when nothing fits.
constexpr int simt_rows_per_warp(SimtKernel kernel, int d, size_t smem_limit) {
  if (simt_smem(kernel, d, simt_default_rows(d)) <= smem_limit) return simt_default_rows(d);
  if (d == 256 && simt_smem(kernel, d, kSimtRowsSmall) <= smem_limit) return kSimtRowsSmall;
  return 0;
}

// ---- Tensor-core kernels (bf16 tiles, swizzled, K/V or Q/dO double-buffered) -------------------

constexpr int kMmaOuter = 64;  // rows a block owns: 4 warps x 16

// Forward: Q (64, D), then K and V twice (block_k, D).
constexpr size_t mma_forward_smem(int d, int block_k) {
  return kBf16 * (static_cast<size_t>(kMmaOuter) * d + 4 * static_cast<size_t>(block_k) * d);
}
// The forward's key tile: 64 when it fits, else 32 (D = 256 on sm_86/sm_89: 160 KiB vs 96 KiB);
// 0 when neither fits.
constexpr int mma_forward_block_k(int d, size_t smem_limit) {
  if (mma_forward_smem(d, 64) <= smem_limit) return 64;
  if (mma_forward_smem(d, 32) <= smem_limit) return 32;
  return 0;
}

// Backward streamed tiles: 64 keys in dQ; 64 queries in dK/dV, 32 at D = 128, where the dK and dV
// accumulators (2 x 64 registers per thread) leave no room for a 16 x 64 S^T and dP^T.
constexpr int kMmaDqInner = 64;
constexpr int mma_dkdv_inner(int d) {
  return d == 128 ? 32 : 64;
}
// dQ: Q, dO (64, D), then K and V twice (64, D).
constexpr size_t mma_dq_smem(int d) {
  return kBf16 * (2 * static_cast<size_t>(kMmaOuter) * d + 4 * static_cast<size_t>(kMmaDqInner) * d);
}
// dK/dV: K, V (64, D), then Q and dO twice (inner, D), and two buffers of the per-row LSE2, D, scale.
constexpr size_t mma_dkdv_smem(int d) {
  const size_t inner = static_cast<size_t>(mma_dkdv_inner(d));
  return kBf16 * (2 * static_cast<size_t>(kMmaOuter) * d + 4 * inner * d) + kF32 * 2 * 3 * inner;
}

// Whether the tensor-core kernels take head dim d (bf16, 16-byte aligned rows aside): the forward
// for 32, 64, 128 and 256 where a key tile fits; the backward for 32, 64 and 128 (at 256 the dK
// and dV accumulators alone would need 256 registers per thread; the SIMT backward takes it).
constexpr bool mma_forward_head_dim(int64_t d, size_t smem_limit) {
  return d == 32 || d == 64 || d == 128 || (d == 256 && mma_forward_block_k(256, smem_limit) > 0);
}
constexpr bool mma_backward_head_dim(int64_t d, size_t smem_limit) {
  return (d == 32 || d == 64 || d == 128) && mma_dq_smem(static_cast<int>(d)) <= smem_limit &&
         mma_dkdv_smem(static_cast<int>(d)) <= smem_limit;
}

// ---- Decoding (split keys, layers/flash_decode_cuda.cu) ----------------------------------------

constexpr int64_t kDecodeMinKeysPerSplit = 64;  // below this a block's fixed cost dominates
constexpr int64_t kDecodeBlocksPerSm = 4;

// Keys per split for `rows` (b, h) pairs over the visible keys [0, key_end) on a device with
// `sms` multiprocessors: enough splits that rows x splits fills the device about
// kDecodeBlocksPerSm times, none shorter than kDecodeMinKeysPerSplit (one split when the heads
// alone fill it or the cache is short).
constexpr int64_t decode_keys_per_split(int64_t rows, int64_t key_end, int64_t sms) {
  const int64_t wanted = (kDecodeBlocksPerSm * sms + rows - 1) / rows;  // splits to fill
  const int64_t most = key_end / kDecodeMinKeysPerSplit;                // splits of >= kDecodeMinKeysPerSplit keys
  const int64_t splits = wanted < most ? (wanted > 1 ? wanted : 1) : (most > 1 ? most : 1);
  return (key_end + splits - 1) / splits;
}
constexpr int64_t decode_splits(int64_t key_end, int64_t keys_per_split) {
  return (key_end + keys_per_split - 1) / keys_per_split;
}

}  // namespace tstl::kernels::flash_tiles
