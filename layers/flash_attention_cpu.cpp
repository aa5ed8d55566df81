// Flash attention on the CPU: the forward and backward kernels (OpenMP + BLAS on tiles), the
// input checks and the autograd node. The math is in layers/flash_attention.h; the formulas in
// docs/variants.md.
//
// Every tile product (S = Q K^T, O += P V, dP = dO V^T, dV += P^T dO, dK += dS^T Q, dQ += dS K)
// is one cblas_sgemm / cblas_dgemm reading q, k, v, dO straight from the (B, H, N, d) tensors.
// OpenBLAS called inside an active OpenMP parallel region runs on the calling thread, so the
// threads split the tiles and each gemm is single-threaded. The per-row work between the gemms
// (logits with scale, log-n and ALiBi; row max; exp; the softmax gradient) runs in contiguous,
// branch-free loops that mirror the TSTL_HD functions of the header; for f32 they are compiled
// for AVX-512, AVX2 and baseline x86-64 and picked once from the CPU's features, with an exp
// polynomial accurate to ~1.5 ulp (vectorised; libm's expf is not).
//
// Precision: products and the online-softmax state (row max, output accumulator) are in the
// input's type (f32 or f64); row sums, D = rowsum(dO * O) and the final LSE/normalisation are in
// double. The causal mask only costs work on the tiles that cross the diagonal.
//
// Memory: besides the inputs, the outputs and LSE (B, H, N), the forward uses per thread only
//   s_tile (Bq, Bk), o_acc (Bq, d) and a few (Bq) / (Bk) rows,
// the backward per thread p_tile (Bq, Bk) and g_tile (Bq, Bk), plus D (B, H, N) shared. Nothing
// is N x M: the scores exist one Bq x Bk tile at a time.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "layers/flash_attention.h"
#include "layers/flash_attention_cudnn.h"
#include "layers/flash_attention_cpu_rows.h"

