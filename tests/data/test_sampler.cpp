// The sampler's determinism contract: the Feistel permutation is a bijection, every epoch visits
// each window once, sample i is the same for any number of ranks, batch split or restart, and
// golden sequences pin the order itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "data/passkey.h"
#include "data/sampler.h"
#include "data/tokenizer.h"

namespace tstl {
namespace {

// A split whose token t is t % 65521 (distinct, so each window is identified by its first token).
TokenSplit make_split(int64_t n_tokens) {
  TokenSplit split;
  split.name = "train";
  for (int64_t t = 0; t < n_tokens; ++t) split.tokens.push_back(static_cast<int32_t>(t % 65521));
  split.doc_offsets = {0, static_cast<uint64_t>(n_tokens)};
  split.doc_names = {"all"};
  return split;
}

TEST(FeistelPermutation, IsABijectionForAnyDomainSize) {
  for (uint64_t n : {1ull, 2ull, 3ull, 5ull, 7ull, 16ull, 17ull, 100ull, 1000ull, 4097ull}) {
    for (uint64_t epoch : {0ull, 1ull, 9ull}) {
      const FeistelPermutation p(n, 42, epoch);
      std::vector<bool> seen(n, false);
      for (uint64_t x = 0; x < n; ++x) {
        const uint64_t y = p(x);
        ASSERT_LT(y, n);
        ASSERT_FALSE(seen[y]) << "n=" << n << " epoch=" << epoch << " maps two inputs to " << y;
        seen[y] = true;
      }
    }
  }
  EXPECT_THROW(FeistelPermutation(5, 1, 0)(5), Error);
}

TEST(FeistelPermutation, DependsOnSeedAndEpochAndLooksShuffled) {
  const uint64_t n = 1000;
  auto order = [&](uint64_t seed, uint64_t epoch) {
    std::vector<uint64_t> v;
    const FeistelPermutation p(n, seed, epoch);
    for (uint64_t x = 0; x < n; ++x) v.push_back(p(x));
    return v;
  };
  const auto a = order(1, 0);
  EXPECT_EQ(a, order(1, 0));
  EXPECT_NE(a, order(1, 1));
  EXPECT_NE(a, order(2, 0));
  int fixed = 0, ascending = 0;
  for (uint64_t x = 0; x < n; ++x) fixed += a[x] == x;
  for (uint64_t x = 1; x < n; ++x) ascending += a[x] > a[x - 1];
  EXPECT_LT(fixed, 10);                           // a random permutation has ~1 fixed point
  EXPECT_NEAR(ascending, 500, 60);                // ~ (n-1)/2 ascents, sd ~ 9
}

// Golden sequences: the first windows a run reads for a fixed seed and size, as the sampler
// computed them at commit 842439a. Any change of the permutation (round function, key, number of
// rounds, cycle walking) or of the sample -> window mapping would silently reorder the data of
// every resumed run; it must fail here instead (and then needs a new checkpoint version).
TEST(TrainSampler, GoldenSequenceForAFixedSeedAndSize) {
  auto first = [](uint64_t n, uint64_t seed, uint64_t epoch, size_t count) {
    const FeistelPermutation p(n, seed, epoch);
    std::vector<uint64_t> v;
    for (uint64_t x = 0; x < count; ++x) v.push_back(p(x));
    return v;
  };
  EXPECT_EQ(first(1000, 1234, 0, 16), (std::vector<uint64_t>{302, 546, 584, 388, 215, 51, 871, 3, 354, 115, 339, 545, 110, 568, 754, 741}));
  EXPECT_EQ(first(1000, 1234, 1, 8), (std::vector<uint64_t>{357, 510, 636, 10, 958, 820, 356, 940}));
  EXPECT_EQ(first(9967, 17, 0, 8), (std::vector<uint64_t>{257, 2320, 1056, 7204, 6590, 5603, 6087, 6965}));  // not a power of 4: cycle walking
  // The sampler on top: sample i of a 3201-token split in windows of 33 (100 windows), seed 5;
  // samples 100.. are epoch 1. Token t of the split is t, so a window is named by its first token / 32.
  const TokenSplit split = make_split(3201);
  const TrainSampler sampler(split, 33, 5);
  ASSERT_EQ(sampler.windows_per_epoch(), 100u);
  std::vector<uint64_t> windows;
  for (uint64_t i : {0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103}) {
    windows.push_back(sampler.window_index(i));
    EXPECT_EQ(static_cast<uint64_t>(sampler.sample(i)[0]), windows.back() * 32) << "sample " << i;
  }
  EXPECT_EQ(windows, (std::vector<uint64_t>{14, 33, 5, 98, 71, 70, 58, 27, 13, 68, 65, 46}));
}

TEST(TrainSampler, WindowsAreSlicesAndEachEpochCoversAllOnce) {
  const TokenSplit split = make_split(1000);
  const int64_t window = 8;  // L = 7: n = 999 / 7 = 142 windows
  const TrainSampler sampler(split, window, 5);
  ASSERT_EQ(sampler.windows_per_epoch(), 142u);
  for (uint64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int32_t> firsts;
    for (uint64_t i = epoch * 142; i < (epoch + 1) * 142; ++i) {
      const auto s = sampler.sample(i);
      ASSERT_EQ(s.size(), 8u);
      ASSERT_EQ(s[0] % 7, 0) << "windows start at multiples of L";
      for (int64_t k = 0; k < window; ++k) ASSERT_EQ(s[static_cast<size_t>(k)], s[0] + k);
      EXPECT_EQ(static_cast<uint64_t>(s[0] / 7), sampler.window_index(i));
      firsts.insert(s[0]);
    }
    EXPECT_EQ(firsts.size(), 142u) << "a repeat within epoch " << epoch;
  }
  EXPECT_NE(sampler.sample(0), sampler.sample(142)) << "epochs are shuffled differently";
  EXPECT_THROW(TrainSampler(make_split(8), 9, 1), Error);  // too few tokens for one window
  EXPECT_THROW(TrainSampler(split, 1, 1), Error);
}

// The global sequence, gathered from every rank of worlds of 1, 2 and 3 with the same global
// batch (12 = world x grad_accum x micro_batch), concatenated by global index.
TEST(TrainSampler, SameSequenceForOneTwoThreeRanksAndAfterResume) {
  const TokenSplit split = make_split(3001);
  const int64_t window = 11;  // n = 300
  const uint64_t seed = 1234;
  const TrainSampler reference(split, window, seed);
  const int64_t steps = 60, global_batch = 12;  // 720 samples: more than two epochs
  std::vector<int32_t> expected(static_cast<size_t>(steps * global_batch * window));
  reference.fill_batch(0, steps * global_batch, expected.data());

  struct Layout {
    int64_t world, grad_accum, micro_batch;
  };
  for (const Layout& l : {Layout{1, 4, 3}, Layout{2, 2, 3}, Layout{3, 2, 2}}) {
    ASSERT_EQ(l.world * l.grad_accum * l.micro_batch, global_batch);
    std::vector<int32_t> gathered(expected.size(), -1);
    for (int64_t rank = 0; rank < l.world; ++rank) {
      const TrainSampler sampler(split, window, seed);  // each rank has its own instance
      for (int64_t step = 0; step < steps; ++step)
        for (int64_t micro = 0; micro < l.grad_accum; ++micro) {
          const uint64_t first = global_sample_index(static_cast<uint64_t>(step), micro, rank, l.world, l.micro_batch, l.grad_accum);
          sampler.fill_batch(first, l.micro_batch, gathered.data() + first * static_cast<uint64_t>(window));
        }
    }
    EXPECT_EQ(gathered, expected) << "world " << l.world;
  }
  // Resume from every cursor: a fresh sampler started at cursor c continues the sequence.
  for (uint64_t cursor = 0; cursor < 720; cursor += 37) {
    const TrainSampler resumed(split, window, seed);
    std::vector<int32_t> rest((720 - cursor) * static_cast<uint64_t>(window));
    resumed.fill_batch(cursor, static_cast<int64_t>(720 - cursor), rest.data());
    EXPECT_TRUE(std::equal(rest.begin(), rest.end(), expected.begin() + static_cast<int64_t>(cursor) * window)) << cursor;
  }
  EXPECT_NE(TrainSampler(split, window, seed + 1).sample(0), reference.sample(0));
}

TEST(TrainSampler, GlobalSampleIndexSlicesTheGlobalBatch) {
  // step 2, world 3, grad_accum 2, micro_batch 4: step base 48, rank slice 8, micro offset 4.
  EXPECT_EQ(global_sample_index(2, 1, 2, 3, 4, 2), 48u + 16u + 4u);
  EXPECT_EQ(global_sample_index(0, 0, 0, 1, 5, 1), 0u);
  EXPECT_THROW(global_sample_index(0, 0, 3, 3, 4, 2), Error);
  EXPECT_THROW(global_sample_index(0, 2, 0, 3, 4, 2), Error);
}

TEST(TrainSampler, PasskeyFractionReplacesAboutThatShareOfSamples) {
  const TokenSplit split = make_split(20001);
  const auto tok = make_tokenizer("byte");
  SamplerOptions options;
  options.passkey_fraction = 0.25;
  options.tokenizer = tok.get();
  const int64_t window = 257;
  const TrainSampler sampler(split, window, 9, options);
  const TrainSampler plain(split, window, 9);
  int passkeys = 0;
  for (uint64_t i = 0; i < 400; ++i) {
    const auto s = sampler.sample(i);
    ASSERT_EQ(static_cast<int64_t>(s.size()), window);
    if (sampler.is_passkey(i)) {
      ++passkeys;
      const std::string text = tok->decode(s);
      EXPECT_EQ(text.rfind(kPasskeyIntro, 0), 0u) << text;
      // The window is prompt + " KEY": its last 6 bytes are the answer, stated in the prompt.
      const std::string answer = text.substr(text.size() - 5);
      EXPECT_NE(text.find("The passkey is " + answer + ". Remember it."), std::string::npos) << text;
      EXPECT_EQ(text.substr(text.size() - 6 - std::strlen(kPasskeyQuestion), std::strlen(kPasskeyQuestion)), kPasskeyQuestion);
    } else {
      EXPECT_EQ(s, plain.sample(i));
    }
  }
  EXPECT_NEAR(passkeys, 100, 30);  // binomial(400, 0.25): sd ~ 8.7
  options.tokenizer = nullptr;
  EXPECT_THROW(TrainSampler(split, window, 9, options), Error);
  options.tokenizer = tok.get();
  EXPECT_THROW(TrainSampler(split, 65, 9, options), Error);  // too short for the template
}

TEST(ValidationWindows, FixedEvenlySpacedAndClipped) {
  const TokenSplit split = make_split(1001);
  const auto a = validation_windows(split, 11, 7);  // n = 100 windows: positions 0, 14, 28, ...
  ASSERT_EQ(a.size(), 7u);
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].size(), 11u);
    EXPECT_EQ(a[k][0], static_cast<int32_t>((k * 100 / 7) * 10));
    EXPECT_EQ(a[k][10], a[k][0] + 10);
  }
  EXPECT_EQ(a, validation_windows(split, 11, 7));
  EXPECT_EQ(validation_windows(split, 11, 1000).size(), 100u);
  EXPECT_THROW(validation_windows(make_split(5), 11, 3), Error);
}

}  // namespace
}  // namespace tstl
