// ALiBi (Press et al. 2022): per-head linear distance penalties on the attention logits,
// S_ij = q_i . k_j / sqrt(d) - m_h (i - j), and their inference-time rescalings
// (docs/variants.md: "Variants" and "ALiBi scalings at inference"). Slopes are constants: no
// gradient. The attention kernel takes the (H) slope tensor built here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tstl {

// The slopes m_1..m_H of the paper: 2^(-8h/H) when H is a power of two; otherwise, with c the
// largest power of two <= H, slopes(c) followed by the first H-c of slopes(2c)[0::2].
std::vector<double> alibi_slopes(int64_t heads);

enum class AlibiScaling { None, Interp, NTK, DynamicNTK };

// The name of a scaling in messages ("none", "interp", "ntk", "dynamic-ntk"); the command line's
// names are parsed in one place, eval/inference_model.h.
const char* alibi_scaling_name(AlibiScaling s);

struct AlibiOptions {
  AlibiScaling scaling = AlibiScaling::None;
  double factor = 1;      // a (Interp, NTK) or a0 (DynamicNTK), >= 1
  int64_t train_len = 0;  // L_train, needed by DynamicNTK
};

// The (possibly rescaled) slopes as doubles, head order 0..H-1:
//   Interp:     m_h / a
//   NTK:        m_h * a^(-r_h/(H-1)), r_h = the rank of head h's base slope from the steepest
//               (r = 0, unchanged) to the flattest (r = H-1, divided by a). For a power of two H
//               the rank is h-1 and this is 2^(-8h/H) a^(-(h-1)/(H-1)); for other H the base
//               slopes are alibi_slopes(H), which is not monotone in h, so ranking keeps
//               "steepest unchanged, flattest divided by a". H = 1: the one head is the
//               steepest and stays unchanged.
//   DynamicNTK: a = max(a0 * L / L_train, 1), L = total_len, then the NTK formula.
std::vector<double> alibi_scaled_slopes(int64_t heads, int64_t total_len, const AlibiOptions& options);

// The same as an (H) tensor on device, of table_dtype_for(dtype): f32 for bf16 activations.
Tensor alibi_slopes_tensor(int64_t heads, int64_t total_len, const AlibiOptions& options, DType dtype = DType::F32,
                           Device device = Device::CPU);

}  // namespace tstl
