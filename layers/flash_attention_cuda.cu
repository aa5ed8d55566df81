// Flash attention on CUDA (FlashAttention-2 structure, SIMT fp32 arithmetic): causal softmax
// attention with optional ALiBi slopes and log-n row factors, never materialising N x M scores.
// The math (logits, masking, LSE, recomputed probabilities, dS) is the TSTL_HD code of
// layers/flash_attention.h, the same the CPU kernel runs; the flags are template parameters.
//
//   forward   one block per (b, h, query tile): Q tile staged in shared memory, K/V tiles of 32
//             keys staged in turn; each warp owns R query rows and each lane one key of the tile;
//             online softmax with fp32 row max/sum in registers, O accumulated in registers (lane
//             l holds dims l, l+32, ...). Saves O (q's dtype) and LSE (B, H, N) in fp32.
//   backward  (1) D = rowsum(dO * O), one warp per row, fp32 (B, H, N);
//             (2) dQ: one block per (b, h, query tile), looping over key tiles, dQ in fp32
//                 registers; (3) dK, dV: one block per (b, h, key tile), looping over the query
//                 tiles that see it, in fp32 registers. P = exp(S - LSE) is recomputed tile by tile
//                 in both. Every output element is owned by one thread: no atomics, a fixed
//                 summation order, bitwise reproducible results.
// Shared-memory tiles are fp32 (bf16 inputs are widened when staged); head dims up to 256 run
// on kernels compiled for D = 64, 128 or 256 with the unused dims zero-padded. R is chosen at
// run time from the device's shared-memory opt-in limit (layers/flash_tiles.h: at D = 256, 8
// rows per warp, or 2 where 8 do not fit, as on sm_86/sm_89).
// Dispatch (flash_forward_cuda / flash_backward_cuda): forwards with N <= 4 query rows go to the
// split-key decoding kernels (layers/flash_decode_cuda.cu); bf16 calls with head dim 32, 64 or
// 128 (the forward also 256) go to the tensor-core kernels (layers/flash_mma.h); these SIMT
// kernels take f32 and every other head dim. Also here: the device's shared-memory limit and
// the f32 <-> bf16 conversion of the cudnn backend.
// Gradient contract: o, lse, dq, dk, dv are written (=).
#include <cmath>
#include <map>
#include <mutex>

#include "core/cuda_context.h"
#include "layers/flash_attention.h"
#include "layers/flash_params_cuda.h"
#include "layers/flash_mma.h"
#include "layers/flash_tiles.h"

namespace tstl::kernels {

namespace {

using cuda::kWarp;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kInner = kWarp;  // the tile dimension spread over the lanes of a warp

// Per head-dim bucket D and R outer rows per warp (query rows in forward/dQ, key rows in dK/dV;
// chosen at run time from the device's shared memory, layers/flash_tiles.h): the outer tile is
// kWarps * R rows. Lane l owns dims l + 32 t, t < D / 32.
template <int D, int R>
struct Config {
  static_assert(D % kWarp == 0, "head-dim bucket must be a multiple of the warp size");
  static constexpr int kRows = R;
  static constexpr int kOuter = kWarps * kRows;
  static constexpr int kSlots = D / kWarp;
  static constexpr int kPadded = D + 1;  // row stride of the lane-indexed tiles: no bank conflicts
};

// Copies `tile_rows` rows of d elements, row i starting at src[first + i * row_stride], into a
// (tile_rows, stride) fp32 tile; columns >= d and rows >= valid_rows are zero.
template <int D, class T>
__device__ void stage_tile(float* dst, int stride, int tile_rows, const T* src, int64_t first, int64_t row_stride,
                           int64_t valid_rows, int d) {
  for (int idx = threadIdx.x; idx < tile_rows * D; idx += blockDim.x) {
    const int i = idx / D, c = idx % D;
    dst[i * stride + c] = (i < valid_rows && c < d) ? static_cast<float>(cuda::load(src, first + i * row_stride + c))
                                                    : 0.f;
  }
}

// s[r] = outer row r (of this warp's R rows, (R, D), 16-byte aligned) . inner (this lane's row, D).
template <int D, int R>
__device__ __forceinline__ void dot_rows(const float* outer, const float* inner, float (&s)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) s[r] = 0.f;
#pragma unroll 2
  for (int c = 0; c < D; c += 4) {
    const float i0 = inner[c], i1 = inner[c + 1], i2 = inner[c + 2], i3 = inner[c + 3];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 o = *reinterpret_cast<const float4*>(outer + r * D + c);
      s[r] = fmaf(o.x, i0, fmaf(o.y, i1, fmaf(o.z, i2, fmaf(o.w, i3, s[r]))));
    }
  }
}

