// RoPE: the rotation tables under every inference-time scaling (computed in double on the host),
// the rope op with its autograd node, the CPU kernel (forward and transposed map side by side),
// and the log-n query factors. The math is in layers/rope.h and docs/variants.md.
#include "layers/rope.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {

const char* rope_scaling_name(RopeScaling s) {
  switch (s) {
    case RopeScaling::None: return "none";
    case RopeScaling::PI: return "pi";
    case RopeScaling::NTK: return "ntk";
    case RopeScaling::DynamicNTK: return "dynamic-ntk";
    case RopeScaling::YaRN: return "yarn";
  }
  return "?";
}

RopeFrequencies rope_frequencies(int64_t d, int64_t total_len, const RopeOptions& o) {
  TSTL_CHECK(d > 0 && d % 2 == 0, "rope: head dim d must be even and positive, got ", d);
  TSTL_CHECK(o.base > 1, "rope: base must be > 1, got ", o.base);
  const double a = o.factor;
  if (o.scaling != RopeScaling::None) {
    TSTL_CHECK(a >= 1, "rope: scaling ", rope_scaling_name(o.scaling), " needs an extension factor >= 1, got ", a);
  }
  if (o.scaling == RopeScaling::NTK || o.scaling == RopeScaling::DynamicNTK) {
    TSTL_CHECK(d > 2, "rope: NTK scaling needs head dim d > 2 (exponent d/(d-2)), got ", d);
  }
  if (o.scaling == RopeScaling::DynamicNTK || o.scaling == RopeScaling::YaRN) {
    TSTL_CHECK(o.train_len > 0, "rope: scaling ", rope_scaling_name(o.scaling), " needs train_len > 0, got ",
               o.train_len);
  }
  const int64_t h = d / 2;
  const double dd = static_cast<double>(d);
  double base = o.base;
  if (o.scaling == RopeScaling::NTK) {
    base = o.base * std::pow(a, dd / (dd - 2));
  } else if (o.scaling == RopeScaling::DynamicNTK && total_len > o.train_len) {
    const double ratio = a * static_cast<double>(total_len) / static_cast<double>(o.train_len) - (a - 1);
    base = o.base * std::pow(ratio, dd / (dd - 2));
  }
  RopeFrequencies f;
  f.theta.resize(static_cast<size_t>(h));
  for (int64_t i = 0; i < h; ++i) f.theta[i] = std::pow(base, -2.0 * static_cast<double>(i) / dd);
  if (o.scaling == RopeScaling::PI) f.position_scale = 1 / a;
  if (o.scaling == RopeScaling::YaRN) {
    // "Turns" of plane i over the training length decide how much it is interpolated: more than
    // 32 turns keep theta, fewer than 1 get theta/a, linear ramp in between.
    const double pi = 3.14159265358979323846;
    for (double& theta : f.theta) {
      const double turns = static_cast<double>(o.train_len) * theta / (2 * pi);
      const double gamma = std::clamp((turns - 1) / (32.0 - 1), 0.0, 1.0);
      theta = (1 - gamma) * theta / a + gamma * theta;
    }
    f.magnitude = 0.1 * std::log(a) + 1;
  }
  return f;
}

RopeTable rope_table(int64_t d, int64_t start, int64_t count, int64_t total_len, const RopeOptions& options,
                     DType dtype, Device device) {
  TSTL_CHECK(start >= 0 && count >= 0, "rope_table: need start >= 0 and count >= 0, got start ", start,
             ", count ", count);
  TSTL_CHECK(total_len >= start + count, "rope_table: total length ", total_len,
             " is shorter than the last tabulated position + 1 (", start + count, ")");
  const RopeFrequencies f = rope_frequencies(d, total_len, options);
  const int64_t h = d / 2;
  std::vector<double> cos_values(static_cast<size_t>(count * h)), sin_values(cos_values.size());  // (count, h)
  for (int64_t row = 0; row < count; ++row) {
    const double position = static_cast<double>(start + row) * f.position_scale;
    for (int64_t i = 0; i < h; ++i) {
      const double angle = position * f.theta[static_cast<size_t>(i)];
      cos_values[static_cast<size_t>(row * h + i)] = f.magnitude * std::cos(angle);
      sin_values[static_cast<size_t>(row * h + i)] = f.magnitude * std::sin(angle);
    }
  }
  RopeTable t;
  t.start = start;
  t.cos = Tensor::from_vector(cos_values, {count, h});
  t.sin = Tensor::from_vector(sin_values, {count, h});
  if (table_dtype_for(dtype) != DType::F64) {  // f32 for bf16 activations
    t.cos = t.cos.to(table_dtype_for(dtype));
    t.sin = t.sin.to(table_dtype_for(dtype));
  }
  if (device != Device::CPU) {
    t.cos = t.cos.to(device);
    t.sin = t.sin.to(device);
  }
  return t;
}

