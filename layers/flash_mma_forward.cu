// Tensor-core flash attention, forward (FlashAttention-2 arrangement), for bf16 q, k, v with head
// dim D = 32, 64, 128 or 256; the contract is layers/flash_attention.h's, the index math
// layers/flash_mma.h's, the PTX wrappers layers/flash_mma_device.cuh's.
//
// One block of 4 warps per (b, h, 64-query tile); each warp owns 16 query rows. The Q tile and
// the 64-key K/V tiles sit in swizzled shared memory, K/V double-buffered with cp.async (tile t+1
// is in flight while tile t is multiplied). Per key tile a warp computes S = Q K^T (16 x 64, f32
// in registers), turns it into base-2 logits (log2(e) scale log-n folded into one row factor,
// the ALiBi bias from the positions in registers, the causal mask only on tiles that cross the
// diagonal or the end), folds it into the online softmax (row max over the quad by shuffles,
// exp2), and multiplies the probabilities, rounded to bf16 straight from the accumulator
// registers, with V. Key tiles after the tile's last visible key are never loaded.
// Written: O (B, H, N, D) bf16 and LSE (B, H, N) f32 (natural log).
#include <cmath>

#include "layers/flash_mma_device.cuh"
#include "layers/flash_params_cuda.h"
#include "layers/flash_tiles.h"

namespace tstl::kernels {

namespace {

using namespace mma_device;

constexpr int kBlockQ = kWarps * kRowsPerWarp;  // 64 query rows per block

// kBlockK keys per K/V tile: 64, or 32 where 64 does not fit the device's shared memory
// (layers/flash_tiles.h: D = 256 on sm_86/sm_89).
template <int D, int kBlockK, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads) flash_mma_forward_kernel(const FlashParams<bf16, float> p) {
  constexpr int NT = kBlockK / 8;  // n8 tiles of S per warp
  extern __shared__ uint4 smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // (64, D) swizzled
  bf16* k_s = q_s + kBlockQ * D;              // 2 x (kBlockK, D)
  bf16* v_s = k_s + 2 * kBlockK * D;          // 2 x (kBlockK, D)
  const int lane = threadIdx.x % cuda::kWarp, warp = threadIdx.x / cuda::kWarp;
  const QueryTile qt = query_tile_prologue<HasAlibi, HasLogn>(p, kBlockQ);
  const TileAt at = qt.at;
  const int64_t n0 = qt.n0, rows = qt.rows, key_end = qt.key_end;
  const bf16 *k = qt.k, *v = qt.v;
  const int64_t key_tiles = (key_end + kBlockK - 1) / kBlockK;
  const int64_t mask_free = mma::mask_free_key_end(p.query_offset, n0, p.n_keys);

  load_tile_async<kBlockQ, D>(q_s, p.q + p.q_index(at.b, at.h, n0), p.q_row_stride, rows);
  load_tile_async<kBlockK, D>(k_s, k, p.kv_row_stride, key_end);
  load_tile_async<kBlockK, D>(v_s, v, p.kv_row_stride, key_end);
  cp_async_commit();
  const float scale2[2] = {mma::kLog2e * qt.row_scale[0], mma::kLog2e * qt.row_scale[1]};
  const int64_t* query_pos = qt.query_pos;
  const float slope2 = qt.slope2;

  float o[D / 8][4] = {};
  mma::RowState row[2];
  for (int64_t t = 0; t < key_tiles; ++t) {
    const int buf = static_cast<int>(t % 2);
    const int64_t j0 = t * kBlockK;
    if (t + 1 < key_tiles) {  // prefetch the next tile into the other buffer
      const int64_t next = j0 + kBlockK;
      load_tile_async<kBlockK, D>(k_s + (1 - buf) * kBlockK * D, k + next * p.kv_row_stride, p.kv_row_stride,
                                  key_end - next);
      load_tile_async<kBlockK, D>(v_s + (1 - buf) * kBlockK * D, v + next * p.kv_row_stride, p.kv_row_stride,
                                  key_end - next);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float s[NT][4] = {};
    warp_mma_abt<NT, D>(s, q_s, warp * kRowsPerWarp, k_s + buf * kBlockK * D, 0);  // S = Q K^T

    const bool masked = j0 + kBlockK > mask_free;  // uniform over the block
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t key = j0 + nt * 8 + mma::c_fragment(lane, i).col;
        s[nt][i] = masked ? mma::logit2<HasAlibi, true>(s[nt][i], scale2[i / 2], slope2, query_pos[i / 2], key,
                                                        p.n_keys)
                          : mma::logit2<HasAlibi, false>(s[nt][i], scale2[i / 2], slope2, query_pos[i / 2], key,
                                                         p.n_keys);
        tile_max[i / 2] = fmaxf(tile_max[i / 2], s[nt][i]);
      }
    }
    float correction[2], shift[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) correction[r] = mma::rescale_row(row[r], quad_max(tile_max[r]), shift[r]);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[nt][i] = mma::exp2_approx(s[nt][i] - shift[i / 2]);
        row[i / 2].sum += s[nt][i];
      }
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) o[dt][i] *= correction[i / 2];
    }
    uint32_t pf[kBlockK / 16][4];
    c_to_a<kBlockK / 16>(s, pf);
    warp_mma_ab<kBlockK / 16, D>(o, pf, v_s + buf * kBlockK * D, 0);  // O += P V
    __syncthreads();  // every warp is done with this buffer before the next prefetch fills it
  }

  float inv_sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = quad_sum(row[r].sum);
    inv_sum[r] = sum > 0.f ? 1.f / sum : 0.f;
    if (lane % 4 == 0 && qt.row[r] < p.n_queries)
      p.lse[p.lse_index(at.b, at.h, qt.row[r])] = mma::row_lse(row[r].max, sum);
  }
  store_rows<D>(p.o + p.q_index(at.b, at.h, n0), o, inv_sum, warp * kRowsPerWarp, rows);
}

