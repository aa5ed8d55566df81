// RoPE (rotary position embedding, GPT-NeoX "rotate_half" layout), its inference-time scalings,
// and the log-n query scale. See docs/variants.md.
//
// Layout: x is (B, H, N, d) with d even, h = d/2; rotation plane i is the pair of dims (i, i+h).
// Row n of x sits at absolute position p = table.start + n and is rotated by the angle
// p * theta_i (theta_i = base^(-2i/d), possibly rescaled):
//     y[i]   = x[i]   cos - x[i+h] sin
//     y[i+h] = x[i+h] cos + x[i]   sin
// The table's cos/sin already carry YaRN's magnitude factor, so the map is c * R_p with c = 1
// except under YaRN. Backward is the transposed map, dx = c R_p^T dy (sin negated).
// Gradient contract: the input gradient is returned freshly written (=); tables are constants.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

enum class RopeScaling { None, PI, NTK, DynamicNTK, YaRN };

// The name of a scaling in messages ("none", "pi", "ntk", "dynamic-ntk", "yarn"); the command
// line's names are parsed in one place, eval/inference_model.h.
const char* rope_scaling_name(RopeScaling s);

struct RopeOptions {
  double base = 10000;
  RopeScaling scaling = RopeScaling::None;
  double factor = 1;      // the extension factor a (>= 1); ignored by None
  int64_t train_len = 0;  // L_train, needed by DynamicNTK and YaRN
};

struct RopeTable {
  Tensor cos, sin;    // (count, h): cos/sin of the angle for position start + row (times YaRN's factor)
  int64_t start = 0;  // absolute position of row 0
};

// The rotation table for positions [start, start + count) of head dim d, for a sequence whose
// current total length is total_len (>= start + count; the dynamic methods depend on it). Angles
// are computed in double and converted at the end to table_dtype_for(dtype): dtype is the
// activations' dtype, and bf16 activations get an f32 table. Tables are built per call, never
// cached: a table for one total length must not be reused for another under DynamicNTK.
RopeTable rope_table(int64_t d, int64_t start, int64_t count, int64_t total_len, const RopeOptions& options,
                     DType dtype = DType::F32, Device device = Device::CPU);

// The rescaled frequencies theta'_i (h of them) and the cos/sin magnitude factor that
// rope_table uses for these options and total length; exposed for tests and documentation.
struct RopeFrequencies {
  std::vector<double> theta;      // (h) angle per unit of (possibly interpolated) position
  double position_scale = 1;      // positions are multiplied by this (1/a under PI)
  double magnitude = 1;           // cos and sin are multiplied by this (0.1 ln a + 1 under YaRN)
};
RopeFrequencies rope_frequencies(int64_t d, int64_t total_len, const RopeOptions& options);

// y = c R_p x for x (B, H, N, d) and a table with N rows; one autograd node.
Tensor rope(const Tensor& x, const RopeTable& table);

// Log-n query factors (count): s_i = log(i+1) / log(train_len) for absolute positions
// i = start .. start+count-1; at inference (a model not trained with log-n) max(1, s_i).
// Constants, no gradient; the attention kernel multiplies row i's logits by s_i. In
// table_dtype_for(dtype): f32 for bf16 activations.
Tensor logn_factors(int64_t start, int64_t count, int64_t train_len, bool inference, DType dtype = DType::F32,
                    Device device = Device::CPU);

// ---- Per-element math shared by the CPU and CUDA kernels -------------------------------------

// One plane (x0, x1) = (x[i], x[i+h]) rotated by the angle whose (scaled) cos/sin are c, s.
template <class T>
TSTL_HD void rope_rotate_plane(T x0, T x1, T c, T s, T& y0, T& y1) {
  y0 = x0 * c - x1 * s;
  y1 = x1 * c + x0 * s;
}

// The transposed map: rotation by minus the angle (the backward of rope_rotate_plane).
template <class T>
TSTL_HD void rope_rotate_plane_transposed(T y0, T y1, T c, T s, T& x0, T& x1) {
  x0 = y0 * c + y1 * s;
  x1 = y1 * c - y0 * s;
}

namespace kernels {
// out = R x (transposed = false) or R^T x (transposed = true); x, out (B, H, N, d), cos/sin (N, h).
void rope_apply_cpu(const Tensor& x, const Tensor& cos, const Tensor& sin, bool transposed, Tensor& out);
void rope_apply_cuda(const Tensor& x, const Tensor& cos, const Tensor& sin, bool transposed, Tensor& out);
}  // namespace kernels

// Shape checks shared by the RoPE-based prologues (rope, coca): x (B, H, N, d) with d even and
// the table of N rows of d/2 entries on x's device; returns the table in x's dtype.
struct RopeTableView {
  Tensor cos, sin;  // (N, h)
};
RopeTableView rope_table_for(const Tensor& x, const RopeTable& table, const char* op);

}  // namespace tstl