RopeTableView rope_table_for(const Tensor& x, const RopeTable& table, const char* op) {
  TSTL_CHECK(x.dim() == 4, op, ": expected (B, H, N, d), got ", shape_str(x.shape()));
  const int64_t n = x.size(2), d = x.size(3);
  TSTL_CHECK(d > 0 && d % 2 == 0, op, ": head dim d must be even, got shape ", shape_str(x.shape()));
  TSTL_CHECK(table.cos.defined() && table.sin.defined(), op, ": the RoPE table is empty (build it with rope_table)");
  check_shape(table.cos, {n, d / 2}, op, "table.cos");
  check_shape(table.sin, {n, d / 2}, op, "table.sin");
  check_same_device(x, table.cos, op);
  RopeTableView view{table.cos.detach(), table.sin.detach()};
  if (x.dtype() == DType::BF16) {
    TSTL_CHECK(view.cos.dtype() == DType::F32, op, ": bf16 inputs take an f32 table, got ",
               dtype_name(view.cos.dtype()));
  } else {
    TSTL_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64, op, ": expected f32, f64 or bf16, got ",
               dtype_name(x.dtype()));
    if (view.cos.dtype() != x.dtype()) {
      view.cos = view.cos.to(x.dtype());
      view.sin = view.sin.to(x.dtype());
    }
  }
  return view;
}

Tensor rope(const Tensor& x, const RopeTable& table) {
  const RopeTableView t = rope_table_for(x, table, "rope");
  if (is_bf16_on_cpu(x)) return round_to_bf16(rope(widen_bf16(x), table));  // the f32 table as is
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());  // (B, H, N, d)
  TSTL_ON_DEVICE(x, rope_apply, x, t.cos, t.sin, false, y);
  if (needs_grad({&x})) {
    record(y, "rope", {x}, [t](const Tensor& g) {
      Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());  // (B, H, N, d)
      TSTL_ON_DEVICE(g, rope_apply, g, t.cos, t.sin, true, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor logn_factors(int64_t start, int64_t count, int64_t train_len, bool inference, DType dtype, Device device) {
  TSTL_CHECK(train_len >= 2, "logn_factors: train_len must be >= 2 (log(train_len) is the divisor), got ", train_len);
  TSTL_CHECK(start >= 0 && count >= 0, "logn_factors: need start >= 0 and count >= 0, got ", start, ", ", count);
  std::vector<double> s(static_cast<size_t>(count));  // (count)
  const double denominator = std::log(static_cast<double>(train_len));
  for (int64_t r = 0; r < count; ++r) {
    const double v = std::log(static_cast<double>(start + r + 1)) / denominator;
    s[static_cast<size_t>(r)] = inference ? std::max(1.0, v) : v;
  }
  Tensor out = Tensor::from_vector(s, {count});
  if (table_dtype_for(dtype) != DType::F64) out = out.to(table_dtype_for(dtype));  // f32 for bf16 activations
  return device == Device::CPU ? out : out.to(device);
}

namespace kernels {

// Rows (b, h, n) in parallel; plane i of row n uses table entry (n, i).
void rope_apply_cpu(const Tensor& x, const Tensor& cos, const Tensor& sin, bool transposed, Tensor& out) {
  const int64_t n = x.size(2), d = x.size(3), h = d / 2, rows = x.numel() / d;
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();      // (B, H, N, d)
    const T* pc = cos.data<T>();    // (N, h)
    const T* ps = sin.data<T>();    // (N, h)
    T* po = out.data<T>();          // (B, H, N, d)
#pragma omp parallel for schedule(static) if (rows * d > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * d;
      T* orow = po + r * d;
      const T* cr = pc + (r % n) * h;
      const T* sr = ps + (r % n) * h;
      for (int64_t i = 0; i < h; ++i) {
        if (transposed) {
          rope_rotate_plane_transposed(xr[i], xr[i + h], cr[i], sr[i], orow[i], orow[i + h]);
        } else {
          rope_rotate_plane(xr[i], xr[i + h], cr[i], sr[i], orow[i], orow[i + h]);
        }
      }
    }
  });
}

}  // namespace kernels

}  // namespace tstl