// acc[r][t] += sum over j < 32 of weights[r][j] * inner[j][lane + 32 t]; weights (R, 32) are this
// warp's rows, inner the (32, D + 1) lane-indexed tile.
template <int D, int R>
__device__ __forceinline__ void accumulate_rows(const float* weights, const float* inner, int lane,
                                                float (&acc)[R][D / kWarp]) {
  constexpr int kSlots = D / kWarp;
#pragma unroll 4
  for (int j = 0; j < kInner; ++j) {
    float x[kSlots];
#pragma unroll
    for (int t = 0; t < kSlots; ++t) x[t] = inner[j * (D + 1) + lane + kWarp * t];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float w = weights[r * kInner + j];
#pragma unroll
      for (int t = 0; t < kSlots; ++t) acc[r][t] = fmaf(w, x[t], acc[r][t]);
    }
  }
}

// Block index -> (b, h, tile): the tiles of one (b, h) are adjacent, so they share K/V in L2.
struct TileIndex {
  int64_t b, h, tile;
};
__device__ __forceinline__ TileIndex tile_index(int64_t tiles, int64_t heads, bool heavy_last) {
  const int64_t bh = blockIdx.x / tiles, t = blockIdx.x % tiles;
  // Causal query tiles grow with their index: launch the heaviest first.
  return {bh / heads, bh % heads, heavy_last ? tiles - 1 - t : t};
}

// ---- Forward ------------------------------------------------------------------------------------

template <class T, int D, int Rows, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(const FlashParams<T, float> p) {
  using Cfg = Config<D, Rows>;
  constexpr int R = Cfg::kRows, BQ = Cfg::kOuter, S = Cfg::kSlots, PD = Cfg::kPadded;
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);  // (BQ, D) queries
  float* k_s = q_s + BQ * D;                     // (32, D + 1) keys of the tile
  float* v_s = k_s + kInner * PD;                // (32, D + 1) values of the tile
  float* p_s = v_s + kInner * PD;                // (BQ, 32) probabilities of the tile
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t q_tiles = (p.n_queries + BQ - 1) / BQ;
  const TileIndex at = tile_index(q_tiles, p.heads, true);
  const int64_t n0 = at.tile * BQ, rows = min(static_cast<int64_t>(BQ), p.n_queries - n0);
  const int d = static_cast<int>(p.head_dim);
  stage_tile<D>(q_s, D, BQ, p.q, p.q_index(at.b, at.h, n0), p.q_row_stride, rows, d);

  const float slope = flash_head_slope<HasAlibi, float>(p, at.h);
  float row_max[R], lane_sum[R], row_scale[R], o[R][S];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = warp * R + r;
    row_max[r] = -INFINITY;
    lane_sum[r] = 0.f;
    row_scale[r] = i < rows ? flash_row_scale<HasLogn, float>(p, n0 + i) : 0.f;
