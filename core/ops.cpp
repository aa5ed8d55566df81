// The autograd layer of the generic ops: shape checks, output allocation, the backend kernel, and
// the node with a closure that captures only what its backward needs.
#include "core/ops.h"

#include <algorithm>
#include <numeric>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/rng.h"

namespace tstl {

namespace {

bool is_row_of(const Tensor& b, const Tensor& a) {
  return b.dim() == 1 && a.dim() >= 1 && b.size(0) == a.size(-1) && b.shape() != a.shape();
}

void check_float(const Tensor& t, const char* op) {
  TSTL_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64 || t.dtype() == DType::BF16, op,
             ": expected a floating tensor (f32, f64 or bf16), got ", dtype_name(t.dtype()));
}

Tensor binary_op(kernels::Binary kind, const Tensor& a, const Tensor& b, const char* name) {
  check_same_device(a, b, name);
  check_same_dtype(a, b, name);
  check_float(a, name);
  if (is_bf16_on_cpu(a)) return round_to_bf16(binary_op(kind, widen_bf16(a), widen_bf16(b), name));
  const bool row = is_row_of(b, a);
  TSTL_CHECK(row || a.shape() == b.shape(), name, ": shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
             " do not match (b must equal a's shape or be a row of a's last size)");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  TSTL_ON_DEVICE(a, binary, kind, a, b, out);
  if (!needs_grad({&a, &b})) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  // Mul's backward needs the other operand; add and sub need nothing saved.
  Tensor keep_a = kind == kernels::Binary::Mul && gb ? a.detach() : Tensor();
  Tensor keep_b = kind == kernels::Binary::Mul && ga ? b.detach() : Tensor();
  const Shape b_shape = b.shape();
  record(out, name, {a, b}, [=](const Tensor& g) {
    Tensor da, db;
    if (ga) {
      if (kind == kernels::Binary::Mul) {
        da = Tensor::empty(g.shape(), g.dtype(), g.device());
        TSTL_ON_DEVICE(g, binary, kernels::Binary::Mul, g, keep_b, da);
      } else {
        da = g;
      }
    }
    if (gb) {
      Tensor full = g;
      if (kind == kernels::Binary::Mul) {
        full = Tensor::empty(g.shape(), g.dtype(), g.device());
        TSTL_ON_DEVICE(g, binary, kernels::Binary::Mul, g, keep_a, full);
      } else if (kind == kernels::Binary::Sub) {
        full = Tensor::empty(g.shape(), g.dtype(), g.device());
        TSTL_ON_DEVICE(g, scale, g, -1.0, full);
      }
      if (row) {
        db = Tensor::empty(b_shape, g.dtype(), g.device());
        TSTL_ON_DEVICE(g, sum_rows, full, db);
      } else {
        db = full;
      }
    }
    return std::vector<Tensor>{da, db};
  });
  return out;
}

}  // namespace

