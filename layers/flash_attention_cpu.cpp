// Flash attention on the CPU: the forward and backward kernels (OpenMP), the input checks and the
// autograd node. The math is in layers/flash_attention.h; the formulas in attention-variants.md.
//
// Accumulation is in double for f32 and f64 inputs alike: the CPU backend is the reference the
// CUDA kernels (fp32 accumulation) are compared with.
//
// Memory: besides the inputs, the outputs and LSE (B, H, N), the forward uses per thread only
//   q_tile (Bq, d), kt_tile (d, Bk), v_tile (Bk, d), s_tile (Bq, Bk), o_acc (Bq, d), 3 x (Bq)
// and the backward per thread the same kinds of tiles plus delta (N) and dq_acc (N, d) for the
// (b, h) it is working on. Nothing is N x M: the scores exist one Bq x Bk tile at a time.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/kernels.h"
#include "layers/flash_attention.h"

namespace tstl {

namespace {

using Acc = double;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiny problems (finite-difference checks, single-token decoding of a small model) run on one
// thread: waking a thread team costs more than the work.
template <class T>
bool worth_threads(const FlashParams<T>& p) {
  return p.batch * p.heads * p.n_queries * p.n_keys * p.head_dim >= (int64_t{1} << 16);
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
    std::vector<Acc> q_tile(block_q * d);        // (Bq, d) the tile's queries
    std::vector<Acc> kt_tile(d * block_k);       // (d, Bk) keys, transposed: the score loop runs along keys
    std::vector<Acc> v_tile(block_k * d);        // (Bk, d)
    std::vector<Acc> s_tile(block_q * block_k);  // (Bq, Bk) logits, then exp(logit - running max)
    std::vector<Acc> o_acc(block_q * d);         // (Bq, d) unnormalised output
    std::vector<Acc> row_max(block_q), row_sum(block_q), row_scale(block_q);  // (Bq)
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads; ++h) {
        for (int64_t tile = 0; tile < q_tiles; ++tile) {
          const int64_t n0 = tile * block_q, rows = std::min(block_q, p.n_queries - n0);
          const Acc slope = flash_head_slope<HasAlibi, Acc>(p, h);
          for (int64_t i = 0; i < rows; ++i) {
            const T* q_row = p.q + p.q_index(b, h, n0 + i);
            for (int64_t c = 0; c < d; ++c) q_tile[i * d + c] = static_cast<Acc>(q_row[c]);
            row_max[i] = -INFINITY;
            row_sum[i] = 0;
            row_scale[i] = flash_row_scale<HasLogn, Acc>(p, n0 + i);
          }
          std::fill(o_acc.begin(), o_acc.end(), Acc(0));
          const int64_t key_end = flash_key_end(p.query_offset, n0 + rows, p.n_keys);
          for (int64_t j0 = 0; j0 < key_end; j0 += block_k) {
            const int64_t cols = std::min(block_k, key_end - j0);
            for (int64_t j = 0; j < cols; ++j) {
              const T* k_row = p.k + p.kv_index(b, h, j0 + j);
              const T* v_row = p.v + p.kv_index(b, h, j0 + j);
              for (int64_t c = 0; c < d; ++c) {
                kt_tile[c * block_k + j] = static_cast<Acc>(k_row[c]);
                v_tile[j * d + c] = static_cast<Acc>(v_row[c]);
              }
            }
            for (int64_t i = 0; i < rows; ++i) {
              Acc* s = s_tile.data() + i * block_k;  // (Bk) this row's logits
              std::fill(s, s + cols, Acc(0));
              for (int64_t c = 0; c < d; ++c) {
                const Acc qc = q_tile[i * d + c];
                const Acc* kt = kt_tile.data() + c * block_k;
                for (int64_t j = 0; j < cols; ++j) s[j] += qc * kt[j];
              }
              const int64_t query_pos = p.query_offset + n0 + i;
              for (int64_t j = 0; j < cols; ++j) s[j] = flash_logit<HasAlibi>(s[j], row_scale[i], slope, query_pos, j0 + j);
              const Acc correction = flash_online_softmax_update(s, cols, row_max[i], row_sum[i]);
              Acc* o = o_acc.data() + i * d;  // (d)
              for (int64_t c = 0; c < d; ++c) o[c] *= correction;
              for (int64_t j = 0; j < cols; ++j) {
                const Acc pj = s[j];
                const Acc* v_row = v_tile.data() + j * d;
                for (int64_t c = 0; c < d; ++c) o[c] += pj * v_row[c];
              }
            }
          }
          for (int64_t i = 0; i < rows; ++i) {
            const Acc inv_sum = row_sum[i] > 0 ? Acc(1) / row_sum[i] : Acc(0);
            T* o_row = p.o + p.q_index(b, h, n0 + i);
            for (int64_t c = 0; c < d; ++c) o_row[c] = static_cast<T>(o_acc[i * d + c] * inv_sum);
            p.lse[p.lse_index(b, h, n0 + i)] = static_cast<T>(flash_row_lse(row_max[i], row_sum[i]));
          }
        }
      }
    }
  }
}