#pragma unroll
    for (int t = 0; t < S; ++t) o[r][t] = 0.f;
  }
  const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
  for (int64_t j0 = 0; j0 < key_end; j0 += kInner) {
    __syncthreads();  // the previous tile's K/V are no longer read (and Q is staged)
    const int64_t first = p.kv_index(at.b, at.h, j0);
    stage_tile<D>(k_s, PD, kInner, p.k, first, p.kv_row_stride, key_end - j0, d);
    stage_tile<D>(v_s, PD, kInner, p.v, first, p.kv_row_stride, key_end - j0, d);
    __syncthreads();
    const int64_t key = j0 + lane;
    float s[R];
    dot_rows<D, R>(q_s + warp * R * D, k_s + lane * PD, s);
    // The online-softmax update of flash_online_softmax_update, with the tile spread over the
    // lanes: the row max is a warp reduction, each lane keeps a partial sum of its own keys.
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = warp * R + r;
      const float logit = (i < rows && key < key_end)
                              ? flash_logit<HasAlibi>(s[r], row_scale[r], slope, p.query_offset + n0 + i, key)
                              : -INFINITY;
      const float new_max = fmaxf(row_max[r], cuda::warp_max(logit));
      const float shift = new_max == -INFINITY ? 0.f : new_max;
      const float correction = expf(row_max[r] - shift);  // 0 on the row's first visible tile
      const float prob = flash_probability(logit, shift);
      lane_sum[r] = lane_sum[r] * correction + prob;
      row_max[r] = new_max;
#pragma unroll
      for (int t = 0; t < S; ++t) o[r][t] *= correction;
      p_s[i * kInner + lane] = prob;
    }
    __syncwarp();
    accumulate_rows<D, R>(p_s + warp * R * kInner, v_s, lane, o);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = warp * R + r;
    const float row_sum = cuda::warp_sum(lane_sum[r]);
    if (i >= rows) continue;
    const float inv_sum = row_sum > 0.f ? 1.f / row_sum : 0.f;
    const int64_t base = p.q_index(at.b, at.h, n0 + i);
#pragma unroll
    for (int t = 0; t < S; ++t) {
      const int c = lane + kWarp * t;
      if (c < d) cuda::store(p.o, base + c, o[r][t] * inv_sum);
    }
    if (lane == 0) p.lse[p.lse_index(at.b, at.h, n0 + i)] = flash_row_lse(row_max[r], row_sum);
  }
}

// ---- Backward (1): D = rowsum(dO * O) -----------------------------------------------------------

template <class T>
__global__ void flash_delta_kernel(const T* __restrict__ o,    // (B, H, N, d)
                                   const T* __restrict__ d_o,  // (B, H, N, d)
                                   float* __restrict__ delta,  // (B, H, N)
                                   int64_t rows, int64_t d) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps_per_block = blockDim.x / kWarp;
  for (int64_t row = blockIdx.x * warps_per_block + threadIdx.x / kWarp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    float sum = 0.f;
    for (int64_t c = lane; c < d; c += kWarp) sum += cuda::load(d_o, row * d + c) * cuda::load(o, row * d + c);
    sum = cuda::warp_sum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

// ---- Backward (2): dQ, one block per (b, h, query tile), looping over key tiles ----------------

// The explicit minimum of one block per SM: without it ptxas (CUDA 13, sm_80) capped the
// <bf16, 128, ALiBi, log-n> instantiation at 128 registers and spilled 4 bytes
// (scripts/check-spills); with it every instantiation gets the registers it needs.
template <class T, int D, int Rows, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads, 1)
    flash_dq_kernel(const FlashParams<T, float> p, const float* __restrict__ delta /* (B, H, N) */) {
  using Cfg = Config<D, Rows>;
  constexpr int R = Cfg::kRows, BQ = Cfg::kOuter, S = Cfg::kSlots, PD = Cfg::kPadded;
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);  // (BQ, D) queries
  float* do_s = q_s + BQ * D;                    // (BQ, D) dO
  float* k_s = do_s + BQ * D;                    // (32, D + 1)
  float* v_s = k_s + kInner * PD;                // (32, D + 1)
  float* g_s = v_s + kInner * PD;                // (BQ, 32) dL/d(q.k) of the tile
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t q_tiles = (p.n_queries + BQ - 1) / BQ;
  const TileIndex at = tile_index(q_tiles, p.heads, true);
  const int64_t n0 = at.tile * BQ, rows = min(static_cast<int64_t>(BQ), p.n_queries - n0);
  const int d = static_cast<int>(p.head_dim);
  const int64_t q_first = p.q_index(at.b, at.h, n0);
  stage_tile<D>(q_s, D, BQ, p.q, q_first, p.q_row_stride, rows, d);
  stage_tile<D>(do_s, D, BQ, p.d_o, q_first, p.q_row_stride, rows, d);

  const float slope = flash_head_slope<HasAlibi, float>(p, at.h);
  float row_scale[R], row_lse[R], row_delta[R], dq[R][S];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = warp * R + r;
    const bool valid = i < rows;
    row_scale[r] = valid ? flash_row_scale<HasLogn, float>(p, n0 + i) : 0.f;
    row_lse[r] = valid ? p.lse[p.lse_index(at.b, at.h, n0 + i)] : 0.f;
    row_delta[r] = valid ? delta[p.lse_index(at.b, at.h, n0 + i)] : 0.f;
