// Tensor-core flash attention, forward (FlashAttention-2 arrangement), for bf16 q, k, v with head
// dim D = 32, 64 or 128; the contract is layers/flash_attention.h's, the index math
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

namespace tstl::kernels {

namespace {

using namespace mma_device;

constexpr int kBlockQ = kWarps * kRowsPerWarp;  // 64 query rows per block
constexpr int kBlockK = 64;                     // keys per K/V tile

template <int D>
constexpr size_t forward_smem() {
  return sizeof(bf16) * (kBlockQ * D + 4 * kBlockK * D);  // Q, then K and V twice
}

template <int D, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads) flash_mma_forward_kernel(const FlashParams<bf16, float> p) {
  constexpr int NT = kBlockK / 8;  // n8 tiles of S per warp
  extern __shared__ uint4 smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // (64, D) swizzled
  bf16* k_s = q_s + kBlockQ * D;              // 2 x (64, D)
  bf16* v_s = k_s + 2 * kBlockK * D;          // 2 x (64, D)
  const int lane = threadIdx.x % cuda::kWarp, warp = threadIdx.x / cuda::kWarp;
  const int64_t q_tiles = (p.n_queries + kBlockQ - 1) / kBlockQ;
  const TileAt at = tile_at(q_tiles, p.heads, true);
  const int64_t n0 = at.tile * kBlockQ;
  const int64_t rows = min(static_cast<int64_t>(kBlockQ), p.n_queries - n0);
  const bf16* k = p.k + p.kv_index(at.b, at.h, 0);
  const bf16* v = p.v + p.kv_index(at.b, at.h, 0);
  const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
  const int64_t key_tiles = (key_end + kBlockK - 1) / kBlockK;
  const int64_t mask_free = mma::mask_free_key_end(p.query_offset, n0, p.n_keys);

  load_tile_async<kBlockQ, D>(q_s, p.q + p.q_index(at.b, at.h, n0), p.q_row_stride, rows);
  load_tile_async<kBlockK, D>(k_s, k, p.kv_row_stride, key_end);
  load_tile_async<kBlockK, D>(v_s, v, p.kv_row_stride, key_end);
  cp_async_commit();

  // This thread's two rows of the warp's 16: lane / 4 and lane / 4 + 8 (the C fragment rows).
  float scale2[2];
  int64_t query_pos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t n = n0 + warp * kRowsPerWarp + mma::c_fragment(lane, 2 * r).row;
    scale2[r] = mma::kLog2e * flash_row_scale<HasLogn, float>(p, n < p.n_queries ? n : p.n_queries - 1);
    query_pos[r] = p.query_offset + n;
  }
  const float slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, at.h);

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
    const int64_t n = n0 + warp * kRowsPerWarp + mma::c_fragment(lane, 2 * r).row;
    if (lane % 4 == 0 && n < p.n_queries) p.lse[p.lse_index(at.b, at.h, n)] = mma::row_lse(row[r].max, sum);
  }
  store_rows<D>(p.o + p.q_index(at.b, at.h, n0), o, inv_sum, warp * kRowsPerWarp, rows);
}

template <int D, bool HasAlibi, bool HasLogn>
void launch_forward(const FlashParams<bf16, float>& p) {
  const int64_t blocks = p.batch * p.heads * ((p.n_queries + kBlockQ - 1) / kBlockQ);
  TSTL_CHECK(blocks <= 0x7fffffff, "flash_attention (CUDA, tensor cores): ", blocks, " blocks exceed the grid");
  const auto kernel = flash_mma_forward_kernel<D, HasAlibi, HasLogn>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(forward_smem<D>())));
  kernel<<<static_cast<unsigned>(blocks), kThreads, forward_smem<D>(), cuda::stream()>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace


void flash_forward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                       int64_t query_offset, double scale, Tensor& o, Tensor& lse) {
  FlashParams<bf16, float> p = make_params<bf16>(q, k, v, slopes, logn, query_offset, scale, lse);
  p.o = o.data<bf16>();
  const auto by_flags = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
      TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] { launch_forward<D, HasAlibi, HasLogn>(p); });
    });
  };
  switch (p.head_dim) {
    case 32: by_flags(std::integral_constant<int, 32>{}); break;
    case 64: by_flags(std::integral_constant<int, 64>{}); break;
    case 128: by_flags(std::integral_constant<int, 128>{}); break;
    default: TSTL_FAIL("flash_attention (CUDA, tensor cores): head dim ", p.head_dim, " is not 32, 64 or 128");
  }
}

}  // namespace tstl::kernels
