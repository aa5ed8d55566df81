// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient, with
// bias correction, as PyTorch's torch.optim.AdamW computes it. For step t (1-based), gradient g:
//   m = beta1 m + (1 - beta1) g                 v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd)                           (wd = 0 for parameters excluded from decay)
//   p = p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// One fused kernel per parameter tensor on the CPU, one multi-tensor launch for all CUDA
// parameters (optim/adamw_multi_tensor.h), reads p, g, m, v once and writes p, m, v in place.
// The moments have the parameter's dtype and device (fp32 master weights give fp32 state).
// Parameters without a .grad() are skipped (their moments stay); the bias correction uses the
// optimizer's step count, which advances once per step() call.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct AdamWOptions {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// The scalars of one update, identical for every element of a tensor.
struct AdamWScalars {
  double lr = 0;            // this step's learning rate
  double beta1 = 0, beta2 = 0, eps = 0;
  double weight_decay = 0;  // 0 for parameters excluded from decay
  double bias_correction1 = 1;       // 1 - beta1^t
  double bias_correction2_sqrt = 1;  // sqrt(1 - beta2^t)
};

// The per-element update shared by the CPU and the CUDA kernel. T is the parameter's type.
template <class T>
TSTL_HD void adamw_update(T& p, T g, T& m, T& v, const AdamWScalars& s) {
  m = static_cast<T>(s.beta1) * m + static_cast<T>(1.0 - s.beta1) * g;
  v = static_cast<T>(s.beta2) * v + static_cast<T>(1.0 - s.beta2) * g * g;
  p = p * static_cast<T>(1.0 - s.lr * s.weight_decay);
  const T denom = sqrt(v) / static_cast<T>(s.bias_correction2_sqrt) + static_cast<T>(s.eps);
  p = p - static_cast<T>(s.lr / s.bias_correction1) * (m / denom);
}

namespace kernels {
// p, g, m, v: the same shape, dtype (f32 or f64) and device (CPU); in place.
void adamw_step_cpu(const AdamWScalars& s, Tensor& p, const Tensor& g, Tensor& m, Tensor& v);
}  // namespace kernels

// Decides whether a parameter (by name and tensor) receives weight decay.
using DecayPredicate = std::function<bool(const std::string& name, const Tensor& param)>;

// The default exclusions: biases, norm gains and the input embedding.
const std::vector<std::string>& default_no_decay_patterns();  // "*.bias", "*norm*", "*embed_in*"
// Glob match of a whole name: '*' matches any run of characters (also empty), '?' one character.
bool glob_match(const std::string& pattern, const std::string& name);
// Decays tensors of 2 or more dimensions whose name matches none of `no_decay_patterns`.
DecayPredicate make_decay_predicate(const std::vector<std::string>& no_decay_patterns = default_no_decay_patterns());

struct DecaySummary {
  int64_t decayed_tensors = 0, decayed_elements = 0;
  int64_t plain_tensors = 0, plain_elements = 0;  // not decayed
  std::string str() const;  // "decayed: 12 tensors (1.2M elements); not decayed: ..."
};

class AdamW {
 public:
  AdamW(NamedTensors params, AdamWOptions options, DecayPredicate decays = make_decay_predicate());

  // One update of every parameter that has a gradient, at learning rate `lr`.
  void step(double lr);
  void step() { step(options_.lr); }
  // Drops every parameter's accumulated gradient.
  void zero_grad();

  int64_t step_count() const { return step_count_; }
  const AdamWOptions& options() const { return options_; }
  const NamedTensors& parameters() const { return params_; }
  bool decays(size_t index) const { return decay_[index]; }
  DecaySummary decay_summary() const;

  // The moments by name: "exp_avg.<param>" (m) and "exp_avg_sq.<param>" (v), sharing storage
  // with the optimizer (a checkpoint copies them out).
  NamedTensors named_state() const;
  // Copies saved moments into the state (any device/dtype; shapes must match) and sets the step
  // count. Every moment must be present: a missing or mis-shaped one is an error naming it.
  void load_state(const NamedTensors& state, int64_t step_count);

 private:
  NamedTensors params_;
  std::vector<bool> decay_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions options_;
  int64_t step_count_ = 0;
};

}  // namespace tstl
