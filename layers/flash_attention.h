// Flash attention: causal softmax attention with optional ALiBi bias and per-row log-n factors,
// as one autograd node that never materialises the N x M score matrix (docs/variants.md, docs/attention.md).
//
//   q (B, H, N, d), k (B, H, M, d), v (B, H, M, d)  ->  O (B, H, N, d)
//   query row n sits at absolute position p = query_offset + n (default M - N: the queries are
//   the last N of the M keys, as in KV-cache decoding); key j sits at position j.
//   S[n, j] = logn[n] * scale * (q_n . k_j) - m_h * (p - j)    for j <= p, -inf otherwise
//   O[n]    = sum_j softmax_j(S[n, :]) v_j
// The ALiBi term is never scaled; logn is 1 when absent. The -m(p-j) form (not +m j) keeps the
// logits bounded at long lengths.
//
// Forward: tiles of queries x keys with an online softmax (FlashAttention-2); saves O and the row
// log-sum-exp LSE (B, H, N) in the input's float type (f32 or f64). The CPU kernels compute the
// tile products with BLAS and mirror the per-element functions below in vectorised row loops.
// Backward: D = rowsum(dO * O), then per tile P = exp(S - LSE), dP = dO V^T, dS = P (dP - D), and
//   dV = P^T dO,  dQ = (logn * scale) dS K,  dK = dS^T ((logn * scale) Q).
// Gradient contract: dQ, dK, dV are returned freshly written; alibi slopes and log-n factors are
// constants (no gradient).
//
// The per-element math below is TSTL_HD so the CUDA kernels call the same functions as the CPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

// Which kernel computes the attention ([model] attention_backend, docs/attention.md): tstl's own
// flash kernels (every variant, CPU and CUDA), or cuDNN's fused SDPA (CUDA only, through
// layers/flash_attention_cudnn.h) for what it covers: no log-n, offset M - N, and ALiBi only
// with cuDNN's own slopes 2^(-8h/H) (the caller checks the slopes: the decoder does).
enum class AttentionBackend { Tstl, Cudnn };
AttentionBackend parse_attention_backend(const std::string& name);  // "tstl" | "cudnn", else throws
const char* attention_backend_name(AttentionBackend backend);

struct AttentionOptions {
  double scale = 1.0;
  Tensor alibi_slopes;        // (H) or undefined: m_h, subtracted as m_h * (p - j)
  Tensor logn;                // (N) per-query-row factor or undefined (treated as 1)
  int64_t query_offset = -1;  // absolute position of query row 0; -1 means M - N
  AttentionBackend backend = AttentionBackend::Tstl;
};

// Tile sizes of the kernel (queries x keys per tile). Tests pass small ones to cover partial tiles.
// By default the query tile follows the shape: 32 rows for N <= 256 queries (the causal blocks on
// the diagonal skip more masked work, which pays at training lengths), 64 above; 128 keys. These
// were the fastest f32 CPU tilings measured for d = 32 and 64 (docs/performance.md). The choice
// depends on the shape only, never on the thread count.
struct FlashTiles {
  static constexpr int64_t kByShape = -1;
  int64_t block_q = kByShape;
  int64_t block_k = 128;
};

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                       const FlashTiles& tiles = FlashTiles{});

// Checks q (B, H, N, d), k (B, H, M, d), v (B, H, M, d) when defined, and the options (slopes (H),
// logn (N), query_offset >= 0); throws naming `op` and the offending shape. Returns the resolved
// query offset (M - N when opt.query_offset is -1).
int64_t check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor* v, const AttentionOptions& opt,
                               const char* op);

// ---- Kernel parameters --------------------------------------------------------------------------