namespace tstl {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiny problems (finite-difference checks, single-token decoding of a small model) run on one
// thread: waking a thread team costs more than the work.
template <class T>
bool worth_threads(const FlashParams<T>& p) {
  return p.batch * p.heads * p.n_queries * p.n_keys * p.head_dim >= (int64_t{1} << 16);
}

// With at least this many (b, h) pairs the backward gives each thread whole heads (dQ accumulated
// in the same walk as dK, dV: 5 products per tile); with fewer, it splits heads into key tiles
// and runs a second pass for dQ (7 products per tile, but every core busy at B H = 1). The choice
// depends on the problem only, never on the thread count, so results are reproducible.
constexpr int64_t kWholeHeadBackwardMinPairs = 8;

// ---- BLAS on row-major tiles ----------------------------------------------------------------
// C (m, n) = alpha op(A) op(B) + beta C, op(A) (m, k), op(B) (k, n); ld* are row strides.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// Keys of the tile starting at key0 visible to the query at query_pos: a prefix of length
// clamp(query_pos - key0 + 1, 0, cols) (flash_key_visible); 0 < prefix < cols only on the diagonal.
int64_t visible_prefix(int64_t query_pos, int64_t key0, int64_t cols) {
  return std::clamp<int64_t>(query_pos - key0 + 1, 0, cols);
}

// ---- Forward: parallel over (batch, head, query tile) -------------------------------------------
// Each task owns its query rows of O and LSE, so tasks never write the same memory and each
// task's arithmetic is sequential: results do not depend on the thread count or timing.
template <class T, bool HasAlibi, bool HasLogn>
void flash_forward_cpu(const FlashParams<T>& p) {
  const int64_t d = p.head_dim, block_q = p.block_q, block_k = p.block_k;
  const int64_t q_tiles = ceil_div(p.n_queries, block_q);
#pragma omp parallel if (worth_threads(p))
  {
    std::vector<T> s_tile(block_q * block_k);  // (Bq, Bk) logits, then exp(logit - running max)
    std::vector<T> o_acc(block_q * d);         // (Bq, d) unnormalised output
    std::vector<T> row_max(block_q), row_scale(block_q);  // (Bq)
    std::vector<double> row_sum(block_q);                 // (Bq)
    std::vector<T> key_index(block_k);                    // (Bk) 0, 1, 2, ...
    std::iota(key_index.begin(), key_index.end(), T(0));
    const RowKernels<T> kern;
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads; ++h) {
        for (int64_t tile = 0; tile < q_tiles; ++tile) {
          const int64_t n0 = tile * block_q, rows = std::min(block_q, p.n_queries - n0);
          const T slope = flash_head_slope<HasAlibi, T>(p, h);
          const T* q_tile = p.q + p.q_index(b, h, n0);  // (rows, d), row stride q_row_stride
          for (int64_t i = 0; i < rows; ++i) {
            row_max[i] = -INFINITY;
            row_sum[i] = 0;
            row_scale[i] = flash_row_scale<HasLogn, T>(p, n0 + i);
          }
          std::fill(o_acc.begin(), o_acc.end(), T(0));
          const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
          for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
            const int64_t cols = std::min(block_k, key_end - j0);
            const T* k_tile = p.k + p.kv_index(b, h, j0);  // (cols, d)
            const T* v_tile = p.v + p.kv_index(b, h, j0);  // (cols, d)
            gemm(false, true, rows, cols, d, T(1), q_tile, p.q_row_stride, k_tile, p.kv_row_stride, T(0),
                 s_tile.data(), block_k);
            for (int64_t i = 0; i < rows; ++i) {
              T* s = s_tile.data() + i * block_k;  // (cols) this row's logits, then probabilities
              const int64_t query_pos = p.query_offset + n0 + i;
              const int64_t visible = visible_prefix(query_pos, j0, cols);
              // flash_online_softmax_update over the visible keys; masked keys get P = 0.
              const T tile_max = std::max(
                  row_max[i], kern.logits_row(s, visible, row_scale[i], HasAlibi, slope, T(query_pos - j0), key_index.data()));
              const T shift = tile_max == -INFINITY ? T(0) : tile_max;
              const T correction = std::exp(row_max[i] - shift);
              const T tile_sum = kern.exp_shift_sum(s, visible, shift);
              std::fill(s + visible, s + cols, T(0));
              row_sum[i] = row_sum[i] * static_cast<double>(correction) + static_cast<double>(tile_sum);
              row_max[i] = tile_max;
              T* o = o_acc.data() + i * d;  // (d)
              if (correction != T(1))
                for (int64_t c = 0; c < d; ++c) o[c] *= correction;
            }
            gemm(false, false, rows, d, cols, T(1), s_tile.data(), block_k, v_tile, p.kv_row_stride, T(1),
                 o_acc.data(), d);
          }
          for (int64_t i = 0; i < rows; ++i) {
            const double inv_sum = row_sum[i] > 0 ? 1.0 / row_sum[i] : 0.0;
            T* o_row = p.o + p.q_index(b, h, n0 + i);
            for (int64_t c = 0; c < d; ++c) o_row[c] = static_cast<T>(o_acc[i * d + c] * inv_sum);
            p.lse[p.lse_index(b, h, n0 + i)] = static_cast<T>(flash_row_lse(static_cast<double>(row_max[i]), row_sum[i]));
          }
        }
      }
    }
  }
}

// ---- Backward -----------------------------------------------------------------------------------

// Per-thread scratch of the backward.
template <class T>
struct BackwardScratch {
  std::vector<T> p_tile;     // (Bq, Bk) logits, then P
  std::vector<T> g_tile;     // (Bq, Bk) dP = dO V^T, then G = dL/d(q.k)
  std::vector<T> key_index;  // (Bk) 0, 1, 2, ...
  RowKernels<T> kern;
  explicit BackwardScratch(const FlashParams<T>& p)
      : p_tile(p.block_q * p.block_k), g_tile(p.block_q * p.block_k), key_index(p.block_k) {
    std::iota(key_index.begin(), key_index.end(), T(0));
  }
};

// Of the `cols` keys of the tile at j0, how many the query rows n0 .. n0 + rows - 1 see: the keys
// past the last row's causal limit are masked for every row of the block, so the block's products
// stop there (on the diagonal tiles this skips up to half of the work). Both backward walks
// (whole heads and split) call it for the same blocks, so their sums stay the same bits.
template <class T>
int64_t block_keys_seen(const FlashParams<T>& p, int64_t n0, int64_t rows, int64_t j0, int64_t cols) {
  return std::min(cols, flash_key_end(p.query_offset, n0 + rows, p.n_keys) - j0);
}

