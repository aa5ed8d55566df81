// Seeded sampling and incremental decoding with the KV cache.
#include "eval/generate.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"

namespace tstl {

int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t index) {
  TSTL_CHECK(vocab >= 1, "sample_token: empty vocabulary");
  if (options.temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  // Candidates: the top_k largest logits (all when top_k is 0 or >= vocab), by value then id.
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  const int64_t k = options.top_k > 0 && options.top_k < vocab ? options.top_k : vocab;
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  ids.resize(static_cast<size_t>(k));
  std::vector<double> weights(ids.size());  // exp((l - l_max) / T), in sorted order
  double total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    weights[i] = std::exp((static_cast<double>(logits[ids[i]]) - logits[ids[0]]) / options.temperature);
    total += weights[i];
  }
  const double u = uniform_at(options.seed, index) * total;  // in (0, total]
  double cumulative = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += weights[i];
    if (u <= cumulative) return ids[i];
  }
  return ids.back();  // rounding left u a hair above the sum
}

std::vector<int32_t> generate(const Decoder& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const ForwardOptions& base, const StopPredicate& stop) {
  TSTL_CHECK(!prompt.empty(), "generate: the prompt is empty (it needs at least one token)");
  NoGradGuard no_grad;
  KVCache cache;
  ForwardOptions forward = base;
  forward.cache = &cache;
  if (forward.total_len == 0) forward.total_len = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  const int64_t vocab = options.vocab_limit > 0 ? std::min(options.vocab_limit, model.config().vocab_size)
                                                : model.config().vocab_size;
  // logits (1, N, V) -> the last row (V), cut on the model's device: on CUDA the one row is all
  // that comes back to the host per step (the KV cache stays on the device).
  auto last_row = [&](const Tensor& logits) {
    return narrow(logits, 1, logits.size(1) - 1, 1).to_vector<float>();
  };
  std::vector<float> row =
      last_row(model.forward(Tensor::from_vector(prompt, {1, static_cast<int64_t>(prompt.size())}), forward));
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int32_t token = sample_token(row.data(), vocab, options, static_cast<uint64_t>(i));
    generated.push_back(token);
    if (token == options.stop_token || (stop && stop(generated)) || i + 1 == options.max_tokens) break;
    row = last_row(model.forward(Tensor::from_vector(std::vector<int32_t>{token}, {1, 1}), forward));
  }
  return generated;
}

}  // namespace tstl