#pragma unroll
    for (int t = 0; t < S; ++t) dq[r][t] = 0.f;
  }
  const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
  for (int64_t j0 = 0; j0 < key_end; j0 += kInner) {
    __syncthreads();
    const int64_t first = p.kv_index(at.b, at.h, j0);
    stage_tile<D>(k_s, PD, kInner, p.k, first, p.kv_row_stride, key_end - j0, d);
    stage_tile<D>(v_s, PD, kInner, p.v, first, p.kv_row_stride, key_end - j0, d);
    __syncthreads();
    const int64_t key = j0 + lane;
    float s[R], dp[R];
    dot_rows<D, R>(q_s + warp * R * D, k_s + lane * PD, s);    // q . k
    dot_rows<D, R>(do_s + warp * R * D, v_s + lane * PD, dp);  // dO . v
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = warp * R + r;
      const float logit = (i < rows && key < key_end)
                              ? flash_logit<HasAlibi>(s[r], row_scale[r], slope, p.query_offset + n0 + i, key)
                              : -INFINITY;
      const float prob = flash_probability(logit, row_lse[r]);
      g_s[i * kInner + lane] = flash_dot_grad(prob, dp[r], row_delta[r], row_scale[r]);
    }
    __syncwarp();
    accumulate_rows<D, R>(g_s + warp * R * kInner, k_s, lane, dq);  // dQ += G K
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = warp * R + r;
    if (i >= rows) continue;
    const int64_t base = p.q_index(at.b, at.h, n0 + i);
#pragma unroll
    for (int t = 0; t < S; ++t) {
      const int c = lane + kWarp * t;
      if (c < d) cuda::store(p.dq, base + c, dq[r][t]);
    }
  }
}

// ---- Backward (3): dK, dV, one block per (b, h, key tile), looping over query tiles -------------
// Roles swap: each warp owns R keys, each lane one query row of the 32-row query tile.

