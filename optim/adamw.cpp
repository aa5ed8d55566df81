// AdamW: parameter bookkeeping, decay selection, state access; the update is the fused kernel.
#include "optim/adamw.h"

#include <cstdio>
#include <map>

#include "core/autograd.h"
#include "core/kernels.h"
#include "optim/adamw_multi_tensor.h"

namespace tstl {

const std::vector<std::string>& default_no_decay_patterns() {
  static const std::vector<std::string> patterns = {"*.bias", "*norm*", "*embed_in*"};
  return patterns;
}

bool glob_match(const std::string& pattern, const std::string& name) {
  // Iterative matcher with backtracking to the last '*': linear in practice.
  size_t p = 0, n = 0, star = std::string::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

DecayPredicate make_decay_predicate(const std::vector<std::string>& no_decay_patterns) {
  return [no_decay_patterns](const std::string& name, const Tensor& param) {
    if (param.dim() < 2) return false;
    for (const std::string& pattern : no_decay_patterns)
      if (glob_match(pattern, name)) return false;
    return true;
  };
}

namespace {
std::string count_str(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.1fk", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}
}  // namespace

std::string DecaySummary::str() const {
  return tstl::str("weight decay on ", decayed_tensors, " tensors (", count_str(decayed_elements),
                   " parameters), not on ", plain_tensors, " tensors (", count_str(plain_elements), " parameters)");
}

AdamW::AdamW(NamedTensors params, AdamWOptions options, DecayPredicate decays)
    : params_(std::move(params)), options_(options) {
  TSTL_CHECK(options_.beta1 >= 0 && options_.beta1 < 1, "adamw: beta1 must be in [0, 1), got ", options_.beta1);
  TSTL_CHECK(options_.beta2 >= 0 && options_.beta2 < 1, "adamw: beta2 must be in [0, 1), got ", options_.beta2);
  TSTL_CHECK(options_.eps > 0, "adamw: eps must be positive, got ", options_.eps);
  TSTL_CHECK(options_.weight_decay >= 0, "adamw: weight_decay must be >= 0, got ", options_.weight_decay);
  std::map<std::string, int> seen;
  for (const auto& [name, p] : params_) {
    TSTL_CHECK(p.defined(), "adamw: parameter '", name, "' is an undefined tensor");
    TSTL_CHECK(dtype_is_float(p.dtype()), "adamw: parameter '", name, "' has dtype ", dtype_name(p.dtype()));
    TSTL_CHECK(seen[name]++ == 0, "adamw: parameter name '", name, "' appears twice");
    decay_.push_back(decays(name, p));
    exp_avg_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    exp_avg_sq_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }
}

void AdamW::step(double lr) {
  NoGradGuard no_grad;
  ++step_count_;
  AdamWScalars s;
  s.lr = lr;
  s.beta1 = options_.beta1;
  s.beta2 = options_.beta2;
  s.eps = options_.eps;
  s.bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_count_));
  s.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(step_count_)));
  std::vector<AdamWTensor> on_device;  // CUDA parameters: one multi-tensor launch for all of them
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].second;
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    TSTL_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(),
               "adamw: gradient of '", params_[i].first, "' is ", shape_str(g.shape()), " ",
               dtype_name(g.dtype()), " on ", device_name(g.device()), ", parameter is ", shape_str(p.shape()),
               " ", dtype_name(p.dtype()), " on ", device_name(p.device()));
    s.weight_decay = decay_[i] ? options_.weight_decay : 0.0;
    if (p.device() == Device::CPU) {
      kernels::adamw_step_cpu(s, p, g, exp_avg_[i], exp_avg_sq_[i]);
      continue;
    }
    TSTL_CHECK(p.dtype() == DType::F32, "adamw on CUDA expects f32 parameters; '", params_[i].first, "' is ",
               dtype_name(p.dtype()));
    AdamWTensor e;
    e.param = p.data<float>();
    e.grad = g.data<float>();
    e.exp_avg = exp_avg_[i].data<float>();
    e.exp_avg_sq = exp_avg_sq_[i].data<float>();
    e.n = p.numel();
    e.weight_decay = s.weight_decay;
    on_device.push_back(e);
  }
  if (on_device.empty()) return;
#ifdef TSTL_WITH_CUDA
  kernels::adamw_multi_step_cuda(s, on_device);
#else
  kernels::cuda_not_compiled("adamw_step");
#endif
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

DecaySummary AdamW::decay_summary() const {
  DecaySummary d;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = params_[i].second.numel();
    if (decay_[i]) {
      ++d.decayed_tensors;
      d.decayed_elements += n;
    } else {
      ++d.plain_tensors;
      d.plain_elements += n;
    }
  }
  return d;
}

NamedTensors AdamW::named_state() const {
  NamedTensors state;
  for (size_t i = 0; i < params_.size(); ++i) state.emplace_back("exp_avg." + params_[i].first, exp_avg_[i]);
  for (size_t i = 0; i < params_.size(); ++i) state.emplace_back("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  return state;
}

void AdamW::load_state(const NamedTensors& state, int64_t step_count) {
  TSTL_CHECK(step_count >= 0, "adamw: step count must be >= 0, got ", step_count);
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state) by_name[name] = &t;
  auto restore = [&](const std::string& name, Tensor& into) {
    auto it = by_name.find(name);
    TSTL_CHECK(it != by_name.end(), "adamw state: '", name, "' is missing");
    TSTL_CHECK(it->second->shape() == into.shape(), "adamw state: '", name, "' has shape ",
               shape_str(it->second->shape()), ", the parameter needs ", shape_str(into.shape()));
    into.copy_(*it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    restore("exp_avg." + params_[i].first, exp_avg_[i]);
    restore("exp_avg_sq." + params_[i].first, exp_avg_sq_[i]);
  }
  step_count_ = step_count;
}

}  // namespace tstl