// Pointers, strides (in elements) and sizes of one flash call, after FlashAttention-2's
// Flash_fwd_params / Flash_bwd_params. T is the element type (float, double; bf16 on CUDA) and
// S the type of the per-row/per-head statistics and constants (LSE, slopes, log-n): T itself on
// the CPU, float for bf16 activations on CUDA.
template <class T, class S = T>
struct FlashParams {
  const T* q = nullptr;  // (B, H, N, d)
  const T* k = nullptr;  // (B, H, M, d)
  const T* v = nullptr;  // (B, H, M, d)
  T* o = nullptr;        // (B, H, N, d)
  S* lse = nullptr;      // (B, H, N) row log-sum-exp of S
  const S* alibi_slopes = nullptr;  // (H) when has_alibi
  const S* logn = nullptr;          // (N) when has_logn
  // Backward only.
  const T* d_o = nullptr;  // (B, H, N, d) dL/dO
  T* dq = nullptr;         // (B, H, N, d)
  T* dk = nullptr;         // (B, H, M, d)
  T* dv = nullptr;         // (B, H, M, d)

  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;    // for q, o, d_o, dq
  int64_t kv_batch_stride = 0, kv_head_stride = 0, kv_row_stride = 0; // for k, v, dk, dv
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  int64_t batch = 0, heads = 0, n_queries = 0, n_keys = 0, head_dim = 0;
  int64_t query_offset = 0;  // position of query row 0
  int64_t block_q = 64, block_k = 64;
  double scale = 1.0;
  bool has_alibi = false, has_logn = false;

  // Host: the inputs' pointers, the flags, sizes and strides of contiguous q (B, H, N, d), k, v
  // (B, H, M, d) and lse (B, H, N); slopes (H) and logn (N) may be undefined. The output and
  // gradient pointers, query offset, scale and tiles are the caller's.
  void set_contiguous(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t, const Tensor& slopes_t,
                      const Tensor& logn_t, const Tensor& lse_t) {
    q = q_t.data<T>();
    k = k_t.data<T>();
    v = v_t.data<T>();
    lse = lse_t.data<S>();
    has_alibi = slopes_t.defined();
    has_logn = logn_t.defined();
    if (has_alibi) alibi_slopes = slopes_t.data<S>();
    if (has_logn) logn = logn_t.data<S>();
    batch = q_t.size(0);
    heads = q_t.size(1);
    n_queries = q_t.size(2);
    n_keys = k_t.size(2);
    head_dim = q_t.size(3);
    q_row_stride = head_dim;
    q_head_stride = n_queries * head_dim;
    q_batch_stride = heads * q_head_stride;
    kv_row_stride = head_dim;
    kv_head_stride = n_keys * head_dim;
    kv_batch_stride = heads * kv_head_stride;
    lse_head_stride = n_queries;
    lse_batch_stride = heads * n_queries;
  }

  TSTL_HD int64_t q_index(int64_t b, int64_t h, int64_t n) const {
    return b * q_batch_stride + h * q_head_stride + n * q_row_stride;
  }
  TSTL_HD int64_t kv_index(int64_t b, int64_t h, int64_t j) const {
    return b * kv_batch_stride + h * kv_head_stride + j * kv_row_stride;
  }
  TSTL_HD int64_t lse_index(int64_t b, int64_t h, int64_t n) const {
    return b * lse_batch_stride + h * lse_head_stride + n;
  }
};

// ---- Per-element math (shared by CPU and CUDA) --------------------------------------------------

// Causal visibility: key position j is seen by the query at position p iff j <= p.
TSTL_HD bool flash_key_visible(int64_t query_pos, int64_t key_pos) { return key_pos <= query_pos; }

// One past the last key visible to any query row in [row_begin, row_end), clipped to M.
TSTL_HD int64_t flash_key_end(int64_t query_offset, int64_t row_end, int64_t n_keys) {
  const int64_t end = query_offset + row_end;  // last visible position is query_offset + row_end - 1
  return end < n_keys ? end : n_keys;
}

