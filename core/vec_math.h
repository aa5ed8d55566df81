// f32 math in forms the compiler vectorises (plain arithmetic and bit casts, no libm calls, no
// branches), for the CPU kernels' hot loops: exp (flash attention's softmax) and the GELU of the
// MLP. libm's scalar exp/erf calls keep a loop scalar and cost more than the arithmetic around
// them. Always inlined, so that a caller compiled for another instruction set (a target
// attribute) gets its own vector code. The f64 paths (gradient checks) keep libm.
#pragma once

#include <cstdint>

namespace tstl::vec {

#define TSTL_ALWAYS_INLINE __attribute__((always_inline)) inline

// exp(x) (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-7 polynomial for e^r, 2^n built in
// the exponent bits); relative error <= 1.5 ulp for x in [-87.3, 88], clamped outside
// (exp(-87.3) = 1.2e-38).
TSTL_ALWAYS_INLINE float exp_f32(float x) {
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;                         // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * 1.44269504088896341f + magic;  // n = round(x / ln 2) in the low mantissa bits
  const float n = shifted - magic;
  float r = x - n * 0.693359375f;  // ln 2 split in two for an exact reduction
  r = r + n * 2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  poly = poly * r * r + r + 1.0f;
  // 2^n; unsigned arithmetic (same bits as signed) keeps a NaN input defined: the NaN poly wins.
  const uint32_t exponent = (__builtin_bit_cast(uint32_t, shifted) - 0x4B400000u + 127u) << 23;
  return poly * __builtin_bit_cast(float, exponent);
}

// The standard normal CDF Phi(x) = 1 - erfc(x / sqrt 2) / 2, with erfc(z), z >= 0, from the
// Chebyshev fit of Numerical Recipes (erfcc: t = 1 / (1 + z/2), erfc = t exp(-z^2 + P(t)),
// fractional error < 1.2e-7 everywhere), and Phi(-x) = 1 - Phi(x). The error is relative in the
// tail, so GELU's x Phi(x) stays accurate for negative x too (an absolute-error fit of erf is
// off by tens of percent there).
TSTL_ALWAYS_INLINE float normal_cdf_f32(float x) {
  const float z = (x < 0 ? -x : x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  float poly = 0.17087277f;
  poly = poly * t - 0.82215223f;
  poly = poly * t + 1.48851587f;
  poly = poly * t - 1.13520398f;
  poly = poly * t + 0.27886807f;
  poly = poly * t - 0.18628806f;
  poly = poly * t + 0.09678418f;
  poly = poly * t + 0.37409196f;
  poly = poly * t + 1.00002368f;
  poly = poly * t - 1.26551223f;
  const float tail = 0.5f * t * exp_f32(poly - z * z);  // 1 - Phi(|x|)
  return x < 0 ? tail : 1.0f - tail;
}

// GELU x Phi(x).
TSTL_ALWAYS_INLINE float gelu_f32(float x) { return x * normal_cdf_f32(x); }

// GELU's derivative Phi(x) + x phi(x), phi(x) = e^{-x^2/2} / sqrt(2 pi).
TSTL_ALWAYS_INLINE float gelu_derivative_f32(float x) {
  return normal_cdf_f32(x) + x * exp_f32(-0.5f * x * x) * 0.39894228040143267794f;
}

// GELU and its derivative from one evaluation of Phi.
TSTL_ALWAYS_INLINE void gelu_and_derivative_f32(float x, float& value, float& derivative) {
  const float cdf = normal_cdf_f32(x);
  value = x * cdf;
  derivative = cdf + x * exp_f32(-0.5f * x * x) * 0.39894228040143267794f;
}

}  // namespace tstl::vec
