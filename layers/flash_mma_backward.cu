// Tensor-core flash attention, backward (FlashAttention-2 arrangement with a separate dQ pass,
// so that every output element has one owner: no atomics, bitwise reproducible), for bf16 q, k,
// v with head dim D = 32, 64 or 128. Contract: layers/flash_attention.h; index math:
// layers/flash_mma.h; PTX wrappers: layers/flash_mma_device.cuh.
//
//   (1) D = rowsum(dO * O) in f32 (B, H, N), one warp per row.
//   (2) dK, dV: one block per (b, h, 64-key tile), each warp owning 16 keys; the Q and dO tiles
//       of the query rows that see the keys stream through double-buffered shared memory. Per
//       query tile the warp computes S^T = K Q^T and dP^T = V dO^T, then P^T = exp2(S^T - LSE)
//       and dS^T = P^T (dP^T - D) scale logn, and accumulates dV += P^T dO, dK += dS^T Q, the
//       left operands taken straight from the accumulator registers (rounded to bf16).
//   (3) dQ: one block per (b, h, 64-query tile), K and V tiles streaming as in the forward;
//       S = Q K^T, dP = dO V^T, dS as above, dQ += dS K.
// The per-query-row constants (log2(e) LSE, D, scale logn) are staged in shared memory with the
// Q/dO tile in (2) and kept in registers in (3). Gradient contract: dq, dk, dv are written (=).
#include <cmath>

#include "layers/flash_mma_device.cuh"
#include "layers/flash_params_cuda.h"
#include "layers/flash_tiles.h"

