// The per-row loops of the CPU flash attention kernels (layers/flash_attention_cpu.cpp), between
// its tile gemms: logits with the row max, exp(x - shift) with the row sum, the softmax gradient.
// They mirror the TSTL_HD functions of layers/flash_attention.h over a contiguous prefix of
// visible keys, branch-free so that they vectorise. Private to that file (anonymous namespace).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/vec_math.h"

namespace tstl {
namespace {

// ---- Row kernels: contiguous loops over the visible keys of one row of a tile ----------------
// Written once as always-inline templates (TSTL_ALWAYS_INLINE: core/vec_math.h), stamped out
// below for f32 per instruction set.

// s[j] = row_scale * s[j] - slope * (query_pos - key_pos), key_pos = key0 + j, as flash_logit
// for visible keys (the caller passes only those); rel_pos = query_pos - key0, key_index[j] = j
// (exact integers, so rel_pos - key_index[j] is the flash_logit distance). Returns the row's
// maximum (-inf when count = 0).
template <class T>
TSTL_ALWAYS_INLINE T logits_row_impl(T* __restrict s, int64_t count, T row_scale, bool alibi, T slope, T rel_pos,
                                     const T* __restrict key_index) {
  T row_max = -INFINITY;
  if (alibi) {
#pragma omp simd reduction(max : row_max)
    for (int64_t j = 0; j < count; ++j) {
      const T logit = row_scale * s[j] - slope * (rel_pos - key_index[j]);
      s[j] = logit;
      row_max = logit > row_max ? logit : row_max;
    }
  } else {
#pragma omp simd reduction(max : row_max)
    for (int64_t j = 0; j < count; ++j) {
      const T logit = row_scale * s[j];
      s[j] = logit;
      row_max = logit > row_max ? logit : row_max;
    }
  }
  return row_max;
}

using vec::exp_f32;  // core/vec_math.h
TSTL_ALWAYS_INLINE double exp_any(double x) { return std::exp(x); }
TSTL_ALWAYS_INLINE float exp_any(float x) { return exp_f32(x); }

// s[j] = exp(s[j] - shift) for j < count; returns the sum (the loop of flash_online_softmax_update,
// and with shift = LSE flash_probability's exp for visible keys).
template <class T>
TSTL_ALWAYS_INLINE T exp_shift_sum_impl(T* __restrict s, int64_t count, T shift) {
  for (int64_t j = 0; j < count; ++j) s[j] = exp_any(s[j] - shift);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < count; ++j) sum += s[j];
  return sum;
}

// g[j] = p[j] (g[j] - delta) row_scale with g = dP on entry: flash_dot_grad along a row, written
// out (the compiler does not inline a plain inline function into a function with other options).
template <class T>
TSTL_ALWAYS_INLINE void dot_grad_row_impl(T* __restrict g, const T* __restrict p, int64_t count, T delta, T row_scale) {
  for (int64_t j = 0; j < count; ++j) g[j] = p[j] * (g[j] - delta) * row_scale;
}

// The f32 kernels per instruction set. no-trapping-math lets the compiler turn exp_f32's clamps
// into vector min/max (the code raises no floating-point exceptions we look at); results differ
// between instruction sets only by rounding (FMA, reduction order), never between runs.
#define TSTL_F32_ROW_KERNELS(SUFFIX, ...)                                                                      \
  __attribute__((__VA_ARGS__)) float logits_row_##SUFFIX(float* s, int64_t count, float row_scale, bool alibi, \
                                                         float slope, float rel_pos, const float* key_index) { \
    return logits_row_impl(s, count, row_scale, alibi, slope, rel_pos, key_index);                             \
  }                                                                                                            \
  __attribute__((__VA_ARGS__)) float exp_shift_sum_##SUFFIX(float* s, int64_t count, float shift) {            \
    return exp_shift_sum_impl(s, count, shift);                                                                \
  }                                                                                                            \
  __attribute__((__VA_ARGS__)) void dot_grad_row_##SUFFIX(float* g, const float* p, int64_t count, float delta, \
                                                          float row_scale) {                                   \
    dot_grad_row_impl(g, p, count, delta, row_scale);                                                          \
  }

struct F32RowKernels {
  float (*logits_row)(float*, int64_t, float, bool, float, float, const float*);
  float (*exp_shift_sum)(float*, int64_t, float);
  void (*dot_grad_row)(float*, const float*, int64_t, float, float);
};

#if defined(__x86_64__) && defined(__GNUC__)
TSTL_F32_ROW_KERNELS(avx512, target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"), optimize("no-trapping-math"))
TSTL_F32_ROW_KERNELS(avx2, target("avx2,fma"), optimize("no-trapping-math"))
#endif
TSTL_F32_ROW_KERNELS(baseline, optimize("no-trapping-math"))

// Picked once from the CPU's features (not ifunc/target_clones: their resolvers run before the
// CPU model is known on some systems and then always pick the baseline).
const F32RowKernels& f32_row_kernels() {
  static const F32RowKernels kernels = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      return F32RowKernels{logits_row_avx512, exp_shift_sum_avx512, dot_grad_row_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return F32RowKernels{logits_row_avx2, exp_shift_sum_avx2, dot_grad_row_avx2};
#endif
    return F32RowKernels{logits_row_baseline, exp_shift_sum_baseline, dot_grad_row_baseline};
  }();
  return kernels;
}

// The row kernels by element type: f32 through the dispatch table, f64 (gradient checks) plain.
template <class T>
struct RowKernels;
template <>
struct RowKernels<float> {
  const F32RowKernels& k = f32_row_kernels();
  float logits_row(float* s, int64_t count, float row_scale, bool alibi, float slope, float rel_pos,
                   const float* key_index) const {
    return k.logits_row(s, count, row_scale, alibi, slope, rel_pos, key_index);
  }
  float exp_shift_sum(float* s, int64_t count, float shift) const { return k.exp_shift_sum(s, count, shift); }
  void dot_grad_row(float* g, const float* p, int64_t count, float delta, float row_scale) const {
    k.dot_grad_row(g, p, count, delta, row_scale);
  }
};
template <>
struct RowKernels<double> {
  double logits_row(double* s, int64_t count, double row_scale, bool alibi, double slope, double rel_pos,
                    const double* key_index) const {
    return logits_row_impl(s, count, row_scale, alibi, slope, rel_pos, key_index);
  }
  double exp_shift_sum(double* s, int64_t count, double shift) const { return exp_shift_sum_impl(s, count, shift); }
  void dot_grad_row(double* g, const double* p, int64_t count, double delta, double row_scale) const {
    dot_grad_row_impl(g, p, count, delta, row_scale);
  }
};

}  // namespace
}  // namespace tstl
