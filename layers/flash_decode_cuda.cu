// Flash attention forward for decoding: N <= kFlashDecodeMaxQueries query rows (one new token, or
// a few) against a long key cache (flash-decoding). A 64-row query tile would leave the tensor
// cores or the SIMT kernel's warps idle and walk all M keys in one block per head; instead
//
//   (1) flash_decode_split_kernel: one block per (b, h, key chunk); its 4 warps take the chunk's
//       keys in turn (key j to warp j % 4), each lane a slice of the head dim (dims lane + 32 t),
//       so every K and V row is read coalesced once for all the query rows. Per key and row: the
//       dot product by a warp reduction, the logit (scale, log-n, ALiBi, causal mask: the TSTL_HD
//       flash_logit), and the online-softmax update of flash_online_softmax_update with a tile of
//       one key. The four warps' states are merged in shared memory; the block writes its
//       chunk's LSE and normalised output (f32).
//   (2) flash_decode_merge_kernel: one block per (b, h, row): LSE = log sum_s exp(lse_s),
//       O = sum_s exp(lse_s - LSE) o_s, written in q's dtype, LSE in f32.
// The split and merge are the TSTL_HD functions of layers/flash_attention.h ("Split-key
// decoding"), emulated on the CPU by tests/layers/test_flash_decode.cpp; the split size is
// layers/flash_tiles.h's decode_keys_per_split. f32 and bf16, head dims up to 256 (buckets 64,
// 128, 256, unused dims zero), every variant. O and LSE satisfy flash_forward_cuda's contract,
// so the backward (the ordinary kernels) works on them unchanged.
#include <cmath>

#include "core/cuda_context.h"
#include "layers/flash_attention.h"
#include "layers/flash_params_cuda.h"
#include "layers/flash_tiles.h"

