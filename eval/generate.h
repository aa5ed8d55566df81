// Text generation behind `tstl generate` and the passkey evaluation (docs/evaluation.md): seeded
// sampling and incremental decoding with the KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "layers/decoder.h"

namespace tstl {

struct SamplingOptions {
  int64_t max_tokens = 64;
  double temperature = 0;  // 0: greedy (argmax, lowest id on ties)
  int64_t top_k = 0;       // 0: the whole vocabulary
  uint64_t seed = 0;       // Philox stream; token i of a generation uses counter i
  int32_t stop_token = -1; // generation ends after emitting it (-1: none)
};

// The next token from one row of logits (vocab entries): argmax at temperature 0, else a draw
// from softmax(logits / T) restricted to the top_k largest logits, using uniform_at(seed, index).
int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t index);

// Called after every generated token with all tokens generated so far; true stops generation.
using StopPredicate = std::function<bool(const std::vector<int32_t>& generated)>;

// Generates up to options.max_tokens tokens after `prompt` (non-empty) with the KV cache: the
// prompt in one forward, then one token per forward. `base` carries the scaling; its total_len
// (0: prompt + max_tokens) is used for every step, so a dynamic method uses one table for the
// whole sequence and every cached key was rotated with it. No autograd.
std::vector<int32_t> generate(const Decoder& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const ForwardOptions& base = {}, const StopPredicate& stop = {});

}  // namespace tstl
