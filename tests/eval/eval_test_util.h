// Tiny models for the evaluation tests.
#pragma once

#include <cmath>
#include <vector>

#include "layers/decoder.h"

namespace tstl::testing {

// A 2-layer model of head dim 4 (3 heads: a non-power-of-two for ALiBi) with a short training
// length, so dynamic scalings act at the test lengths.
inline ModelConfig tiny_config(Variant variant, int64_t vocab = 17) {
  ModelConfig c;
  c.variant = variant;
  c.layers = 2;
  c.hidden = 12;
  c.heads = 3;
  c.ffn = 20;
  c.vocab_size = vocab;
  c.train_len = 4;
  c.init_std = 0.3;  // large enough that attention is far from uniform
  return c;
}

// Deterministic pseudo-random token ids in [0, vocab).
inline std::vector<int32_t> test_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 12345u;
  for (auto& id : ids) {
    x = x * 1664525u + 1013904223u;
    id = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return ids;
}

// -log softmax(row)[target] in double.
inline double row_nll(const double* row, int64_t vocab, int32_t target) {
  double m = row[0];
  for (int64_t i = 1; i < vocab; ++i) m = std::fmax(m, row[i]);
  double s = 0;
  for (int64_t i = 0; i < vocab; ++i) s += std::exp(row[i] - m);
  return std::log(s) + m - row[target];
}

}  // namespace tstl::testing
