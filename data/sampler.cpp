#include "data/sampler.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "data/passkey.h"
#include "data/tokenizer.h"

namespace tstl {

namespace {
constexpr int kFeistelRounds = 6;
constexpr uint64_t kPasskeyCases = 0xC0FFEE1234567ull;

uint64_t count_windows(const TokenSplit& split, int64_t window) {
  TSTL_CHECK(window >= 2, "sampler window ", window, " must be at least 2 tokens (L + 1)");
  const int64_t n = split.n_tokens() > 0 ? (split.n_tokens() - 1) / (window - 1) : 0;
  TSTL_CHECK(n >= 1, "split '", split.name, "' has ", split.n_tokens(), " tokens, too few for one window of ", window);
  return static_cast<uint64_t>(n);
}
}  // namespace

FeistelPermutation::FeistelPermutation(uint64_t n, uint64_t seed, uint64_t epoch) : n_(n), seed_(seed), epoch_(epoch) {
  TSTL_CHECK(n >= 1, "a permutation needs a non-empty domain");
  half_bits_ = 1;
  while (half_bits_ < 32 && (uint64_t{1} << (2 * half_bits_)) < n) ++half_bits_;
}

uint64_t FeistelPermutation::encrypt(uint64_t x) const {
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t left = x >> half_bits_, right = x & mask;
  for (int round = 0; round < kFeistelRounds; ++round) {
    const Philox4 f = philox4x32(static_cast<uint32_t>(right), static_cast<uint32_t>(round), static_cast<uint32_t>(epoch_),
                                 static_cast<uint32_t>(epoch_ >> 32), static_cast<uint32_t>(seed_),
                                 static_cast<uint32_t>(seed_ >> 32));
    const uint64_t next = left ^ (f.v[0] & mask);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

uint64_t FeistelPermutation::operator()(uint64_t x) const {
  TSTL_CHECK(x < n_, "permutation input ", x, " is outside [0, ", n_, ")");
  // Cycle-walking: the cycle of the bijection through x returns to [0, n), at most 4 steps on average.
  do x = encrypt(x);
  while (x >= n_);
  return x;
}

TrainSampler::TrainSampler(const TokenSplit& split, int64_t window, uint64_t seed, SamplerOptions options)
    : split_(&split), window_(window), seed_(seed), options_(options), n_windows_(count_windows(split, window)) {
  TSTL_CHECK(options.passkey_fraction >= 0.0 && options.passkey_fraction <= 1.0, "passkey_fraction ",
             options.passkey_fraction, " is not in [0, 1]");
  if (options.passkey_fraction > 0.0) {
    TSTL_CHECK(options.tokenizer != nullptr, "passkey_fraction > 0 needs a tokenizer for the passkey prompts");
    make_passkey_window(*options.tokenizer, window, seed, 0);  // fails early when the window is too short
  }
}

uint64_t TrainSampler::window_index(uint64_t global_index) const {
  const uint64_t epoch = global_index / n_windows_;
  return FeistelPermutation(n_windows_, seed_, epoch)(global_index % n_windows_);
}

bool TrainSampler::is_passkey(uint64_t global_index) const {
  return options_.passkey_fraction > 0.0 && uniform_at(seed_ ^ kPasskeySelect, global_index) <= options_.passkey_fraction;
}

std::vector<int32_t> TrainSampler::sample(uint64_t global_index) const {
  std::vector<int32_t> out(static_cast<size_t>(window_));
  fill_batch(global_index, 1, out.data());
  return out;
}

void TrainSampler::fill_batch(uint64_t first_global_index, int64_t count, int32_t* out) const {
  TSTL_CHECK(count >= 0, "fill_batch count ", count, " is negative");
  for (int64_t k = 0; k < count; ++k) {
    const uint64_t i = first_global_index + static_cast<uint64_t>(k);
    int32_t* row = out + k * window_;  // (window,)
    if (is_passkey(i)) {
      const std::vector<int32_t> ids = make_passkey_window(*options_.tokenizer, window_, seed_ ^ kPasskeyCases, i);
      std::copy(ids.begin(), ids.end(), row);
    } else {
      const uint64_t start = window_index(i) * static_cast<uint64_t>(window_ - 1);
      std::memcpy(row, split_->tokens.data() + start, static_cast<size_t>(window_) * sizeof(int32_t));
    }
  }
}

uint64_t global_sample_index(uint64_t step, int64_t micro, int64_t rank, int64_t world, int64_t micro_batch,
                             int64_t grad_accum) {
  TSTL_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " is outside world size ", world);
  TSTL_CHECK(micro_batch >= 1 && grad_accum >= 1 && micro >= 0 && micro < grad_accum, "micro-step ", micro,
             " is outside grad_accum ", grad_accum, " (micro_batch ", micro_batch, ")");
  const uint64_t per_rank = static_cast<uint64_t>(grad_accum * micro_batch);
  return step * per_rank * static_cast<uint64_t>(world) + static_cast<uint64_t>(rank) * per_rank +
         static_cast<uint64_t>(micro * micro_batch);
}

std::vector<std::vector<int32_t>> validation_windows(const TokenSplit& split, int64_t window, int64_t count) {
  TSTL_CHECK(count >= 1, "validation window count ", count, " must be positive");
  const uint64_t n = count_windows(split, window);
  const uint64_t m = std::min<uint64_t>(n, static_cast<uint64_t>(count));
  std::vector<std::vector<int32_t>> out;
  out.reserve(m);
  for (uint64_t k = 0; k < m; ++k) {
    const uint64_t start = (k * n / m) * static_cast<uint64_t>(window - 1);
    out.emplace_back(split.tokens.begin() + static_cast<int64_t>(start),
                     split.tokens.begin() + static_cast<int64_t>(start) + window);
  }
  return out;
}

}  // namespace tstl