Tensor cast(const Tensor& x, DType dtype) {
  check_float(x, "cast");
  TSTL_CHECK(dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16,
             "cast: target dtype must be f32, f64 or bf16, got ", dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  TSTL_ON_DEVICE(x, cast, x, out);
  if (needs_grad({&x})) {
    const DType source = x.dtype();
    record(out, "cast", {x}, [source](const Tensor& g) {
      Tensor d = Tensor::empty(g.shape(), source, g.device());
      TSTL_ON_DEVICE(g, cast, g, d);
      return std::vector<Tensor>{d};
    });
  }
  return out;
}

bool is_bf16_on_cpu(const Tensor& t) { return t.defined() && t.dtype() == DType::BF16 && t.device() == Device::CPU; }
Tensor widen_bf16(const Tensor& t) { return t.defined() && t.dtype() == DType::BF16 ? cast(t, DType::F32) : t; }
Tensor round_to_bf16(const Tensor& t) { return cast(t, DType::BF16); }

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(kernels::Binary::Add, a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(kernels::Binary::Sub, a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(kernels::Binary::Mul, a, b, "mul"); }

Tensor scale(const Tensor& a, double s) {
  check_float(a, "scale");
  if (is_bf16_on_cpu(a)) return round_to_bf16(scale(widen_bf16(a), s));
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  TSTL_ON_DEVICE(a, scale, a, s, out);
  if (needs_grad({&a})) {
    record(out, "scale", {a}, [s](const Tensor& g) {
      Tensor d = Tensor::empty(g.shape(), g.dtype(), g.device());
      TSTL_ON_DEVICE(g, scale, g, s, d);
      return std::vector<Tensor>{d};
    });
  }
  return out;
}

Tensor gelu(const Tensor& x) {
  check_float(x, "gelu");
  if (is_bf16_on_cpu(x)) return round_to_bf16(gelu(widen_bf16(x)));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  TSTL_ON_DEVICE(x, gelu_forward, x, y);
  if (needs_grad({&x})) {
    Tensor saved = x.detach();
    record(y, "gelu", {x}, [saved](const Tensor& g) {
      Tensor d = Tensor::empty(g.shape(), g.dtype(), g.device());
      TSTL_ON_DEVICE(g, gelu_backward, saved, g, d);
      return std::vector<Tensor>{d};
    });
  }
  return y;
}

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  check_same_device(a, b, "matmul");
  check_same_dtype(a, b, "matmul");
  check_float(a, "matmul");
  // bf16 on the CPU: sgemm of the widened operands (fp32 accumulation), the product rounded once.
  if (is_bf16_on_cpu(a)) return round_to_bf16(matmul(widen_bf16(a), widen_bf16(b), transpose_a, transpose_b));
  TSTL_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need at least 2 dims, got ", shape_str(a.shape()),
             " and ", shape_str(b.shape()));
  const int64_t m = transpose_a ? a.size(-1) : a.size(-2), ka = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t kb = transpose_b ? b.size(-1) : b.size(-2), n = transpose_b ? b.size(-2) : b.size(-1);
  TSTL_CHECK(ka == kb, "matmul: inner sizes differ: ", shape_str(a.shape()), (transpose_a ? "^T" : ""), " x ",
             shape_str(b.shape()), (transpose_b ? "^T" : ""));
  const Shape batch_shape(a.shape().begin(), a.shape().end() - 2);
  const bool b_shared = b.dim() == 2;
  TSTL_CHECK(b_shared || Shape(b.shape().begin(), b.shape().end() - 2) == batch_shape,
             "matmul: b must be 2-D or have a's batch dims; got ", shape_str(a.shape()), " and ", shape_str(b.shape()));
  kernels::GemmArgs args;
  args.transpose_a = transpose_a;
  args.transpose_b = transpose_b;
  args.batch = shape_numel(batch_shape);
  args.m = m;
  args.n = n;
  args.k = ka;
  args.b_shared = b_shared;
  Shape out_shape = batch_shape;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor c = Tensor::empty(out_shape, a.dtype(), a.device());
  TSTL_ON_DEVICE(a, gemm, args, a, b, c);
  if (!needs_grad({&a, &b})) return c;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor keep_a = gb ? a.detach() : Tensor(), keep_b = ga ? b.detach() : Tensor();
  const Shape a_shape = a.shape(), b_shape = b.shape();
  record(c, "matmul", {a, b}, [=](const Tensor& g) {
    // With op(A) (M, K), op(B) (K, N): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC, each
    // transposed back when its operand was stored transposed.
    Tensor da, db;
    if (ga) {
      da = Tensor::empty(a_shape, g.dtype(), g.device());
      kernels::GemmArgs d = args;
      if (!transpose_a) {  // dA (M, K) = dC (M, N) op(B)^T
        d.m = m, d.n = ka, d.k = n, d.transpose_a = false, d.transpose_b = !transpose_b;
        TSTL_ON_DEVICE(g, gemm, d, g, keep_b, da);
      } else {  // dA (K, M) = op(B) (K, N) dC^T
        d.m = ka, d.n = m, d.k = n, d.transpose_a = transpose_b, d.transpose_b = true;
        d.a_shared = b_shared, d.b_shared = false;
        TSTL_ON_DEVICE(g, gemm, d, keep_b, g, da);
      }
    }
    if (gb) {
      db = Tensor::empty(b_shape, g.dtype(), g.device());
      kernels::GemmArgs d = args;
      d.b_shared = false;
      d.c_shared = b_shared;  // a shared B sums its gradient over the batch
      Tensor a2 = keep_a, g2 = g;
      int64_t rows = m;
      if (b_shared && !transpose_a && args.batch > 1) {  // fold the batch into the contraction
        a2 = keep_a.reshape({args.batch * m, ka});
        g2 = g.reshape({args.batch * m, n});
        rows = args.batch * m;
        d.batch = 1;
      }
      if (!transpose_b) {  // dB (K, N) = op(A)^T (K, M) dC (M, N)
        d.m = ka, d.n = n, d.k = rows, d.transpose_a = !transpose_a, d.transpose_b = false;
        TSTL_ON_DEVICE(g, gemm, d, a2, g2, db);
      } else {  // dB (N, K) = dC^T (N, M) op(A) (M, K)
        d.m = n, d.n = ka, d.k = rows, d.transpose_a = true, d.transpose_b = transpose_a;
        TSTL_ON_DEVICE(g, gemm, d, g2, a2, db);
      }
    }
    return std::vector<Tensor>{da, db};
  });
  return c;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  check_float(weight, "embedding");
  TSTL_CHECK(weight.dim() == 2, "embedding: weight must be (vocab, width), got ", shape_str(weight.shape()));
  TSTL_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, "embedding: ids must be i32 or i64, got ",
             dtype_name(ids.dtype()));
  check_same_device(weight, ids, "embedding");
  if (is_bf16_on_cpu(weight)) return round_to_bf16(embedding(widen_bf16(weight), ids));
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  TSTL_ON_DEVICE(weight, embedding_forward, weight, ids, out);
  if (needs_grad({&weight})) {
    Tensor saved_ids = ids.detach();
    const Shape w_shape = weight.shape();
    record(out, "embedding", {weight}, [saved_ids, w_shape](const Tensor& g) {
      Tensor dw = Tensor::zeros(w_shape, g.dtype(), g.device());
      TSTL_ON_DEVICE(g, embedding_backward, g, saved_ids, dw);
      return std::vector<Tensor>{dw};
    });
  }
  return out;
}