namespace tstl::kernels {

namespace {

using cuda::kWarp;
constexpr int kWarps = flash_tiles::kWarps;
constexpr int kThreads = kWarps * kWarp;

// kRows query rows per block: 1 (one new token, the common case) or kFlashDecodeMaxQueries.
// The explicit minimum of one block per SM: without it ptxas (CUDA 13, sm_90) capped the
// <bf16, 128, 4, -, log-n> instantiation at 64 registers and spilled 12 bytes.
template <class T, int D, int kRows, bool HasAlibi, bool HasLogn>
__global__ void __launch_bounds__(kThreads, 1)
    flash_decode_split_kernel(const FlashParams<T, float> p, int64_t splits, int64_t keys_per_split,
                              float* __restrict__ part_o,    // (B, H, splits, N, d) normalised chunk outputs
                              float* __restrict__ part_lse)  // (B, H, splits, N) chunk LSEs
{
  constexpr int S = D / kWarp;
  __shared__ float warp_lse[kWarps][kRows];   // each warp's LSE per row
  __shared__ float warp_o[kWarps][kRows][D];  // each warp's normalised output per row
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t bh = blockIdx.x / splits, split = blockIdx.x % splits;
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const int n_rows = static_cast<int>(p.n_queries), d = static_cast<int>(p.head_dim);
  const int64_t key_end = flash_key_end(p.query_offset, p.n_queries, p.n_keys);
  const FlashKeyRange range = flash_split_range(split, keys_per_split, key_end);

  const float slope = flash_head_slope<HasAlibi, float>(p, h);
  float q[kRows][S], o[kRows][S], row_max[kRows], row_sum[kRows], row_scale[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const bool row_valid = r < n_rows;
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
    row_scale[r] = row_valid ? flash_row_scale<HasLogn, float>(p, r) : 0.f;
    const int64_t base = row_valid ? p.q_index(b, h, r) : 0;
#pragma unroll
    for (int t = 0; t < S; ++t) {
      const int c = lane + kWarp * t;
      q[r][t] = row_valid && c < d ? static_cast<float>(cuda::load(p.q, base + c)) : 0.f;
      o[r][t] = 0.f;
    }
  }
  for (int64_t j = range.begin + warp; j < range.end; j += kWarps) {
    const int64_t base = p.kv_index(b, h, j);
    float key[S], value[S];
#pragma unroll
    for (int t = 0; t < S; ++t) {
      const int c = lane + kWarp * t;
      key[t] = c < d ? static_cast<float>(cuda::load(p.k, base + c)) : 0.f;
      value[t] = c < d ? static_cast<float>(cuda::load(p.v, base + c)) : 0.f;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float dot = 0.f;
#pragma unroll
      for (int t = 0; t < S; ++t) dot = fmaf(q[r][t], key[t], dot);
      dot = cuda::warp_sum(dot);  // every lane holds the sum
      float prob = r < n_rows ? flash_logit<HasAlibi>(dot, row_scale[r], slope, p.query_offset + r, j) : -INFINITY;
      const float correction = flash_online_softmax_update(&prob, 1, row_max[r], row_sum[r]);
#pragma unroll
      for (int t = 0; t < S; ++t) o[r][t] = fmaf(prob, value[t], o[r][t] * correction);
    }
  }
  // Merge the four warps' states (each a partial LSE and normalised output), as the chunks are
  // merged in (2).
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float inv_sum = row_sum[r] > 0.f ? 1.f / row_sum[r] : 0.f;
    if (lane == 0) warp_lse[warp][r] = flash_partial_lse(row_max[r], row_sum[r]);
#pragma unroll
    for (int t = 0; t < S; ++t) warp_o[warp][r][lane + kWarp * t] = o[r][t] * inv_sum;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < n_rows * d; idx += kThreads) {
    const int r = idx / d, c = idx % d;
    const float merged = flash_merged_lse(&warp_lse[0][r], kWarps, kRows);
    float value = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) value += flash_partial_weight(warp_lse[w][r], merged) * warp_o[w][r][c];
    const int64_t row = (bh * splits + split) * p.n_queries + r;  // (b, h, split, r)
    part_o[row * d + c] = value;
    // A chunk without a visible key keeps LSE -inf (not merged's +inf): it gets weight 0 in (2).
    if (c == 0) part_lse[row] = merged == INFINITY ? -INFINITY : merged;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    flash_decode_merge_kernel(const FlashParams<T, float> p, int64_t splits,
                              const float* __restrict__ part_o,    // (B, H, splits, N, d)
                              const float* __restrict__ part_lse)  // (B, H, splits, N)
{
  const int64_t bh = blockIdx.x / p.n_queries, r = blockIdx.x % p.n_queries;
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const int64_t first = bh * splits * p.n_queries + r;  // chunk s of this row at first + s N
  const float merged = flash_merged_lse(part_lse + first, splits, p.n_queries);
  const int64_t out = p.q_index(b, h, r);
  for (int64_t c = threadIdx.x; c < p.head_dim; c += kThreads) {
    float value = 0.f;
    for (int64_t s = 0; s < splits; ++s) {
      const int64_t row = first + s * p.n_queries;
      value += flash_partial_weight(part_lse[row], merged) * part_o[row * p.head_dim + c];
    }
    cuda::store(p.o, out + c, value);
  }
  if (threadIdx.x == 0) p.lse[p.lse_index(b, h, r)] = merged;
}

int multiprocessors() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

template <class T, int D>
void launch_decode(FlashParams<T, float>& p) {
  const int64_t bh = p.batch * p.heads;
  const int64_t key_end = flash_key_end(p.query_offset, p.n_queries, p.n_keys);
  const int64_t keys_per_split = flash_tiles::decode_keys_per_split(bh, key_end, multiprocessors());
  const int64_t splits = flash_tiles::decode_splits(key_end, keys_per_split);
  TSTL_CHECK(bh * splits <= 0x7fffffff && bh * p.n_queries <= 0x7fffffff,
             "flash_attention (CUDA, decoding): ", bh * splits, " blocks exceed the grid");
  Tensor part_o = Tensor::empty(Shape{p.batch, p.heads, splits, p.n_queries, p.head_dim}, DType::F32, Device::CUDA);
  Tensor part_lse = Tensor::empty(Shape{p.batch, p.heads, splits, p.n_queries}, DType::F32, Device::CUDA);
  TSTL_FLASH_BOOL_SWITCH(p.n_queries == 1, OneRow, [&] {
    constexpr int Rows = OneRow ? 1 : static_cast<int>(kFlashDecodeMaxQueries);
    TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
      TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] {
        flash_decode_split_kernel<T, D, Rows, HasAlibi, HasLogn>
            <<<static_cast<unsigned>(bh * splits), kThreads, 0, cuda::stream()>>>(
                p, splits, keys_per_split, part_o.data<float>(), part_lse.data<float>());
        CUDA_CHECK_LAUNCH();
      });
    });
  });
  flash_decode_merge_kernel<T><<<static_cast<unsigned>(bh * p.n_queries), kThreads, 0, cuda::stream()>>>(
      p, splits, part_o.data<float>(), part_lse.data<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void flash_forward_decode_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes,
                               const Tensor& logn, int64_t query_offset, double scale, Tensor& o, Tensor& lse) {
  TSTL_CHECK(q.size(2) <= kFlashDecodeMaxQueries, "flash_attention (CUDA, decoding): ", q.size(2),
             " query rows, at most ", kFlashDecodeMaxQueries);
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    FlashParams<T, float> p = make_params<T>(q, k, v, slopes, logn, query_offset, scale, lse);
    p.o = o.data<T>();
    if (p.head_dim <= 64) return launch_decode<T, 64>(p);
    if (p.head_dim <= 128) return launch_decode<T, 128>(p);
    if (p.head_dim <= 256) return launch_decode<T, 256>(p);
    TSTL_FAIL("flash_attention (CUDA, decoding): head dim ", p.head_dim, " is above the largest compiled one (256)");
  };
  switch (q.dtype()) {
    case DType::F32:
      run(float{});
      return;
    case DType::BF16:
      run(bf16{});
      return;
    default:
      TSTL_FAIL("flash_attention (CUDA, decoding): expected f32 or bf16 tensors, got ", dtype_name(q.dtype()));
  }
}

}  // namespace tstl::kernels