namespace tstl::kernels {

using namespace mma_device;

namespace {

constexpr int kOuter = kWarps * kRowsPerWarp;  // 64 rows owned by a block (queries in dQ, keys in dK/dV)

// Streamed tile of the inner loop and shared memory: layers/flash_tiles.h.
template <int D>
constexpr int dkdv_inner() {
  return flash_tiles::mma_dkdv_inner(D);
}
constexpr int kDqInner = flash_tiles::kMmaDqInner;

__global__ void flash_mma_delta_kernel(const bf16* __restrict__ o,    // (B, H, N, d)
                                       const bf16* __restrict__ d_o,  // (B, H, N, d)
                                       float* __restrict__ delta,     // (B, H, N)
                                       int64_t rows, int64_t d) {
  const int lane = threadIdx.x % cuda::kWarp;
  const int64_t warps_per_block = blockDim.x / cuda::kWarp;
  for (int64_t row = blockIdx.x * warps_per_block + threadIdx.x / cuda::kWarp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    float sum = 0.f;
    for (int64_t c = lane; c < d; c += cuda::kWarp)
      sum += bf16_to_float(d_o[row * d + c]) * bf16_to_float(o[row * d + c]);
    sum = cuda::warp_sum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

// ---- (2) dK, dV ---------------------------------------------------------------------------------

template <int D, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads)
    flash_mma_dkdv_kernel(const FlashParams<bf16, float> p, const float* __restrict__ delta /* (B, H, N) */) {
  constexpr int BQ = dkdv_inner<D>(), NT = BQ / 8;
  extern __shared__ uint4 smem[];
  bf16* k_s = reinterpret_cast<bf16*>(smem);  // (64, D) keys of the block, swizzled
  bf16* v_s = k_s + kOuter * D;               // (64, D)
  bf16* q_s = v_s + kOuter * D;               // 2 x (BQ, D)
  bf16* do_s = q_s + 2 * BQ * D;              // 2 x (BQ, D)
  float* lse2_s = reinterpret_cast<float*>(do_s + 2 * BQ * D);  // 2 x (BQ) log2(e) LSE
  float* delta_s = lse2_s + 2 * BQ;                             // 2 x (BQ) D
  float* scale_s = delta_s + 2 * BQ;                            // 2 x (BQ) scale logn
  const int lane = threadIdx.x % cuda::kWarp, warp = threadIdx.x / cuda::kWarp;
  const int64_t k_tiles = (p.n_keys + kOuter - 1) / kOuter;
  const TileAt at = tile_at(k_tiles, p.heads, false);  // early keys are seen by the most queries
  const int64_t j0 = at.tile * kOuter;
  const int64_t cols = min(static_cast<int64_t>(kOuter), p.n_keys - j0);
  const bf16* q = p.q + p.q_index(at.b, at.h, 0);
  const bf16* d_o = p.d_o + p.q_index(at.b, at.h, 0);
  const int64_t first_row = mma::first_query_row(p.query_offset, j0);
  const int64_t q_tiles = first_row < p.n_queries ? (p.n_queries - first_row + BQ - 1) / BQ : 0;

  // Query tile t: rows [first_row + t BQ, ...) into buffer t % 2, with its per-row constants.
  const auto load_query_tile = [&](int64_t t) {
    const int buf = static_cast<int>(t % 2);
    const int64_t n0 = first_row + t * BQ;
    load_tile_async<BQ, D>(q_s + buf * BQ * D, q + n0 * p.q_row_stride, p.q_row_stride, p.n_queries - n0);
    load_tile_async<BQ, D>(do_s + buf * BQ * D, d_o + n0 * p.q_row_stride, p.q_row_stride, p.n_queries - n0);
    for (int i = threadIdx.x; i < BQ; i += kThreads) {
      const int64_t n = n0 + i;
      const bool valid = n < p.n_queries;
      // A row past the end gets LSE +inf: its probabilities are exp2(-inf) = 0.
      lse2_s[buf * BQ + i] = valid ? mma::kLog2e * p.lse[p.lse_index(at.b, at.h, n)] : INFINITY;
      delta_s[buf * BQ + i] = valid ? delta[p.lse_index(at.b, at.h, n)] : 0.f;
      scale_s[buf * BQ + i] = valid ? flash_row_scale<HasLogn, float>(p, n) : 0.f;
    }
  };

  load_tile_async<kOuter, D>(k_s, p.k + p.kv_index(at.b, at.h, j0), p.kv_row_stride, cols);
  load_tile_async<kOuter, D>(v_s, p.v + p.kv_index(at.b, at.h, j0), p.kv_row_stride, cols);
  if (q_tiles > 0) load_query_tile(0);
  cp_async_commit();

  int64_t key_pos[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) key_pos[r] = j0 + warp * kRowsPerWarp + mma::c_fragment(lane, 2 * r).row;
  const float slope2 = mma::kLog2e * flash_head_slope<HasAlibi, float>(p, at.h);

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  for (int64_t t = 0; t < q_tiles; ++t) {
    const int buf = static_cast<int>(t % 2);
    const int64_t n0 = first_row + t * BQ;
    if (t + 1 < q_tiles) {
      load_query_tile(t + 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* qt = q_s + buf * BQ * D;
    const bf16* dot = do_s + buf * BQ * D;

    float s[NT][4] = {}, dp[NT][4] = {};
    warp_mma_abt<NT, D>(s, k_s, warp * kRowsPerWarp, qt, 0);    // S^T = K Q^T
    warp_mma_abt<NT, D>(dp, v_s, warp * kRowsPerWarp, dot, 0);  // dP^T = V dO^T

    const bool masked = mma::tile_needs_mask(p.query_offset, n0, BQ, j0, kOuter, p.n_queries, p.n_keys);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = nt * 8 + mma::c_fragment(lane, i).col;  // query row n0 + col
        const float row_scale = scale_s[buf * BQ + col];
        const int64_t query_pos = p.query_offset + n0 + col;
        const float logit = masked ? mma::logit2<HasAlibi, true>(s[nt][i], mma::kLog2e * row_scale, slope2,
                                                                 query_pos, key_pos[i / 2], p.n_keys)
                                   : mma::logit2<HasAlibi, false>(s[nt][i], mma::kLog2e * row_scale, slope2,
                                                                  query_pos, key_pos[i / 2], p.n_keys);
        const float prob = mma::probability2(logit, lse2_s[buf * BQ + col]);
        s[nt][i] = prob;
        dp[nt][i] = flash_dot_grad(prob, dp[nt][i], delta_s[buf * BQ + col], row_scale);
      }
    }
    uint32_t pf[BQ / 16][4], gf[BQ / 16][4];
    c_to_a<BQ / 16>(s, pf);
    c_to_a<BQ / 16>(dp, gf);
    warp_mma_ab<BQ / 16, D>(dv, pf, dot, 0);  // dV += P^T dO
    warp_mma_ab<BQ / 16, D>(dk, gf, qt, 0);   // dK += dS^T Q
    __syncthreads();
  }
  cp_async_wait<0>();  // keys no query sees (q_tiles = 0): their K/V copies must land before exit
  const float one[2] = {1.f, 1.f};
  store_rows<D>(p.dk + p.kv_index(at.b, at.h, j0), dk, one, warp * kRowsPerWarp, cols);
  store_rows<D>(p.dv + p.kv_index(at.b, at.h, j0), dv, one, warp * kRowsPerWarp, cols);
}

// ---- (3) dQ -------------------------------------------------------------------------------------

template <int D, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads)
    flash_mma_dq_kernel(const FlashParams<bf16, float> p, const float* __restrict__ delta /* (B, H, N) */) {
  constexpr int BK = kDqInner, NT = BK / 8;
  extern __shared__ uint4 smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);  // (64, D) swizzled
  bf16* do_s = q_s + kOuter * D;              // (64, D)
  bf16* k_s = do_s + kOuter * D;              // 2 x (BK, D)
  bf16* v_s = k_s + 2 * BK * D;               // 2 x (BK, D)
  const int lane = threadIdx.x % cuda::kWarp, warp = threadIdx.x / cuda::kWarp;
  const QueryTile qt = query_tile_prologue<HasAlibi, HasLogn>(p, kOuter);
  const TileAt at = qt.at;
  const int64_t n0 = qt.n0, rows = qt.rows, key_end = qt.key_end;
  const bf16 *k = qt.k, *v = qt.v;
  const int64_t key_tiles = (key_end + BK - 1) / BK;