template <class T, int D, int Rows, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads)
    flash_dkdv_kernel(const FlashParams<T, float> p, const float* __restrict__ delta /* (B, H, N) */) {
  using Cfg = Config<D, Rows>;
  constexpr int R = Cfg::kRows, BK = Cfg::kOuter, S = Cfg::kSlots, PD = Cfg::kPadded;
  extern __shared__ float4 smem4[];
  float* k_s = reinterpret_cast<float*>(smem4);  // (BK, D) keys of the block
  float* v_s = k_s + BK * D;                     // (BK, D) values of the block
  float* q_s = v_s + BK * D;                     // (32, D + 1) queries of the tile
  float* do_s = q_s + kInner * PD;               // (32, D + 1) dO of the tile
  float* p_s = do_s + kInner * PD;               // (BK, 32) P^T of the tile
  float* g_s = p_s + BK * kInner;                // (BK, 32) dL/d(q.k)^T of the tile
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t k_tiles = (p.n_keys + BK - 1) / BK;
  const TileIndex at = tile_index(k_tiles, p.heads, false);  // early keys are seen by most queries
  const int64_t j0 = at.tile * BK, cols = min(static_cast<int64_t>(BK), p.n_keys - j0);
  const int d = static_cast<int>(p.head_dim);
  const int64_t kv_first = p.kv_index(at.b, at.h, j0);
  stage_tile<D>(k_s, D, BK, p.k, kv_first, p.kv_row_stride, cols, d);
  stage_tile<D>(v_s, D, BK, p.v, kv_first, p.kv_row_stride, cols, d);

  const float slope = flash_head_slope<HasAlibi, float>(p, at.h);
  float dk[R][S], dv[R][S];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < S; ++t) dk[r][t] = dv[r][t] = 0.f;
  }
  // Query row n sees key j0 iff query_offset + n >= j0: earlier rows contribute nothing.
  const int64_t first_row = j0 - p.query_offset > 0 ? j0 - p.query_offset : 0;
  for (int64_t n0 = first_row; n0 < p.n_queries; n0 += kInner) {
    __syncthreads();
    const int64_t q_first = p.q_index(at.b, at.h, n0);
    stage_tile<D>(q_s, PD, kInner, p.q, q_first, p.q_row_stride, p.n_queries - n0, d);
    stage_tile<D>(do_s, PD, kInner, p.d_o, q_first, p.q_row_stride, p.n_queries - n0, d);
    __syncthreads();
    const int64_t n = n0 + lane;
    const bool valid_query = n < p.n_queries;
    const float scale = valid_query ? flash_row_scale<HasLogn, float>(p, n) : 0.f;
    const float lse = valid_query ? p.lse[p.lse_index(at.b, at.h, n)] : 0.f;
    const float row_delta = valid_query ? delta[p.lse_index(at.b, at.h, n)] : 0.f;
    float s[R], dp[R];
    dot_rows<D, R>(k_s + warp * R * D, q_s + lane * PD, s);    // k . q
    dot_rows<D, R>(v_s + warp * R * D, do_s + lane * PD, dp);  // v . dO
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int jj = warp * R + r;
      const float logit = (valid_query && jj < cols)
                              ? flash_logit<HasAlibi>(s[r], scale, slope, p.query_offset + n, j0 + jj)
                              : -INFINITY;
      const float prob = flash_probability(logit, lse);
      p_s[jj * kInner + lane] = prob;
      g_s[jj * kInner + lane] = flash_dot_grad(prob, dp[r], row_delta, scale);
    }
    __syncwarp();
    accumulate_rows<D, R>(p_s + warp * R * kInner, do_s, lane, dv);  // dV += P^T dO
    accumulate_rows<D, R>(g_s + warp * R * kInner, q_s, lane, dk);   // dK += G^T Q
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int jj = warp * R + r;
    if (jj >= cols) continue;
    const int64_t base = p.kv_index(at.b, at.h, j0 + jj);
#pragma unroll
    for (int t = 0; t < S; ++t) {
      const int c = lane + kWarp * t;
      if (c < d) {
        cuda::store(p.dk, base + c, dk[r][t]);
        cuda::store(p.dv, base + c, dv[r][t]);
      }
    }
  }
}

// ---- Launchers --------------------------------------------------------------------------------

unsigned block_count(int64_t blocks, const char* what) {
  TSTL_CHECK(blocks >= 1 && blocks <= 0x7fffffff, "flash_attention (CUDA): ", what, " needs ", blocks,
             " blocks, outside the grid limit");
  return static_cast<unsigned>(blocks);
}

// Launches `kernel` with `smem` bytes of dynamic shared memory (opting in above 48 KiB).
template <class Kernel, class... Args>
void launch(Kernel kernel, unsigned blocks, size_t smem, Args... args) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<blocks, kThreads, smem, cuda::stream()>>>(args...);
  CUDA_CHECK_LAUNCH();
}

// Calls fn(std::integral_constant<int, R>{}) with the rows per warp that layers/flash_tiles.h
// chooses for `kernel` at bucket D on this device (8 or 2 at D = 256, the default elsewhere).
template <int D, class Fn>
void visit_rows(flash_tiles::SimtKernel kernel, Fn&& fn) {
  const size_t limit = device_smem_optin();
  const int rows = flash_tiles::simt_rows_per_warp(kernel, D, limit);
  TSTL_CHECK(rows > 0, "flash_attention (CUDA): head-dim bucket ", D, " needs ",
             flash_tiles::simt_smem(kernel, D, flash_tiles::kSimtRowsSmall), " bytes of shared memory per block; ",
             "this device allows ", limit);
  if constexpr (D == 256) {
    if (rows == flash_tiles::kSimtRowsSmall) return fn(std::integral_constant<int, flash_tiles::kSimtRowsSmall>{});
  }
  return fn(std::integral_constant<int, flash_tiles::simt_default_rows(D)>{});
}