template <int D, int BlockK, bool HasAlibi, bool HasLogn>
void launch_forward(const FlashParams<bf16, float>& p) {
  const int64_t blocks = p.batch * p.heads * ((p.n_queries + kBlockQ - 1) / kBlockQ);
  TSTL_CHECK(blocks <= 0x7fffffff, "flash_attention (CUDA, tensor cores): ", blocks, " blocks exceed the grid");
  const auto kernel = flash_mma_forward_kernel<D, BlockK, HasAlibi, HasLogn>;
  constexpr size_t smem = flash_tiles::mma_forward_smem(D, BlockK);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, cuda::stream()>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace


void flash_forward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                       int64_t query_offset, double scale, Tensor& o, Tensor& lse) {
  FlashParams<bf16, float> p = make_params<bf16>(q, k, v, slopes, logn, query_offset, scale, lse);
  p.o = o.data<bf16>();
  const int block_k = flash_tiles::mma_forward_block_k(static_cast<int>(p.head_dim), device_smem_optin());
  const auto by_flags = [&](auto dim, auto keys) {
    constexpr int D = decltype(dim)::value, BlockK = decltype(keys)::value;
    TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
      TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] { launch_forward<D, BlockK, HasAlibi, HasLogn>(p); });
    });
  };
  using K64 = std::integral_constant<int, 64>;
  using K32 = std::integral_constant<int, 32>;
  switch (p.head_dim) {
    case 32: by_flags(std::integral_constant<int, 32>{}, K64{}); break;
    case 64: by_flags(std::integral_constant<int, 64>{}, K64{}); break;
    case 128: by_flags(std::integral_constant<int, 128>{}, K64{}); break;
    case 256:
      if (block_k == 64) {
        by_flags(std::integral_constant<int, 256>{}, K64{});
      } else if (block_k == 32) {
        by_flags(std::integral_constant<int, 256>{}, K32{});
      } else {
        TSTL_FAIL("flash_attention (CUDA, tensor cores): head dim 256 needs ", flash_tiles::mma_forward_smem(256, 32),
                  " bytes of shared memory per block; this device allows ", device_smem_optin());
      }
      break;
    default: TSTL_FAIL("flash_attention (CUDA, tensor cores): head dim ", p.head_dim, " is not 32, 64, 128 or 256");
  }
}

}  // namespace tstl::kernels