// P and G of the block (query tile at n0, key tile at j0) of head (b, h) into the scratch:
// S = Q K^T, P = exp(S - LSE), dP = dO V^T, G = P (dP - D) logn scale; 0 where masked.
// `delta` is D (N) of this head.
template <class T, bool HasAlibi, bool HasLogn>
void backward_block(const FlashParams<T>& p, int64_t b, int64_t h, int64_t n0, int64_t rows, int64_t j0,
                    int64_t cols, const T* delta, BackwardScratch<T>& w) {
  const int64_t d = p.head_dim, block_k = p.block_k;
  const T slope = flash_head_slope<HasAlibi, T>(p, h);
  gemm(false, true, rows, cols, d, T(1), p.q + p.q_index(b, h, n0), p.q_row_stride, p.k + p.kv_index(b, h, j0),
       p.kv_row_stride, T(0), w.p_tile.data(), block_k);
  gemm(false, true, rows, cols, d, T(1), p.d_o + p.q_index(b, h, n0), p.q_row_stride, p.v + p.kv_index(b, h, j0),
       p.kv_row_stride, T(0), w.g_tile.data(), block_k);
  for (int64_t i = 0; i < rows; ++i) {
    T* s = w.p_tile.data() + i * block_k;  // (cols)
    T* g = w.g_tile.data() + i * block_k;  // (cols)
    const int64_t query_pos = p.query_offset + n0 + i;
    const int64_t visible = visible_prefix(query_pos, j0, cols);
    const T row_scale = flash_row_scale<HasLogn, T>(p, n0 + i);
    w.kern.logits_row(s, visible, row_scale, HasAlibi, slope, T(query_pos - j0), w.key_index.data());
    w.kern.exp_shift_sum(s, visible, p.lse[p.lse_index(b, h, n0 + i)]);  // flash_probability
    w.kern.dot_grad_row(g, s, visible, delta[n0 + i], row_scale);
    std::fill(s + visible, s + cols, T(0));
    std::fill(g + visible, g + cols, T(0));
  }
}

// dK, dV of key tile `key_tile` of head (b, h), over every query tile that sees it, in ascending
// order; with `dq_too` also adds each block's G K into dQ (which the caller zeroed).
template <class T, bool HasAlibi, bool HasLogn>
void backward_key_tile(const FlashParams<T>& p, int64_t b, int64_t h, int64_t key_tile, const T* delta, bool dq_too,
                       BackwardScratch<T>& w) {
  const int64_t d = p.head_dim, block_q = p.block_q, block_k = p.block_k;
  const int64_t j0 = key_tile * block_k, cols = std::min(block_k, p.n_keys - j0);
  const T* k_tile = p.k + p.kv_index(b, h, j0);  // (cols, d)
  T* dk_tile = p.dk + p.kv_index(b, h, j0);      // (cols, d)
  T* dv_tile = p.dv + p.kv_index(b, h, j0);      // (cols, d)
  for (int64_t j = 0; j < cols; ++j) {
    std::fill(dk_tile + j * p.kv_row_stride, dk_tile + j * p.kv_row_stride + d, T(0));
    std::fill(dv_tile + j * p.kv_row_stride, dv_tile + j * p.kv_row_stride + d, T(0));
  }
  // Query row n sees key j0 iff query_offset + n >= j0: earlier query tiles contribute nothing.
  const int64_t first_tile = std::max<int64_t>(0, j0 - p.query_offset) / block_q;
  for (int64_t n0 = first_tile * block_q; n0 < p.n_queries; n0 += block_q) {
    const int64_t rows = std::min(block_q, p.n_queries - n0);
    const int64_t seen = block_keys_seen(p, n0, rows, j0, cols);
    backward_block<T, HasAlibi, HasLogn>(p, b, h, n0, rows, j0, seen, delta, w);
    const int64_t q_at = p.q_index(b, h, n0);
    gemm(true, false, seen, d, rows, T(1), w.p_tile.data(), block_k, p.d_o + q_at, p.q_row_stride, T(1), dv_tile,
         p.kv_row_stride);  // dV += P^T dO
    gemm(true, false, seen, d, rows, T(1), w.g_tile.data(), block_k, p.q + q_at, p.q_row_stride, T(1), dk_tile,
         p.kv_row_stride);  // dK += G^T Q
    if (dq_too)
      gemm(false, false, rows, d, seen, T(1), w.g_tile.data(), block_k, k_tile, p.kv_row_stride, T(1), p.dq + q_at,
           p.q_row_stride);  // dQ += G K
  }
}

