// Per-element math of the generic ops, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/kernels.h"
#include "core/rng.h"

namespace tstl {

template <class T>
TSTL_HD T binary_apply(kernels::Binary op, T a, T b) {
  return op == kernels::Binary::Add ? a + b : op == kernels::Binary::Sub ? a - b : a * b;
}

// GELU, exact form: x Phi(x), Phi the standard normal CDF.
template <class T>
TSTL_HD T gelu_value(T x) {
  return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
template <class T>
TSTL_HD T gelu_derivative(T x) {
  const T cdf = T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
  const T pdf = exp(T(-0.5) * x * x) * T(0.39894228040143267794);
  return cdf + x * pdf;
}

// Dropout keeps element `index` when its uniform draw is above p.
TSTL_HD bool dropout_keep(uint64_t seed, uint64_t index, double p) {
  return uniform_from_bits(philox_at(seed, index).v[0]) > static_cast<float>(p);
}

}  // namespace tstl