// The factor multiplying q_n . k_j for query row n: scale, times logn[n] when present.
template <bool HasLogn, class Acc, class T, class S>
TSTL_HD Acc flash_row_scale(const FlashParams<T, S>& params, int64_t n) {
  const Acc scale = static_cast<Acc>(params.scale);
  if constexpr (HasLogn) return scale * static_cast<Acc>(params.logn[n]);
  return scale;
}

// The ALiBi slope of head h (0 without ALiBi).
template <bool HasAlibi, class Acc, class T, class S>
TSTL_HD Acc flash_head_slope(const FlashParams<T, S>& params, int64_t h) {
  if constexpr (HasAlibi) return static_cast<Acc>(params.alibi_slopes[h]);
  return Acc(0);
}

// The logit S[n, j] from the raw dot product q_n . k_j; -inf where the key is masked.
template <bool HasAlibi, class Acc>
TSTL_HD Acc flash_logit(Acc dot, Acc row_scale, Acc slope, int64_t query_pos, int64_t key_pos) {
  if (!flash_key_visible(query_pos, key_pos)) return -INFINITY;
  Acc s = row_scale * dot;
  if constexpr (HasAlibi) s -= slope * static_cast<Acc>(query_pos - key_pos);
  return s;
}

// The online-softmax update of one row by one tile (FlashAttention-2): folds the logits
// s[0..count) into the running maximum and sum, overwrites s with exp(s - new_max), and returns
// exp(old_max - new_max), the factor by which the row's output accumulator must be rescaled.
// A row with no visible key so far keeps max -inf and sum 0 (shift 0 avoids inf - inf).
template <class Acc>
TSTL_HD Acc flash_online_softmax_update(Acc* s, int64_t count, Acc& row_max, Acc& row_sum) {
  Acc tile_max = row_max;
  for (int64_t j = 0; j < count; ++j) tile_max = s[j] > tile_max ? s[j] : tile_max;
  const Acc shift = tile_max == -INFINITY ? Acc(0) : tile_max;
  const Acc correction = exp(row_max - shift);  // exp(-inf) = 0 on the first visible tile
  Acc tile_sum = 0;
  for (int64_t j = 0; j < count; ++j) {
    s[j] = exp(s[j] - shift);
    tile_sum += s[j];
  }
  row_sum = row_sum * correction + tile_sum;
  row_max = tile_max;
  return correction;
}

// The row's log-sum-exp once every tile is folded in: row_max + log(row_sum).
template <class Acc>
TSTL_HD Acc flash_row_lse(Acc row_max, Acc row_sum) {
  return row_sum > Acc(0) ? row_max + log(row_sum) : Acc(INFINITY);  // +inf: P = 0 on an empty row
}

// The probability recomputed in backward: P[n, j] = exp(S[n, j] - LSE[n]) (0 where masked).
template <class Acc>
TSTL_HD Acc flash_probability(Acc logit, Acc lse) {
  return logit == -INFINITY ? Acc(0) : exp(logit - lse);
}

// dL/d(q_n . k_j) from P, dP = dO_n . v_j and D_n = dO_n . O_n: the softmax backward
// dS = P (dP - D), times the row's scale (the ALiBi bias is constant, so it drops out).
template <class Acc>
TSTL_HD Acc flash_dot_grad(Acc p, Acc dp, Acc delta, Acc row_scale) {
  return p * (dp - delta) * row_scale;
}

// ---- Split-key decoding (flash-decoding; layers/flash_decode_cuda.cu) ---------------------------
// For a few query rows against a long key cache, the visible keys [0, key_end) are split into
// chunks folded independently (each into its own max, sum and output by
// flash_online_softmax_update), and the chunks' results merged afterwards. A chunk's result is
// its log-sum-exp and its normalised output o / sum; the merge is
//   LSE = log sum_s exp(lse_s),   O = sum_s exp(lse_s - LSE) o_s,
// which equals the unsplit softmax exactly (up to rounding) for any split.