// dQ of query tile `query_tile` of head (b, h): the blocks of backward_key_tile in the same
// (ascending key tile) order, so the sums match the whole-head walk bit for bit.
template <class T, bool HasAlibi, bool HasLogn>
void backward_query_tile(const FlashParams<T>& p, int64_t b, int64_t h, int64_t query_tile, const T* delta,
                         BackwardScratch<T>& w) {
  const int64_t d = p.head_dim, block_k = p.block_k;
  const int64_t n0 = query_tile * p.block_q, rows = std::min(p.block_q, p.n_queries - n0);
  T* dq_tile = p.dq + p.q_index(b, h, n0);  // (rows, d)
  for (int64_t i = 0; i < rows; ++i) std::fill(dq_tile + i * p.q_row_stride, dq_tile + i * p.q_row_stride + d, T(0));
  const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
  for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
    const int64_t seen = block_keys_seen(p, n0, rows, j0, std::min(block_k, p.n_keys - j0));
    backward_block<T, HasAlibi, HasLogn>(p, b, h, n0, rows, j0, seen, delta, w);
    gemm(false, false, rows, d, seen, T(1), w.g_tile.data(), block_k, p.k + p.kv_index(b, h, j0), p.kv_row_stride,
         T(1), dq_tile, p.q_row_stride);
  }
}

// D = rowsum(dO * O) (B, H, N) in double, then the (b, h) or (b, h, tile) tasks. Every task owns
// the dQ/dK/dV rows it writes and sums in a fixed order: no atomics, bitwise reproducible.
template <class T, bool HasAlibi, bool HasLogn>
void flash_backward_cpu(const FlashParams<T>& p) {
  const int64_t d = p.head_dim, n_queries = p.n_queries, pairs = p.batch * p.heads;
  const int64_t q_tiles = ceil_div(n_queries, p.block_q), k_tiles = ceil_div(p.n_keys, p.block_k);
  std::vector<T> delta(pairs * n_queries);  // (B, H, N)
  const bool threads = worth_threads(p);
#pragma omp parallel for collapse(2) if (threads)
  for (int64_t bh = 0; bh < pairs; ++bh) {
    for (int64_t n = 0; n < n_queries; ++n) {
      const int64_t at = p.q_index(bh / p.heads, bh % p.heads, n);
      double sum = 0;
      for (int64_t c = 0; c < d; ++c) sum += static_cast<double>(p.d_o[at + c]) * static_cast<double>(p.o[at + c]);
      delta[bh * n_queries + n] = static_cast<T>(sum);
    }
  }
  if (pairs >= kWholeHeadBackwardMinPairs) {
#pragma omp parallel if (threads)
    {
      BackwardScratch<T> w(p);
#pragma omp for schedule(dynamic)
      for (int64_t bh = 0; bh < pairs; ++bh) {
        const int64_t b = bh / p.heads, h = bh % p.heads;
        for (int64_t n = 0; n < n_queries; ++n) std::fill_n(p.dq + p.q_index(b, h, n), d, T(0));
        for (int64_t key_tile = 0; key_tile < k_tiles; ++key_tile)
          backward_key_tile<T, HasAlibi, HasLogn>(p, b, h, key_tile, delta.data() + bh * n_queries, true, w);
      }
    }
  } else {
#pragma omp parallel if (threads)
    {
      BackwardScratch<T> w(p);
#pragma omp for schedule(dynamic) nowait
      for (int64_t task = 0; task < pairs * k_tiles; ++task) {
        const int64_t bh = task / k_tiles;
        backward_key_tile<T, HasAlibi, HasLogn>(p, bh / p.heads, bh % p.heads, task % k_tiles,
                                                delta.data() + bh * n_queries, false, w);
      }
#pragma omp for schedule(dynamic)
      for (int64_t task = 0; task < pairs * q_tiles; ++task) {
        const int64_t bh = task / q_tiles;
        backward_query_tile<T, HasAlibi, HasLogn>(p, bh / p.heads, bh % p.heads, task % q_tiles,
                                                  delta.data() + bh * n_queries, w);
      }
    }
  }
}