namespace {
Tensor reduce_all(const Tensor& x, double factor, const char* name) {
  check_float(x, name);
  if (is_bf16_on_cpu(x)) return round_to_bf16(reduce_all(widen_bf16(x), factor, name));
  Tensor total = Tensor::empty({}, x.dtype(), x.device());
  TSTL_ON_DEVICE(x, sum_all, x, total);
  Tensor out = factor == 1.0 ? total : scale(total, factor);
  if (needs_grad({&x})) {
    const Shape shape = x.shape();
    record(out, name, {x}, [shape, factor](const Tensor& g) {
      Tensor d = Tensor::empty(shape, g.dtype(), g.device());
      TSTL_ON_DEVICE(g, broadcast_scalar, g, factor, d);
      return std::vector<Tensor>{d};
    });
  }
  return out;
}
}  // namespace

Tensor sum(const Tensor& x) { return reduce_all(x, 1.0, "sum"); }
Tensor mean(const Tensor& x) {
  TSTL_CHECK(x.numel() > 0, "mean of an empty tensor");
  return reduce_all(x, 1.0 / static_cast<double>(x.numel()), "mean");
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  TSTL_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute: ", dims.size(), " dims for a tensor of rank ",
             x.dim());
  std::vector<int64_t> sorted = dims;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i)
    TSTL_CHECK(sorted[i] == static_cast<int64_t>(i), "permute: dims are not a permutation of 0..", x.dim() - 1);
  Shape out_shape;
  for (int64_t d : dims) out_shape.push_back(x.shape()[d]);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  TSTL_ON_DEVICE(x, permute, x, dims, out);
  if (needs_grad({&x})) {
    std::vector<int64_t> inverse(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inverse[dims[i]] = static_cast<int64_t>(i);
    record(out, "permute", {x}, [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  }
  return out;
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  TSTL_CHECK(d >= 0 && d < x.dim(), "narrow: dim ", dim, " out of range for ", shape_str(x.shape()));
  TSTL_CHECK(start >= 0 && length >= 0 && start + length <= x.shape()[d], "narrow: [", start, ", ", start + length,
             ") outside dimension ", d, " of size ", x.shape()[d]);
  Shape out_shape = x.shape();
  out_shape[d] = length;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  TSTL_ON_DEVICE(x, narrow, x, d, start, out, false);
  if (needs_grad({&x})) {
    const Shape in_shape = x.shape();
    record(out, "narrow", {x}, [in_shape, d, start](const Tensor& g) {
      Tensor dx = Tensor::zeros(in_shape, g.dtype(), g.device());
      Tensor gs = g;
      TSTL_ON_DEVICE(g, narrow, dx, d, start, gs, true);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& parts, int64_t dim) {
  TSTL_CHECK(!parts.empty(), "concat: no tensors");
  const Tensor& first = parts[0];
  const int64_t d = dim < 0 ? dim + first.dim() : dim;
  TSTL_CHECK(d >= 0 && d < first.dim(), "concat: dim ", dim, " out of range for ", shape_str(first.shape()));
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (const Tensor& p : parts) {
    check_same_device(first, p, "concat");
    check_same_dtype(first, p, "concat");
    Shape expect = first.shape();
    expect[d] = p.shape()[d];
    check_shape(p, expect, "concat", "a part");
    out_shape[d] += p.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> starts;
  int64_t start = 0;
  for (const Tensor& p : parts) {
    Tensor slice = p;
    TSTL_ON_DEVICE(out, narrow, out, d, start, slice, true);
    starts.push_back(start);
    start += p.shape()[d];
  }
  bool any = false;
  for (const Tensor& p : parts) any = any || (p.defined() && p.requires_grad());
  if (any && grad_mode_enabled()) {
    std::vector<int64_t> lengths;
    for (const Tensor& p : parts) lengths.push_back(p.shape()[d]);
    record(out, "concat", parts, [starts, lengths, d](const Tensor& g) {
      std::vector<Tensor> grads;
      for (size_t i = 0; i < starts.size(); ++i) grads.push_back(narrow(g, d, starts[i], lengths[i]));
      return grads;
    });
  }
  return out;
}

namespace {
void check_cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_float(logits, "cross_entropy");
  TSTL_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64,
             "cross_entropy: targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  check_same_device(logits, targets, "cross_entropy");
  TSTL_CHECK(logits.dim() >= 1 && Shape(logits.shape().begin(), logits.shape().end() - 1) == targets.shape(),
             "cross_entropy: logits ", shape_str(logits.shape()), " do not match targets ", shape_str(targets.shape()),
             " (expected logits = targets.shape + (vocab,))");
}
DType lse_dtype(const Tensor& logits) { return logits.dtype() == DType::F64 ? DType::F64 : DType::F32; }
}  // namespace

Tensor cross_entropy_rows(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_cross_entropy(logits, targets);
  if (is_bf16_on_cpu(logits)) return cross_entropy_rows(widen_bf16(logits), targets, ignore_index);
  Tensor rows = Tensor::empty(targets.shape(), lse_dtype(logits), logits.device());
  Tensor lse = Tensor::empty(targets.shape(), lse_dtype(logits), logits.device());
  TSTL_ON_DEVICE(logits, cross_entropy_forward, logits, targets, ignore_index, rows, lse);
  return rows;
}

int64_t count_scored_targets(const Tensor& targets, int64_t ignore_index) {
  int64_t count = 0;
  for (int64_t t : targets.to_vector<int64_t>()) count += t != ignore_index;
  return count;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, int64_t scored_targets) {
  check_cross_entropy(logits, targets);
  TSTL_CHECK(scored_targets >= -1 && scored_targets <= targets.numel(), "cross_entropy: scored_targets ",
             scored_targets, " outside [-1, ", targets.numel(), "]");
  // bf16 logits on the CPU: an f32 loss, as the CUDA kernel gives; dlogits rounds to bf16.
  if (is_bf16_on_cpu(logits)) return cross_entropy(widen_bf16(logits), targets, ignore_index, scored_targets);
  Tensor rows = Tensor::empty(targets.shape(), lse_dtype(logits), logits.device());
  Tensor lse = Tensor::empty(targets.shape(), lse_dtype(logits), logits.device());
  TSTL_ON_DEVICE(logits, cross_entropy_forward, logits, targets, ignore_index, rows, lse);
  // Counting device-resident targets reads them back (a synchronisation): callers that upload
  // the targets count them on the host first (Decoder::loss).
  const int64_t count = scored_targets >= 0 ? scored_targets : count_scored_targets(targets, ignore_index);
  const double inv_count = count ? 1.0 / static_cast<double>(count) : 0.0;
  Tensor total = Tensor::empty({}, rows.dtype(), rows.device());
  TSTL_ON_DEVICE(rows, sum_all, rows, total);
  Tensor loss = Tensor::empty({}, rows.dtype(), rows.device());
  TSTL_ON_DEVICE(total, scale, total, inv_count, loss);
  if (needs_grad({&logits})) {
    Tensor saved_logits = logits.detach(), saved_targets = targets.detach();
    record(loss, "cross_entropy", {logits}, [=](const Tensor& g) {
      Tensor d = Tensor::empty(saved_logits.shape(), saved_logits.dtype(), saved_logits.device());
      TSTL_ON_DEVICE(g, cross_entropy_backward, saved_logits, saved_targets, lse, ignore_index, g, inv_count, d);
      return std::vector<Tensor>{d};
    });
  }
  return loss;
}

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  TSTL_CHECK(p >= 0.0 && p < 1.0, "dropout: probability ", p, " outside [0, 1)");
  check_float(x, "dropout");
  if (p == 0.0) return x;
  if (is_bf16_on_cpu(x)) return round_to_bf16(dropout(widen_bf16(x), p, seed, offset));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  TSTL_ON_DEVICE(x, dropout, x, p, seed, offset, y);
  if (needs_grad({&x})) {
    record(y, "dropout", {x}, [p, seed, offset](const Tensor& g) {
      Tensor d = Tensor::empty(g.shape(), g.dtype(), g.device());
      TSTL_ON_DEVICE(g, dropout, g, p, seed, offset, d);  // the same mask and scale
      return std::vector<Tensor>{d};
    });
  }
  return y;
}

// ---- Random fills (core/rng.h) ----------------------------------------------------------------

void normal_(Tensor& t, Generator& gen, double mean, double std) {
  check_float(t, "normal_");
  const uint64_t offset = gen.take(static_cast<uint64_t>(t.numel()));
  TSTL_ON_DEVICE(t, normal_fill, t, gen.seed, offset, mean, std);
}

void uniform_(Tensor& t, Generator& gen, double low, double high) {
  check_float(t, "uniform_");
  const uint64_t offset = gen.take(static_cast<uint64_t>(t.numel()));
  TSTL_ON_DEVICE(t, uniform_fill, t, gen.seed, offset, low, high);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  normal_(t, gen);
  return t;
}

}  // namespace tstl