// Calls fn(std::integral_constant<int, D>{}) with the smallest compiled head-dim bucket >= d.
template <class Fn>
void visit_head_dim(int64_t d, Fn&& fn) {
  if (d <= 64) return fn(std::integral_constant<int, 64>{});
  if (d <= 128) return fn(std::integral_constant<int, 128>{});
  if (d <= 256) return fn(std::integral_constant<int, 256>{});
  TSTL_FAIL("flash_attention (CUDA): head dim ", d, " is above the largest compiled one (256)");
}

// Calls fn(T{}) for the activation dtypes of the CUDA flash kernels.
template <class Fn>
void visit_flash_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(float{}); return;
    case DType::BF16: fn(bf16{}); return;
    default: TSTL_FAIL("flash_attention (CUDA): expected f32 or bf16 tensors, got ", dtype_name(dtype));
  }
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                  const Tensor& lse) {
  const char* name = "flash_attention";
  cuda::check_on_cuda(q, name, "q");
  cuda::check_on_cuda(k, name, "k");
  cuda::check_on_cuda(v, name, "v");
  cuda::check_on_cuda(lse, name, "lse");
  TSTL_CHECK(lse.dtype() == DType::F32, "flash_attention (CUDA): lse must be f32, got ", dtype_name(lse.dtype()));
  if (slopes.defined()) {
    cuda::check_on_cuda(slopes, name, "alibi_slopes");
    TSTL_CHECK(slopes.dtype() == DType::F32, "flash_attention (CUDA): alibi_slopes must be f32, got ",
               dtype_name(slopes.dtype()));
  }
  if (logn.defined()) {
    cuda::check_on_cuda(logn, name, "logn");
    TSTL_CHECK(logn.dtype() == DType::F32, "flash_attention (CUDA): logn must be f32, got ", dtype_name(logn.dtype()));
  }
}

template <class From, class To>
__global__ void convert_kernel(const From* __restrict__ src, To* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    cuda::store(dst, i, cuda::load(src, i));
}

}  // namespace

void flash_convert_cuda(const Tensor& src, Tensor& dst) {
  cuda::check_on_cuda(src, "flash_attention (cuDNN)", "input");
  cuda::check_on_cuda(dst, "flash_attention (cuDNN)", "output");
  TSTL_CHECK(src.numel() == dst.numel(), "flash_convert_cuda: ", src.numel(), " elements into ", dst.numel());
  const int64_t n = src.numel();
  const auto run = [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    convert_kernel<From, To>
        <<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(src.data<From>(), dst.data<To>(), n);
    CUDA_CHECK_LAUNCH();
  };
  if (src.dtype() == DType::F32 && dst.dtype() == DType::BF16) return run(float{}, bf16{});
  if (src.dtype() == DType::BF16 && dst.dtype() == DType::F32) return run(bf16{}, float{});
  TSTL_FAIL("flash_convert_cuda: converts f32 <-> bf16, got ", dtype_name(src.dtype()), " -> ",
            dtype_name(dst.dtype()));
}

size_t device_smem_optin() {
  static std::mutex mutex;
  static std::map<int, size_t> by_device;  // device ordinal -> bytes
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = by_device.find(device);
  if (it == by_device.end()) {
    int bytes = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    it = by_device.emplace(device, static_cast<size_t>(bytes)).first;
  }
  return it->second;
}

namespace {
// cp.async moves 16-byte chunks: every row must start on a 16-byte boundary.
bool mma_aligned(const Tensor& q, const Tensor& k, const Tensor& v) {
  for (const Tensor* t : {&q, &k, &v})
    if (reinterpret_cast<uintptr_t>(t->data<bf16>()) % 16 != 0) return false;
  return true;
}
}  // namespace

bool flash_mma_forward_supported(const Tensor& q, const Tensor& k, const Tensor& v) {
  return q.dtype() == DType::BF16 && flash_tiles::mma_forward_head_dim(q.size(3), device_smem_optin()) &&
         mma_aligned(q, k, v);
}
bool flash_mma_backward_supported(const Tensor& q, const Tensor& k, const Tensor& v) {
  return q.dtype() == DType::BF16 && flash_tiles::mma_backward_head_dim(q.size(3), device_smem_optin()) &&
         mma_aligned(q, k, v);
}