// ---- Launchers --------------------------------------------------------------------------------

// The saved state of one call: what the kernels read, and the backward's node keeps.
struct FlashTensors {
  Tensor q, k, v, o, lse, slopes, logn;  // slopes, logn undefined when absent
};

template <class T>
FlashParams<T> make_params(const FlashTensors& t, int64_t query_offset, double scale, const FlashTiles& tiles) {
  FlashParams<T> p;
  p.set_contiguous(t.q, t.k, t.v, t.slopes, t.logn, t.lse);
  p.o = t.o.data<T>();
  p.query_offset = query_offset;
  p.block_q = tiles.block_q;
  p.block_k = tiles.block_k;
  p.scale = scale;
  return p;
}

template <class T>
void run_forward(const FlashParams<T>& p) {
  TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
    TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] { flash_forward_cpu<T, HasAlibi, HasLogn>(p); });
  });
}

template <class T>
void run_backward(const FlashParams<T>& p) {
  TSTL_FLASH_BOOL_SWITCH(p.has_alibi, HasAlibi, [&] {
    TSTL_FLASH_BOOL_SWITCH(p.has_logn, HasLogn, [&] { flash_backward_cpu<T, HasAlibi, HasLogn>(p); });
  });
}

// The CUDA kernels (layers/flash_attention_cuda.cu) take the tensors themselves.
void run_forward_cuda(FlashTensors& t, int64_t query_offset, double scale) {
#ifdef TSTL_WITH_CUDA
  kernels::flash_forward_cuda(t.q, t.k, t.v, t.slopes, t.logn, query_offset, scale, t.o, t.lse);
#else
  (void)t, (void)query_offset, (void)scale;
  kernels::cuda_not_compiled("flash_attention");
#endif
}

void run_backward_cuda(const FlashTensors& t, int64_t query_offset, double scale, const Tensor& d_o, Tensor& dq,
                       Tensor& dk, Tensor& dv) {
#ifdef TSTL_WITH_CUDA
  kernels::flash_backward_cuda(t.q, t.k, t.v, t.slopes, t.logn, query_offset, scale, t.o, t.lse, d_o, dq, dk, dv);
#else
  (void)t, (void)query_offset, (void)scale, (void)d_o, (void)dq, (void)dk, (void)dv;
  kernels::cuda_not_compiled("flash_attention");
#endif
}

// t in `dtype` (t itself, detached, when it is already; undefined stays undefined): f32 <-> bf16
// of CUDA tensors on the device, anything else through Tensor::to.
Tensor as_dtype(const Tensor& t, DType dtype) {
  if (!t.defined()) return Tensor();
  if (t.dtype() == dtype) return t.detach();
#ifdef TSTL_WITH_CUDA
  const bool f32_bf16 = (t.dtype() == DType::F32 && dtype == DType::BF16) ||
                        (t.dtype() == DType::BF16 && dtype == DType::F32);
  if (t.device() == Device::CUDA && f32_bf16) {
    Tensor out = Tensor::empty(t.shape(), dtype, t.device());
    kernels::flash_convert_cuda(t, out);
    return out;
  }
#endif
  return t.to(dtype);
}