struct FlashKeyRange {
  int64_t begin, end;  // keys [begin, end), empty when begin >= end
};
// Chunk `split` of the keys [0, key_end) in chunks of keys_per_split.
TSTL_HD FlashKeyRange flash_split_range(int64_t split, int64_t keys_per_split, int64_t key_end) {
  const int64_t begin = split * keys_per_split, end = begin + keys_per_split;
  return {begin, end < key_end ? end : key_end};
}
// The log-sum-exp of a chunk's state; -inf for a chunk without a visible key (weight 0 below).
template <class Acc>
TSTL_HD Acc flash_partial_lse(Acc row_max, Acc row_sum) {
  return row_sum > Acc(0) ? row_max + log(row_sum) : Acc(-INFINITY);
}
// The merged LSE of `count` chunk LSEs lse[0], lse[stride], ...; +inf when every chunk is empty
// (flash_row_lse's convention for a row without keys).
template <class Acc>
TSTL_HD Acc flash_merged_lse(const Acc* lse, int64_t count, int64_t stride) {
  Acc max = -INFINITY;
  for (int64_t s = 0; s < count; ++s) max = lse[s * stride] > max ? lse[s * stride] : max;
  if (max == -INFINITY) return Acc(INFINITY);
  Acc sum = 0;
  for (int64_t s = 0; s < count; ++s) sum += exp(lse[s * stride] - max);
  return max + log(sum);
}
// The weight of a chunk's normalised output in the merged one: exp(lse_s - LSE), 0 when empty.
template <class Acc>
TSTL_HD Acc flash_partial_weight(Acc partial_lse, Acc merged_lse) {
  return partial_lse == -INFINITY ? Acc(0) : exp(partial_lse - merged_lse);
}

// ---- CUDA kernels (layers/flash_attention_cuda.cu) ----------------------------------------------
// q (B, H, N, d), k, v (B, H, M, d) in f32 or bf16 with d <= 256; slopes (H) and logn (N) f32 or
// undefined; o (B, H, N, d) in q's dtype and lse (B, H, N) f32, written. The tile sizes are the
// kernels' own (FlashTiles shapes only the CPU kernel). Backward writes dq, dk, dv (=) in q's dtype.
namespace kernels {
void flash_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                        int64_t query_offset, double scale, Tensor& o, Tensor& lse);
void flash_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes, const Tensor& logn,
                         int64_t query_offset, double scale, const Tensor& o, const Tensor& lse, const Tensor& d_o,
                         Tensor& dq, Tensor& dk, Tensor& dv);
// dst = src converted between f32 and bf16 on the device (same shape, contiguous): the cudnn
// backend's bf16 copies of f32 activations without a trip through the host.
void flash_convert_cuda(const Tensor& src, Tensor& dst);
// The forward of calls with N <= kFlashDecodeMaxQueries query rows (decoding), taken by
// flash_forward_cuda: SIMT kernels (layers/flash_decode_cuda.cu) that split the keys over blocks
// (the split/merge above) and merge the chunks in a second kernel. Same contract and outputs.
constexpr int64_t kFlashDecodeMaxQueries = 4;
void flash_forward_decode_cuda(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slopes,
                               const Tensor& logn, int64_t query_offset, double scale, Tensor& o, Tensor& lse);
}  // namespace kernels

}  // namespace tstl

// Runs the lambda body with NAME a constexpr bool equal to COND (FlashAttention-2's
// BOOL_SWITCH): each runtime flag becomes a template parameter, so kernels are branch-free.
#define TSTL_FLASH_BOOL_SWITCH(COND, NAME, ...) \
  [&] {                                         \
    if (COND) {                                 \
      constexpr bool NAME = true;               \
      return __VA_ARGS__();                     \
    } else {                                    \
      constexpr bool NAME = false;              \
      return __VA_ARGS__();                     \
    }                                           \
  }()