void flash_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                        int64_t query_offset, double scale, Tensor& o, Tensor& lse) {
  check_inputs(q, k, v, slopes, logn, lse);
  cuda::check_on_cuda(o, "flash_attention", "o");
  if (q.size(2) <= kFlashDecodeMaxQueries)
    return flash_forward_decode_cuda(q, k, v, slopes, logn, query_offset, scale, o, lse);
  if (flash_mma_forward_supported(q, k, v))
    return flash_forward_mma(q, k, v, slopes, logn, query_offset, scale, o, lse);
  visit_flash_dtype(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    FlashParams<T, float> p = make_params<T>(q, k, v, slopes, logn, query_offset, scale, lse);
    p.o = o.data<T>();
    visit_head_dim(p.head_dim, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      visit_rows<D>(flash_tiles::SimtKernel::kForward, [&](auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        constexpr int64_t outer = Config<D, R>::kOuter;
        p.block_q = outer;
        p.block_k = kInner;
        const unsigned blocks = block_count(p.batch * p.heads * ((p.n_queries + outer - 1) / outer), "forward");
        TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
          TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] {
            launch(flash_forward_kernel<T, D, R, HasAlibi, HasLogn>, blocks,
                   flash_tiles::simt_smem(flash_tiles::SimtKernel::kForward, D, R), p);
          });
        });
      });
    });
  });
}

void flash_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                         int64_t query_offset, double scale, const Tensor& o, const Tensor& lse, const Tensor& d_o,
                         Tensor& dq, Tensor& dk, Tensor& dv) {
  check_inputs(q, k, v, slopes, logn, lse);
  cuda::check_on_cuda(o, "flash_attention backward", "o");
  cuda::check_on_cuda(d_o, "flash_attention backward", "dO");
  if (flash_mma_backward_supported(q, k, v))
    return flash_backward_mma(q, k, v, slopes, logn, query_offset, scale, o, lse, d_o, dq, dk, dv);
  const int64_t rows = q.numel() / q.size(3);
  Tensor delta = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, Device::CUDA);  // (B, H, N)
  visit_flash_dtype(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    FlashParams<T, float> p = make_params<T>(q, k, v, slopes, logn, query_offset, scale, lse);
    p.o = const_cast<T*>(o.data<T>());  // read only in backward
    p.d_o = d_o.data<T>();
    p.dq = dq.data<T>();
    p.dk = dk.data<T>();
    p.dv = dv.data<T>();
    constexpr int kRowsPerBlock = cuda::kBlock / kWarp;
    flash_delta_kernel<T><<<cuda::grid_for(rows, kRowsPerBlock), cuda::kBlock, 0, cuda::stream()>>>(
        o.data<T>(), d_o.data<T>(), delta.data<float>(), rows, p.head_dim);
    CUDA_CHECK_LAUNCH();
    const float* pdelta = delta.data<float>();
    visit_head_dim(p.head_dim, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      visit_rows<D>(flash_tiles::SimtKernel::kDq, [&](auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        constexpr int64_t outer = Config<D, R>::kOuter;
        const unsigned blocks = block_count(p.batch * p.heads * ((p.n_queries + outer - 1) / outer), "dQ");
        TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
          TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] {
            launch(flash_dq_kernel<T, D, R, HasAlibi, HasLogn>, blocks,
                   flash_tiles::simt_smem(flash_tiles::SimtKernel::kDq, D, R), p, pdelta);
          });
        });
      });
      visit_rows<D>(flash_tiles::SimtKernel::kDkDv, [&](auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        constexpr int64_t outer = Config<D, R>::kOuter;
        const unsigned blocks = block_count(p.batch * p.heads * ((p.n_keys + outer - 1) / outer), "dK/dV");
        TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
          TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] {
            launch(flash_dkdv_kernel<T, D, R, HasAlibi, HasLogn>, blocks,
                   flash_tiles::simt_smem(flash_tiles::SimtKernel::kDkDv, D, R), p, pdelta);
          });
        });
      });
    });
  });
}

}  // namespace tstl::kernels