// attention_backend = cudnn: cuDNN's fused SDPA on bf16 copies of q, k, v (the activations'
// dtype when they are bf16 already), O and the gradients returned in the inputs' dtype.
Tensor flash_attention_cudnn(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                             int64_t query_offset) {
  const char* key = "model.attention_backend = cudnn";
  TSTL_CHECK(q.device() == Device::CUDA, key, " runs on CUDA only, but the attention inputs are on ",
             device_name(q.device()), "; set train.device = cuda or attention_backend = tstl");
  TSTL_CHECK(kernels::cudnn_attention_available(), key, ": this tstl was built without the cuDNN frontend "
             "(scripts/install-deps installs it next to cuDNN; then reconfigure), use attention_backend = tstl");
  TSTL_CHECK(!opt.logn.defined(), key, " does not cover log-n scaling (cuDNN's SDPA has no per-row logit "
             "factor): use attention_backend = tstl with model.logn or --logn");
  TSTL_CHECK(query_offset == k.size(2) - q.size(2), key, " needs the queries at the end of the keys (offset M - N = ",
             k.size(2) - q.size(2), "), got query_offset ", query_offset);
  const DType io = q.dtype();
  const Tensor qb = as_dtype(q, DType::BF16), kb = as_dtype(k, DType::BF16), vb = as_dtype(v, DType::BF16);
  const bool alibi = opt.alibi_slopes.defined();
  const double scale = opt.scale;
  Tensor o = Tensor::empty(q.shape(), DType::BF16, q.device());                        // (B, H, N, d)
  Tensor lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, DType::F32, q.device());  // (B, H, N)
  kernels::cudnn_attention_forward(qb, kb, vb, scale, alibi, o, lse);
  Tensor out = io == DType::BF16 ? o : as_dtype(o, io);
  if (needs_grad({&q, &k, &v})) {
    const Tensor o_saved = o.detach();  // the node must not own its own output (a cycle) when io is bf16
    record(out, "flash_attention (cuDNN)", {q, k, v},
           [qb, kb, vb, o_saved, lse, scale, alibi, io](const Tensor& grad_out) {
      const Tensor d_o = as_dtype(grad_out, DType::BF16);
      Tensor dq = Tensor::empty(qb.shape(), DType::BF16, qb.device());  // (B, H, N, d)
      Tensor dk = Tensor::empty(kb.shape(), DType::BF16, kb.device());  // (B, H, M, d)
      Tensor dv = Tensor::empty(vb.shape(), DType::BF16, vb.device());  // (B, H, M, d)
      kernels::cudnn_attention_backward(qb, kb, vb, o_saved, lse, d_o, scale, alibi, dq, dk, dv);
      if (io == DType::BF16) return std::vector<Tensor>{dq, dk, dv};
      return std::vector<Tensor>{as_dtype(dq, io), as_dtype(dk, io), as_dtype(dv, io)};
    });
  }
  return out;
}

}  // namespace

AttentionBackend parse_attention_backend(const std::string& name) {
  if (name == "tstl") return AttentionBackend::Tstl;
  if (name == "cudnn") return AttentionBackend::Cudnn;
  TSTL_FAIL("model.attention_backend: expected tstl or cudnn, got '", name, "'");
}

const char* attention_backend_name(AttentionBackend backend) {
  return backend == AttentionBackend::Cudnn ? "cudnn" : "tstl";
}

