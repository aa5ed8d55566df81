// Per-row math of the fused softmax cross-entropy, shared by CPU and CUDA. A row of logits is
// reduced to its max and log-sum-exp in fp32-or-wider arithmetic (Acc), then the loss is
// lse - logit[target] and the gradient softmax - onehot, recomputed from lse in backward.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace tstl {

// log sum_j exp(x[j]) over one row, two passes (max, then sum of shifted exponentials).
template <class Acc, class T>
TSTL_HD Acc row_logsumexp(const T* x, int64_t n) {
  Acc m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = fmax(m, static_cast<Acc>(x[j]));
  Acc s = 0;
  for (int64_t j = 0; j < n; ++j) s += exp(static_cast<Acc>(x[j]) - m);
  return m + log(s);
}

// d loss / d x[j] for one row: (exp(x[j] - lse) - [j == target]) * scale.
template <class Acc, class T>
TSTL_HD T cross_entropy_grad(T x, Acc lse, bool is_target, Acc scale) {
  return static_cast<T>((exp(static_cast<Acc>(x) - lse) - (is_target ? Acc(1) : Acc(0))) * scale);
}

TSTL_HD int64_t load_target(const void* targets, bool wide, int64_t r) {
  return wide ? static_cast<const int64_t*>(targets)[r] : static_cast<const int32_t*>(targets)[r];
}

}  // namespace tstl
