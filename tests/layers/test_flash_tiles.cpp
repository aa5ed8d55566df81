// The run-time tile choice of the CUDA flash kernels (layers/flash_tiles.h) for the shared-memory
// opt-in limits of sm_80 (163 KiB), sm_86/sm_89 (99 KiB) and sm_90 (227 KiB): the shared memory
// of each kernel is checked against sizes computed by hand from the kernels' buffer lists, and
// the choice against those sizes (head dims 129-256 must run on 99 KiB devices).
#include <gtest/gtest.h>

#include "layers/flash_tiles.h"

namespace tstl {
namespace {

namespace ft = kernels::flash_tiles;
using ft::SimtKernel;

TEST(FlashTiles, LimitsOfTheNamedArchitectures) {
  EXPECT_EQ(ft::kSmemSm80, 166912u);
  EXPECT_EQ(ft::kSmemSm86, 101376u);
  EXPECT_EQ(ft::kSmemSm90, 232448u);
}

// f32 bytes of (outer rows x D) tiles, two (32, D + 1) tiles and the (outer, 32) P/G tiles.
TEST(FlashTiles, SimtSharedMemoryByHand) {
  // D = 64, R = 16 (outer 64): Q 64x64, K/V 2x32x65, P 64x32.
  EXPECT_EQ(ft::simt_smem(SimtKernel::kForward, 64, 16), 4u * (4096 + 4160 + 2048));
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDq, 64, 16), 4u * (8192 + 4160 + 2048));
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDkDv, 64, 16), 4u * (8192 + 4160 + 4096));
  // D = 256, R = 8 (outer 32): Q 32x256, K/V 2x32x257, P 32x32.
  EXPECT_EQ(ft::simt_smem(SimtKernel::kForward, 256, 8), 102656u);
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDq, 256, 8), 135424u);
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDkDv, 256, 8), 139520u);
  // D = 256, R = 2 (outer 8).
  EXPECT_EQ(ft::simt_smem(SimtKernel::kForward, 256, 2), 75008u);
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDq, 256, 2), 83200u);
  EXPECT_EQ(ft::simt_smem(SimtKernel::kDkDv, 256, 2), 84224u);
}

TEST(FlashTiles, SimtRowsPerWarpByArchitecture) {
  for (SimtKernel kernel : {SimtKernel::kForward, SimtKernel::kDq, SimtKernel::kDkDv}) {
    for (size_t limit : {ft::kSmemSm80, ft::kSmemSm86, ft::kSmemSm90}) {
      EXPECT_EQ(ft::simt_rows_per_warp(kernel, 64, limit), 16);
      EXPECT_EQ(ft::simt_rows_per_warp(kernel, 128, limit), 8);
    }
    EXPECT_EQ(ft::simt_rows_per_warp(kernel, 256, ft::kSmemSm80), 8);
    EXPECT_EQ(ft::simt_rows_per_warp(kernel, 256, ft::kSmemSm90), 8);
    // 99 KiB: even the forward's 32-row tile (100.25 KiB) does not fit; 8 rows do.
    EXPECT_EQ(ft::simt_rows_per_warp(kernel, 256, ft::kSmemSm86), 2);
    // Whatever is chosen fits, and nothing fits a 64 KiB device at D = 256.
    EXPECT_LE(ft::simt_smem(kernel, 256, ft::simt_rows_per_warp(kernel, 256, ft::kSmemSm86)), ft::kSmemSm86);
    EXPECT_EQ(ft::simt_rows_per_warp(kernel, 256, 64 * 1024), 0);
  }
  // The forward's 32-row tile needs 100.25 KiB: a 101 KiB limit takes it, 100 KiB does not.
  EXPECT_EQ(ft::simt_rows_per_warp(SimtKernel::kForward, 256, 102656), 8);
  EXPECT_EQ(ft::simt_rows_per_warp(SimtKernel::kForward, 256, 102655), 2);
}

TEST(FlashTiles, TensorCoreForwardKeyTileByArchitecture) {
  // bf16 Q (64, D) + K, V twice (block_k, D).
  EXPECT_EQ(ft::mma_forward_smem(128, 64), 2u * (64 * 128 + 4 * 64 * 128));
  EXPECT_EQ(ft::mma_forward_smem(256, 64), 163840u);  // 160 KiB
  EXPECT_EQ(ft::mma_forward_smem(256, 32), 98304u);   // 96 KiB
  for (int d : {32, 64, 128})
    for (size_t limit : {ft::kSmemSm80, ft::kSmemSm86, ft::kSmemSm90}) EXPECT_EQ(ft::mma_forward_block_k(d, limit), 64);
  EXPECT_EQ(ft::mma_forward_block_k(256, ft::kSmemSm80), 64);
  EXPECT_EQ(ft::mma_forward_block_k(256, ft::kSmemSm90), 64);
  EXPECT_EQ(ft::mma_forward_block_k(256, ft::kSmemSm86), 32);
  EXPECT_EQ(ft::mma_forward_block_k(256, 64 * 1024), 0);
  EXPECT_TRUE(ft::mma_forward_head_dim(256, ft::kSmemSm86));
  EXPECT_FALSE(ft::mma_forward_head_dim(256, 64 * 1024));
  EXPECT_FALSE(ft::mma_forward_head_dim(96, ft::kSmemSm90));
}

TEST(FlashTiles, TensorCoreBackwardFitsEveryArchitecture) {
  EXPECT_EQ(ft::mma_dkdv_inner(128), 32);
  EXPECT_EQ(ft::mma_dkdv_inner(64), 64);
  EXPECT_EQ(ft::mma_dq_smem(128), 98304u);  // Q, dO 64x128 + K, V twice 64x128, bf16
  EXPECT_EQ(ft::mma_dkdv_smem(128), 2u * (2 * 64 * 128 + 4 * 32 * 128) + 4u * 6 * 32);
  for (size_t limit : {ft::kSmemSm80, ft::kSmemSm86, ft::kSmemSm90}) {
    for (int d : {32, 64, 128}) EXPECT_TRUE(ft::mma_backward_head_dim(d, limit)) << d << " " << limit;
    EXPECT_FALSE(ft::mma_backward_head_dim(256, limit));  // the SIMT backward takes 256
  }
  EXPECT_FALSE(ft::mma_backward_head_dim(128, 64 * 1024));  // dQ needs 96 KiB
}

}  // namespace
}  // namespace tstl