  const int64_t q_first = p.q_index(at.b, at.h, n0);
  load_tile_async<kOuter, D>(q_s, p.q + q_first, p.q_row_stride, rows);
  load_tile_async<kOuter, D>(do_s, p.d_o + q_first, p.q_row_stride, rows);
  load_tile_async<BK, D>(k_s, k, p.kv_row_stride, key_end);
  load_tile_async<BK, D>(v_s, v, p.kv_row_stride, key_end);
  cp_async_commit();

  const float* row_scale = qt.row_scale;
  const int64_t* query_pos = qt.query_pos;
  const float slope2 = qt.slope2;
  float lse2[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = qt.row[r] < p.n_queries;
    lse2[r] = valid ? mma::kLog2e * p.lse[p.lse_index(at.b, at.h, qt.row[r])] : INFINITY;
    row_delta[r] = valid ? delta[p.lse_index(at.b, at.h, qt.row[r])] : 0.f;
  }

  float dq[D / 8][4] = {};
  for (int64_t t = 0; t < key_tiles; ++t) {
    const int buf = static_cast<int>(t % 2);
    const int64_t j0 = t * BK;
    if (t + 1 < key_tiles) {
      const int64_t next = j0 + BK;
      load_tile_async<BK, D>(k_s + (1 - buf) * BK * D, k + next * p.kv_row_stride, p.kv_row_stride, key_end - next);
      load_tile_async<BK, D>(v_s + (1 - buf) * BK * D, v + next * p.kv_row_stride, p.kv_row_stride, key_end - next);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* kt = k_s + buf * BK * D;

    float s[NT][4] = {}, dp[NT][4] = {};
    warp_mma_abt<NT, D>(s, q_s, warp * kRowsPerWarp, kt, 0);                      // S = Q K^T
    warp_mma_abt<NT, D>(dp, do_s, warp * kRowsPerWarp, v_s + buf * BK * D, 0);  // dP = dO V^T

    const bool masked = mma::tile_needs_mask(p.query_offset, n0, kOuter, j0, BK, p.n_queries, p.n_keys);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t key = j0 + nt * 8 + mma::c_fragment(lane, i).col;
        const int r = i / 2;
        const float logit = masked ? mma::logit2<HasAlibi, true>(s[nt][i], mma::kLog2e * row_scale[r], slope2,
                                                                 query_pos[r], key, p.n_keys)
                                   : mma::logit2<HasAlibi, false>(s[nt][i], mma::kLog2e * row_scale[r], slope2,
                                                                  query_pos[r], key, p.n_keys);
        const float prob = mma::probability2(logit, lse2[r]);
        dp[nt][i] = flash_dot_grad(prob, dp[nt][i], row_delta[r], row_scale[r]);
      }
    }
    uint32_t gf[BK / 16][4];
    c_to_a<BK / 16>(dp, gf);
    warp_mma_ab<BK / 16, D>(dq, gf, kt, 0);  // dQ += dS K
    __syncthreads();
  }
  const float one[2] = {1.f, 1.f};
  store_rows<D>(p.dq + q_first, dq, one, warp * kRowsPerWarp, rows);
}