// ---- Backward: parallel over (batch, head) -----------------------------------------------------
// One task owns the whole (b, h): it walks key tiles (dK, dV of a key tile complete in one
// visit) and, inside, the query tiles that see them, accumulating dQ in dq_acc (N, d). No two
// tasks touch the same dQ/dK/dV rows, so there are no races and no atomics, and the summation
// order is fixed: results are bitwise reproducible.
template <class T, bool HasAlibi, bool HasLogn>
void flash_backward_cpu(const FlashParams<T>& p) {
  const int64_t d = p.head_dim, block_q = p.block_q, block_k = p.block_k, n_queries = p.n_queries;
#pragma omp parallel if (worth_threads(p))
  {
    std::vector<Acc> delta(n_queries);           // (N) D = rowsum(dO * O)
    std::vector<Acc> dq_acc(n_queries * d);      // (N, d) dQ of the current (b, h)
    std::vector<Acc> k_tile(block_k * d);        // (Bk, d)
    std::vector<Acc> kt_tile(d * block_k);       // (d, Bk) keys, transposed
    std::vector<Acc> vt_tile(d * block_k);       // (d, Bk) values, transposed
    std::vector<Acc> dk_acc(block_k * d);        // (Bk, d)
    std::vector<Acc> dv_acc(block_k * d);        // (Bk, d)
    std::vector<Acc> q_tile(block_q * d);        // (Bq, d)
    std::vector<Acc> do_tile(block_q * d);       // (Bq, d)
    std::vector<Acc> p_tile(block_q * block_k);  // (Bq, Bk) probabilities P
    std::vector<Acc> dp_tile(block_q * block_k); // (Bq, Bk) dP = dO V^T, then dL/d(q.k)
    std::vector<Acc> row_scale(block_q), row_lse(block_q);  // (Bq)
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const Acc slope = flash_head_slope<HasAlibi, Acc>(p, h);
        for (int64_t n = 0; n < n_queries; ++n) {
          const T* o_row = p.o + p.q_index(b, h, n);
          const T* do_row = p.d_o + p.q_index(b, h, n);
          Acc sum = 0;
          for (int64_t c = 0; c < d; ++c) sum += static_cast<Acc>(do_row[c]) * static_cast<Acc>(o_row[c]);
          delta[n] = sum;
        }
        std::fill(dq_acc.begin(), dq_acc.end(), Acc(0));
        for (int64_t j0 = 0; j0 < p.n_keys; j0 += block_k) {
          const int64_t cols = std::min(block_k, p.n_keys - j0);
          for (int64_t j = 0; j < cols; ++j) {
            const T* k_row = p.k + p.kv_index(b, h, j0 + j);
            const T* v_row = p.v + p.kv_index(b, h, j0 + j);
            for (int64_t c = 0; c < d; ++c) {
              k_tile[j * d + c] = static_cast<Acc>(k_row[c]);
              kt_tile[c * block_k + j] = static_cast<Acc>(k_row[c]);
              vt_tile[c * block_k + j] = static_cast<Acc>(v_row[c]);
            }
          }
          std::fill(dk_acc.begin(), dk_acc.end(), Acc(0));
          std::fill(dv_acc.begin(), dv_acc.end(), Acc(0));
          // Query row n sees key j0 iff query_offset + n >= j0: earlier rows contribute nothing.
          const int64_t first_row = std::max<int64_t>(0, j0 - p.query_offset);
          for (int64_t n0 = first_row; n0 < n_queries; n0 += block_q) {
            const int64_t rows = std::min(block_q, n_queries - n0);
            for (int64_t i = 0; i < rows; ++i) {
              const T* q_row = p.q + p.q_index(b, h, n0 + i);
              const T* do_row = p.d_o + p.q_index(b, h, n0 + i);
              for (int64_t c = 0; c < d; ++c) {
                q_tile[i * d + c] = static_cast<Acc>(q_row[c]);
                do_tile[i * d + c] = static_cast<Acc>(do_row[c]);
              }
              row_scale[i] = flash_row_scale<HasLogn, Acc>(p, n0 + i);
              row_lse[i] = static_cast<Acc>(p.lse[p.lse_index(b, h, n0 + i)]);
            }
            for (int64_t i = 0; i < rows; ++i) {
              Acc* s = p_tile.data() + i * block_k;    // (Bk) logits, then P
              Acc* dp = dp_tile.data() + i * block_k;  // (Bk) dP
              std::fill(s, s + cols, Acc(0));
              std::fill(dp, dp + cols, Acc(0));
              for (int64_t c = 0; c < d; ++c) {
                const Acc qc = q_tile[i * d + c], doc = do_tile[i * d + c];
                const Acc* kt = kt_tile.data() + c * block_k;
                const Acc* vt = vt_tile.data() + c * block_k;
                for (int64_t j = 0; j < cols; ++j) {
                  s[j] += qc * kt[j];
                  dp[j] += doc * vt[j];
                }
              }
              const int64_t query_pos = p.query_offset + n0 + i;
              for (int64_t j = 0; j < cols; ++j) {
                s[j] = flash_probability(flash_logit<HasAlibi>(s[j], row_scale[i], slope, query_pos, j0 + j), row_lse[i]);
                dp[j] = flash_dot_grad(s[j], dp[j], delta[n0 + i], row_scale[i]);
              }
            }
            // dV += P^T dO, dK += G^T Q, dQ += G K with G = dL/d(q.k) (in dp_tile).
            for (int64_t i = 0; i < rows; ++i) {
              const Acc* p_row = p_tile.data() + i * block_k;
              const Acc* g_row = dp_tile.data() + i * block_k;
              const Acc* q_row = q_tile.data() + i * d;
              const Acc* do_row = do_tile.data() + i * d;
              Acc* dq_row = dq_acc.data() + (n0 + i) * d;
              for (int64_t j = 0; j < cols; ++j) {
                const Acc pij = p_row[j], gij = g_row[j];
                const Acc* k_row = k_tile.data() + j * d;
                Acc* dv_row = dv_acc.data() + j * d;
                Acc* dk_row = dk_acc.data() + j * d;
                for (int64_t c = 0; c < d; ++c) {
                  dv_row[c] += pij * do_row[c];
                  dk_row[c] += gij * q_row[c];
                  dq_row[c] += gij * k_row[c];
                }
              }
            }
          }
          for (int64_t j = 0; j < cols; ++j) {
            T* dk_row = p.dk + p.kv_index(b, h, j0 + j);
            T* dv_row = p.dv + p.kv_index(b, h, j0 + j);
            for (int64_t c = 0; c < d; ++c) {
              dk_row[c] = static_cast<T>(dk_acc[j * d + c]);
              dv_row[c] = static_cast<T>(dv_acc[j * d + c]);
            }
          }
        }
        for (int64_t n = 0; n < n_queries; ++n) {
          T* dq_row = p.dq + p.q_index(b, h, n);
          for (int64_t c = 0; c < d; ++c) dq_row[c] = static_cast<T>(dq_acc[n * d + c]);
        }
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
  p.q = t.q.data<T>();
  p.k = t.k.data<T>();
  p.v = t.v.data<T>();
  p.o = t.o.data<T>();
  p.lse = t.lse.data<T>();
  p.has_alibi = t.slopes.defined();
  p.has_logn = t.logn.defined();
  if (p.has_alibi) p.alibi_slopes = t.slopes.data<T>();
  if (p.has_logn) p.logn = t.logn.data<T>();
  p.batch = t.q.size(0);
  p.heads = t.q.size(1);
  p.n_queries = t.q.size(2);
  p.n_keys = t.k.size(2);
  p.head_dim = t.q.size(3);
  p.q_row_stride = p.head_dim;
  p.q_head_stride = p.n_queries * p.head_dim;
  p.q_batch_stride = p.heads * p.q_head_stride;
  p.kv_row_stride = p.head_dim;
  p.kv_head_stride = p.n_keys * p.head_dim;
  p.kv_batch_stride = p.heads * p.kv_head_stride;
  p.lse_head_stride = p.n_queries;
  p.lse_batch_stride = p.heads * p.n_queries;
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

// The constant per-head / per-row tensors in the given dtype (a copy only when it differs).
Tensor as_dtype(const Tensor& t, DType dtype) {
  if (!t.defined()) return Tensor();
  return t.dtype() == dtype ? t.detach() : t.to(dtype);
}

}  // namespace

int64_t check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor* v, const AttentionOptions& opt,
                               const char* op) {
  TSTL_CHECK(q.dim() == 4, op, ": q must be (B, H, N, d), got ", shape_str(q.shape()));
  TSTL_CHECK(k.dim() == 4, op, ": k must be (B, H, M, d), got ", shape_str(k.shape()));
  TSTL_CHECK(q.dtype() == DType::F32 || q.dtype() == DType::F64 || (q.dtype() == DType::BF16 && q.device() == Device::CUDA),
             op, ": expected f32 or f64 tensors (bf16 on CUDA), got ", dtype_name(q.dtype()), " on ",
             device_name(q.device()));
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
  TSTL_CHECK(tiles.block_q >= 1 && tiles.block_k >= 1, "flash_attention: tile sizes (", tiles.block_q, ", ",
             tiles.block_k, ") must be positive");
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
      run_forward(make_params<T>(t, query_offset, scale, tiles));
    });
  }
  Tensor out = t.o;
  if (needs_grad({&q, &k, &v})) {
    t.o = t.o.detach();  // the node must not own its own output (a cycle)
    record(out, "flash_attention", {q, k, v}, [t, query_offset, scale, tiles](const Tensor& grad_out) {
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
        FlashParams<T> p = make_params<T>(t, query_offset, scale, tiles);
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
