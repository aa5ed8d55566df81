// The reusable float64 finite-difference checker (after Caffe's GradientChecker): every op's
// backward is compared with central differences of a random projection of its output.
//
//   expect_gradients_match([](const std::vector<Tensor>& in) { return gelu(in[0]); }, {x});
//
// The inputs must be f64 CPU tensors; each one that requires grad is checked. The scalar
// L = sum(f(inputs) * W), W fixed random, exercises every output element; for each input element
// dL/dx is estimated as (L(x+h) - L(x-h)) / 2h and compared with the analytic gradient:
// max |analytic - numeric| / max(max |numeric|, 1e-12) must stay below `tolerance`.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"

namespace tstl::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// A random f64 CPU tensor that requires grad, values N(0, std) from `seed`.
inline Tensor random_input(const Shape& shape, uint64_t seed, double std = 1.0, bool requires_grad = true) {
  Generator gen{seed, 0};
  Tensor t = randn(shape, gen, DType::F64);
  if (std != 1.0) t = scale(t, std);
  t = t.detach();
  t.set_requires_grad(requires_grad);
  return t;
}

struct GradcheckResult {
  double worst_relative_error = 0;
  size_t worst_input = 0;
};

inline GradcheckResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs, double step = 1e-6,
                                 uint64_t seed = 7) {
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) {
      EXPECT_EQ(t.dtype(), DType::F64) << "gradcheck needs f64 inputs";
      EXPECT_EQ(t.device(), Device::CPU);
    }
  }
  Tensor out0;
  {
    NoGradGuard no_grad;
    out0 = f(inputs);
  }
  Generator gen{seed, 1000};
  const Tensor weights = randn(out0.shape(), gen, DType::F64);
  auto objective = [&]() {
    NoGradGuard no_grad;
    const Tensor out = f(inputs);
    const auto o = out.to_vector<double>();
    const auto w = weights.to_vector<double>();
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += o[i] * w[i];
    return l;
  };
  for (Tensor t : inputs)
    if (t.requires_grad()) t.zero_grad();
  Tensor loss = sum(mul(f(inputs), weights));
  loss.backward();

  GradcheckResult result;
  for (size_t idx = 0; idx < inputs.size(); ++idx) {
    Tensor t = inputs[idx];
    if (!t.requires_grad()) continue;
    EXPECT_TRUE(t.grad().defined()) << "input " << idx << " received no gradient";
    if (!t.grad().defined()) continue;
    const auto analytic = t.grad().to_vector<double>();
    double* x = t.data<double>();
    double max_numeric = 0, max_diff = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double saved = x[i];
      x[i] = saved + step;
      const double up = objective();
      x[i] = saved - step;
      const double down = objective();
      x[i] = saved;
      const double numeric = (up - down) / (2 * step);
      max_numeric = std::max(max_numeric, std::fabs(numeric));
      max_diff = std::max(max_diff, std::fabs(numeric - analytic[static_cast<size_t>(i)]));
    }
    const double rel = max_diff / std::max(max_numeric, 1e-12);
    if (rel > result.worst_relative_error) result = {rel, idx};
  }
  return result;
}

inline void expect_gradients_match(const OpFn& f, const std::vector<Tensor>& inputs, double tolerance = 1e-6,
                                   double step = 1e-6) {
  const GradcheckResult r = gradcheck(f, inputs, step);
  EXPECT_LT(r.worst_relative_error, tolerance) << "worst input: " << r.worst_input;
}

// max |a - b| / max(max |b|, tiny): for comparing a result with its reference.
inline double max_relative_difference(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  EXPECT_EQ(va.size(), vb.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    diff = std::max(diff, std::fabs(va[i] - vb[i]));
    ref = std::max(ref, std::fabs(vb[i]));
  }
  return diff / std::max(ref, 1e-30);
}

}  // namespace tstl::testing