template <class Kernel>
void launch(Kernel kernel, int64_t blocks, size_t smem, const FlashParams<bf16, float>& p, const float* delta,
            const char* what) {
  TSTL_CHECK(blocks <= 0x7fffffff, "flash_attention (CUDA, tensor cores): ", what, " needs ", blocks,
             " blocks, above the grid limit");
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, cuda::stream()>>>(p, delta);
  CUDA_CHECK_LAUNCH();
}

template <int D, bool HasAlibi, bool HasLogn>
void launch_backward(const FlashParams<bf16, float>& p, const float* delta) {
  const int64_t bh = p.batch * p.heads;
  launch(flash_mma_dkdv_kernel<D, HasAlibi, HasLogn>, bh * ((p.n_keys + kOuter - 1) / kOuter),
         flash_tiles::mma_dkdv_smem(D), p, delta, "dK/dV");
  launch(flash_mma_dq_kernel<D, HasAlibi, HasLogn>, bh * ((p.n_queries + kOuter - 1) / kOuter),
         flash_tiles::mma_dq_smem(D), p, delta, "dQ");
}

}  // namespace

void flash_backward_mma(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                        int64_t query_offset, double scale, const Tensor& o, const Tensor& lse, const Tensor& d_o,
                        Tensor& dq, Tensor& dk, Tensor& dv) {
  TSTL_CHECK(d_o.dtype() == DType::BF16 && o.dtype() == DType::BF16,
             "flash_attention backward (CUDA, tensor cores): expected bf16 O and dO, got ", dtype_name(o.dtype()),
             " and ", dtype_name(d_o.dtype()));
  FlashParams<bf16, float> p = make_params<bf16>(q, k, v, slopes, logn, query_offset, scale, lse);
  p.d_o = d_o.data<bf16>();
  p.dq = dq.data<bf16>();
  p.dk = dk.data<bf16>();
  p.dv = dv.data<bf16>();
  const int64_t rows = q.numel() / q.size(3);
  Tensor delta = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, Device::CUDA);  // (B, H, N)
  constexpr int kRowsPerBlock = cuda::kBlock / cuda::kWarp;
  flash_mma_delta_kernel<<<cuda::grid_for(rows, kRowsPerBlock), cuda::kBlock, 0, cuda::stream()>>>(
      o.data<bf16>(), d_o.data<bf16>(), delta.data<float>(), rows, p.head_dim);
  CUDA_CHECK_LAUNCH();
  const float* pdelta = delta.data<float>();
  const auto by_flags = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
      TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] { launch_backward<D, HasAlibi, HasLogn>(p, pdelta); });
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