int64_t check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor* v, const AttentionOptions& opt,
                               const char* op) {
  TSTL_CHECK(q.dim() == 4, op, ": q must be (B, H, N, d), got ", shape_str(q.shape()));
  TSTL_CHECK(k.dim() == 4, op, ": k must be (B, H, M, d), got ", shape_str(k.shape()));
  TSTL_CHECK(q.dtype() == DType::F32 || q.dtype() == DType::F64 || q.dtype() == DType::BF16, op,
             ": expected f32, f64 or bf16 tensors, got ", dtype_name(q.dtype()), " on ", device_name(q.device()));
  check_same_dtype(q, k, op);
  check_same_device(q, k, op);
  const int64_t batch = q.size(0), heads = q.size(1), n_queries = q.size(2), head_dim = q.size(3);
  const int64_t n_keys = k.size(2);
  TSTL_CHECK(batch >= 1 && heads >= 1 && n_queries >= 1 && head_dim >= 1 && n_keys >= 1, op,
             ": empty attention: q ", shape_str(q.shape()), ", k ", shape_str(k.shape()));
  TSTL_CHECK(k.size(0) == batch && k.size(1) == heads && k.size(3) == head_dim, op, ": k ", shape_str(k.shape()),
             " does not match q ", shape_str(q.shape()), " (expected (B, H, M, d) with q's B, H, d)");
  if (v) {
    check_same_dtype(q, *v, op);
    check_same_device(q, *v, op);
    check_shape(*v, k.shape(), op, "v");
  }
  if (opt.alibi_slopes.defined()) {
    TSTL_CHECK(opt.alibi_slopes.dim() == 1 && opt.alibi_slopes.size(0) == heads, op, ": alibi_slopes ",
               shape_str(opt.alibi_slopes.shape()), " must be (H) = (", heads, ")");
    TSTL_CHECK(dtype_is_float(opt.alibi_slopes.dtype()), op, ": alibi_slopes must be floating, got ",
               dtype_name(opt.alibi_slopes.dtype()));
    check_same_device(q, opt.alibi_slopes, op);
  }
  if (opt.logn.defined()) {
    TSTL_CHECK(opt.logn.dim() == 1 && opt.logn.size(0) == n_queries, op, ": logn ", shape_str(opt.logn.shape()),
               " must be (N) = (", n_queries, "), one factor per query row");
    TSTL_CHECK(dtype_is_float(opt.logn.dtype()), op, ": logn must be floating, got ", dtype_name(opt.logn.dtype()));
    check_same_device(q, opt.logn, op);
  }
  TSTL_CHECK(opt.query_offset >= -1, op, ": query_offset ", opt.query_offset, " must be >= 0 (or -1 for M - N)");
  const int64_t offset = opt.query_offset == -1 ? n_keys - n_queries : opt.query_offset;
  TSTL_CHECK(offset >= 0, op, ": query offset ", offset, " (N = ", n_queries, ", M = ", n_keys,
             ") is negative: every query row must see at least key 0, so pass N <= M or query_offset >= 0");
  return offset;
}

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                       const FlashTiles& tiles) {
  const int64_t query_offset = check_attention_inputs(q, k, &v, opt, "flash_attention");
  if (opt.backend == AttentionBackend::Cudnn) return flash_attention_cudnn(q, k, v, opt, query_offset);
  TSTL_CHECK((tiles.block_q >= 1 || tiles.block_q == FlashTiles::kByShape) && tiles.block_k >= 1,
             "flash_attention: tile sizes (", tiles.block_q, ", ", tiles.block_k, ") must be positive");
  const FlashTiles tiles_used{tiles.block_q == FlashTiles::kByShape ? (q.size(2) <= 256 ? 32 : 64) : tiles.block_q,
                              tiles.block_k};
  // bf16 on the CPU: the f32 kernels on widened q, k, v (P and the statistics stay f32, as in the
  // CUDA kernels); the output rounded to bf16.
  if (is_bf16_on_cpu(q))
    return round_to_bf16(flash_attention(widen_bf16(q), widen_bf16(k), widen_bf16(v), opt, tiles));
  const bool on_cuda = q.device() == Device::CUDA;
  // Statistics and constants: in the inputs' dtype on the CPU, f32 on CUDA (also for bf16).
  const DType stat_dtype = on_cuda ? DType::F32 : q.dtype();
  FlashTensors t;
  t.q = q.detach();
  t.k = k.detach();
  t.v = v.detach();
  t.slopes = as_dtype(opt.alibi_slopes, stat_dtype);
  t.logn = as_dtype(opt.logn, stat_dtype);
  t.o = Tensor::empty(q.shape(), q.dtype(), q.device());                          // (B, H, N, d)
  t.lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, stat_dtype, q.device());  // (B, H, N)
  const double scale = opt.scale;
  if (on_cuda) {
    run_forward_cuda(t, query_offset, scale);
  } else {
    visit_float(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      run_forward(make_params<T>(t, query_offset, scale, tiles_used));
    });
  }
  Tensor out = t.o;
  if (needs_grad({&q, &k, &v})) {
    t.o = t.o.detach();  // the node must not own its own output (a cycle)
    record(out, "flash_attention", {q, k, v}, [t, query_offset, scale, tiles_used](const Tensor& grad_out) {
      check_same_dtype(grad_out, t.o, "flash_attention backward");
      check_shape(grad_out, t.o.shape(), "flash_attention backward", "dO");
      Tensor dq = Tensor::empty(t.q.shape(), t.q.dtype(), t.q.device());  // (B, H, N, d)
      Tensor dk = Tensor::empty(t.k.shape(), t.k.dtype(), t.k.device());  // (B, H, M, d)
      Tensor dv = Tensor::empty(t.v.shape(), t.v.dtype(), t.v.device());  // (B, H, M, d)
      if (t.q.device() == Device::CUDA) {
        run_backward_cuda(t, query_offset, scale, grad_out, dq, dk, dv);
        return std::vector<Tensor>{dq, dk, dv};
      }
      visit_float(t.q.dtype(), [&](auto tag) {
        using T = decltype(tag);
        FlashParams<T> p = make_params<T>(t, query_offset, scale, tiles_used);
        p.d_o = grad_out.data<T>();
        p.dq = dq.data<T>();
        p.dk = dk.data<T>();
        p.dv = dv.data<T>();
        run_backward(p);
      });
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return out;
}

}  // namespace tstl
