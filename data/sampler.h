// Deterministic, stateless training windows. Determinism contract:
//   - the split's tokens are cut into n = (n_tokens - 1) / (window - 1) windows; window j is
//     tokens[j (window-1), j (window-1) + window) (consecutive windows share one token, the
//     target of one position being the input of the next);
//   - global sample i belongs to epoch e = i / n and takes window P_{seed,e}(i mod n), where
//     P_{seed,e} is a keyed pseudo-random permutation of [0, n) (a Feistel network on the
//     smallest even number of bits covering n, round function Philox4x32-10 keyed by seed and
//     counting (x, round, epoch), with cycle-walking back into [0, n)): each epoch visits every
//     window exactly once, in an order that depends only on (seed, epoch);
//   - with passkey_fraction p > 0, sample i is instead a passkey window (data/passkey.h, case i)
//     when uniform_at(seed ^ kPasskeySelect, i) <= p (uniform_at in (0, 1]).
// So sample i is a pure function of (split, window, seed, options, i): it does not depend on the
// number of ranks, the batch split or restarts, and resuming from a cursor is O(1).
//
// Ranks: the samples of optimizer step s are [s G, (s+1) G) with G = world * grad_accum *
// micro_batch; rank r owns the contiguous slice [s G + r A, s G + (r+1) A), A = grad_accum *
// micro_batch, and its micro-step m reads [.. + m micro_batch, .. + (m+1) micro_batch): see
// global_sample_index().
#pragma once

#include <cstdint>
#include <vector>

#include "data/token_file.h"

namespace tstl {

class Tokenizer;

// A keyed bijection of [0, n) (see the contract above).
class FeistelPermutation {
 public:
  FeistelPermutation(uint64_t n, uint64_t seed, uint64_t epoch);
  uint64_t operator()(uint64_t x) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t encrypt(uint64_t x) const;  // a bijection of [0, 4^half_bits_)
  uint64_t n_, seed_, epoch_;
  int half_bits_;
};

struct SamplerOptions {
  double passkey_fraction = 0.0;
  const Tokenizer* tokenizer = nullptr;  // required when passkey_fraction > 0; must outlive the sampler
};

inline constexpr uint64_t kPasskeySelect = 0x9E3779B97F4A7C15ull;

class TrainSampler {
 public:
  // `split` must outlive the sampler. window = L + 1 tokens (inputs and shifted targets).
  TrainSampler(const TokenSplit& split, int64_t window, uint64_t seed, SamplerOptions options = {});
  int64_t window() const { return window_; }
  uint64_t windows_per_epoch() const { return n_windows_; }
  // The window index (0..n-1) global sample i reads (ignoring passkey replacement).
  uint64_t window_index(uint64_t global_index) const;
  bool is_passkey(uint64_t global_index) const;
  std::vector<int32_t> sample(uint64_t global_index) const;  // (window,)
  // out: (count, window), row k = sample(first_global_index + k).
  void fill_batch(uint64_t first_global_index, int64_t count, int32_t* out) const;

 private:
  const TokenSplit* split_;
  int64_t window_;
  uint64_t seed_;
  SamplerOptions options_;
  uint64_t n_windows_;
};

// First global sample index of micro-step `micro` on `rank` at optimizer `step` (layout above).
uint64_t global_sample_index(uint64_t step, int64_t micro, int64_t rank, int64_t world, int64_t micro_batch,
                             int64_t grad_accum);

// min(count, n) windows of `window` tokens at evenly spaced window positions j_k = floor(k n / count')
// (n as for TrainSampler): fixed and identical on every call.
std::vector<std::vector<int32_t>> validation_windows(const TokenSplit& split, int64_t window, int64_t count);

}  // namespace tstl
