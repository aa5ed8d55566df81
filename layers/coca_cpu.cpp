// CoCA prologue: the four ops (released query/key, strict query/key) with their autograd nodes,
// and the CPU kernels, forward and backward side by side. Per-plane math lives in layers/coca.h.
#include "layers/coca.h"

#include "core/autograd.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace tstl {

namespace {

const char* part_name(CocaPart part) {
  switch (part) {
    case CocaPart::Query: return "coca_query";
    case CocaPart::Key: return "coca_key";
    case CocaPart::StrictQuery: return "coca_strict_query";
    case CocaPart::StrictKey: return "coca_strict_key";
  }
  return "coca";
}

Tensor coca_op(CocaPart part, const Tensor& x, const RopeTable& table) {
  const char* name = part_name(part);
  const RopeTableView t = rope_table_for(x, table, name);
  if (is_bf16_on_cpu(x)) return round_to_bf16(coca_op(part, widen_bf16(x), table));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());  // (B, H, N, d)
  TSTL_ON_DEVICE(x, coca_forward, part, x, t.cos, t.sin, y);
  if (needs_grad({&x})) {
    Tensor saved_x = x.detach();
    record(y, name, {x}, [part, saved_x, t](const Tensor& g) {
      Tensor dx = Tensor::empty(g.shape(), g.dtype(), g.device());  // (B, H, N, d)
      TSTL_ON_DEVICE(g, coca_backward, part, saved_x, t.cos, t.sin, g, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace

Tensor coca_query(const Tensor& q, const RopeTable& table) { return coca_op(CocaPart::Query, q, table); }
Tensor coca_key(const Tensor& t_raw, const RopeTable& table) { return coca_op(CocaPart::Key, t_raw, table); }
Tensor coca_strict_query(const Tensor& q, const RopeTable& table) { return coca_op(CocaPart::StrictQuery, q, table); }
Tensor coca_strict_key(const Tensor& t_raw, const RopeTable& table) { return coca_op(CocaPart::StrictKey, t_raw, table); }

namespace kernels {

namespace {

// Calls plane(x0, x1, c, s, ...) for every plane of every row (b, h, n) in parallel.
template <class T, class Plane>
void for_each_plane(const Tensor& x, const Tensor& cos, const Tensor& sin, Plane&& plane) {
  const int64_t n = x.size(2), d = x.size(3), h = d / 2, rows = x.numel() / d;
  const T* pc = cos.data<T>();  // (N, h)
  const T* ps = sin.data<T>();  // (N, h)
#pragma omp parallel for schedule(static) if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* cr = pc + (r % n) * h;
    const T* sr = ps + (r % n) * h;
    for (int64_t i = 0; i < h; ++i) plane(r * d + i, r * d + i + h, cr[i], sr[i]);
  }
}

}  // namespace

void coca_forward_cpu(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out) {
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();  // (B, H, N, d)
    T* po = out.data<T>();      // (B, H, N, d)
    for_each_plane<T>(x, cos, sin, [&](int64_t a, int64_t b, T c, T s) {
      switch (part) {
        case CocaPart::Query: coca_query_plane(px[a], px[b], c, s, po[a], po[b]); break;
        case CocaPart::Key: coca_key_plane(px[a], px[b], c, s, po[a], po[b]); break;
        case CocaPart::StrictQuery: coca_strict_query_plane(px[a], px[b], c, s, po[a], po[b]); break;
        case CocaPart::StrictKey: coca_strict_key_plane(px[a], px[b], c, s, po[a], po[b]); break;
      }
    });
  });
}

void coca_backward_cpu(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& g,
                       Tensor& dx) {
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();  // (B, H, N, d)
    const T* pg = g.data<T>();  // (B, H, N, d)
    T* pd = dx.data<T>();       // (B, H, N, d)
    for_each_plane<T>(x, cos, sin, [&](int64_t a, int64_t b, T c, T s) {
      switch (part) {
        case CocaPart::Query: coca_query_plane_backward(px[a], px[b], c, s, pg[a], pg[b], pd[a], pd[b]); break;
        case CocaPart::Key: coca_key_plane_backward(px[a], px[b], c, s, pg[a], pg[b], pd[a], pd[b]); break;
        case CocaPart::StrictQuery:
          coca_strict_query_plane_backward(px[a], px[b], c, s, pg[a], pg[b], pd[a], pd[b]);
          break;
        case CocaPart::StrictKey:
          coca_strict_key_plane_backward(px[a], px[b], c, s, pg[a], pg[b], pd[a], pd[b]);
          break;
      }
    });
  });
}

}  // namespace kernels

}  // namespace tstl
