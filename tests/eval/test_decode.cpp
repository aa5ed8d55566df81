// Incremental decoding: the KV-cache path of Decoder::forward gives the logits of a full forward
// for every variant, with and without a dynamic scaling (total_len = the full length in both),
// and generate() follows the greedy tokens of repeated full forwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "eval/eval_test_util.h"
#include "eval/generate.h"
#include "eval/inference_model.h"

namespace tstl {
namespace {

using testing::test_tokens;
using testing::tiny_config;

struct CacheCase {
  Variant variant;
  const char* scaling;
  bool logn;
};

class KVCacheMatchesFullForward : public ::testing::TestWithParam<CacheCase> {};

TEST_P(KVCacheMatchesFullForward, ChunkByChunk) {
  const CacheCase cc = GetParam();
  const ModelConfig c = tiny_config(cc.variant);
  Decoder model(c, DType::F64);
  model.initialize(3);
  InferenceScaling scaling = parse_scaling(cc.scaling);
  scaling.logn = cc.logn;
  const int64_t batch = 2, n = 11;
  const std::vector<int32_t> ids = test_tokens(batch * n, c.vocab_size, 9);  // (B, N)
  NoGradGuard no_grad;
  ForwardOptions full = forward_options_for(c, scaling);
  full.total_len = n;
  const std::vector<double> expected = model.forward(Tensor::from_vector(ids, {batch, n}), full).to_vector<double>();

  KVCache cache;
  ForwardOptions step = full;  // the same table: total_len = the full length
  step.cache = &cache;
  std::vector<double> got(expected.size());
  const int64_t vocab = c.vocab_size;
  const std::vector<std::pair<int64_t, int64_t>> chunks = {{0, 5}, {5, 6}, {6, 9}, {9, 10}, {10, 11}};
  for (const auto& [begin, end] : chunks) {
    const int64_t len = end - begin;
    std::vector<int32_t> chunk;
    for (int64_t b = 0; b < batch; ++b)
      chunk.insert(chunk.end(), ids.begin() + b * n + begin, ids.begin() + b * n + end);
    ASSERT_EQ(cache.position(), begin);
    const std::vector<double> logits = model.forward(Tensor::from_vector(chunk, {batch, len}), step).to_vector<double>();
    for (int64_t b = 0; b < batch; ++b)
      std::copy(logits.begin() + b * len * vocab, logits.begin() + (b + 1) * len * vocab,
                got.begin() + (b * n + begin) * vocab);
  }
  EXPECT_EQ(cache.position(), n);
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(got[i] - expected[i]));
    max_abs = std::max(max_abs, std::fabs(expected[i]));
  }
  EXPECT_LT(max_diff, 1e-12 * std::max(1.0, max_abs)) << variant_name(cc.variant) << " " << cc.scaling;
  EXPECT_GT(max_abs, 1e-3);  // the comparison is not between zeros
}

INSTANTIATE_TEST_SUITE_P(
    EveryVariant, KVCacheMatchesFullForward,
    ::testing::Values(CacheCase{Variant::Rope, "none", false}, CacheCase{Variant::Rope, "dynamic-ntk:2", false},
                      CacheCase{Variant::Rope, "yarn:4", true}, CacheCase{Variant::Alibi, "none", false},
                      CacheCase{Variant::Alibi, "dynamic-ntk-alibi:1.5", false},
                      CacheCase{Variant::KeyNorm, "none", false}, CacheCase{Variant::KeyNorm, "dynamic-ntk:2", false},
                      CacheCase{Variant::Coca, "none", false}, CacheCase{Variant::Coca, "dynamic-ntk:2", false},
                      CacheCase{Variant::CocaStrict, "none", false},
                      CacheCase{Variant::CocaStrict, "dynamic-ntk:2", true}),
    [](const ::testing::TestParamInfo<CacheCase>& info) {
      std::string name = std::string(variant_name(info.param.variant)) + "_" + info.param.scaling +
                         (info.param.logn ? "_logn" : "");
      for (char& ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return name;
    });

// The comparison above can fail: under dynamic NTK, tables built for each chunk's own total
// length (total_len = 0: past + current) rotate the cached keys differently.
TEST(KVCache, PerChunkDynamicTablesDifferFromTheFullForward) {
  const ModelConfig c = tiny_config(Variant::Rope);
  Decoder model(c, DType::F64);
  model.initialize(3);
  const std::vector<int32_t> ids = test_tokens(9, c.vocab_size, 1);
  NoGradGuard no_grad;
  ForwardOptions full = forward_options_for(c, parse_scaling("dynamic-ntk:2"));
  const std::vector<double> expected = model.forward(Tensor::from_vector(ids, {1, 9}), full).to_vector<double>();
  KVCache cache;
  ForwardOptions step = full;
  step.cache = &cache;
  model.forward(Tensor::from_vector(std::vector<int32_t>(ids.begin(), ids.begin() + 8), {1, 8}), step);
  const std::vector<double> last = model.forward(Tensor::from_vector(std::vector<int32_t>{ids[8]}, {1, 1}), step).to_vector<double>();
  double diff = 0;
  for (size_t i = 0; i < last.size(); ++i) diff = std::max(diff, std::fabs(last[i] - expected[8 * last.size() + i]));
  EXPECT_GT(diff, 1e-6);
}

TEST(Generate, GreedyFollowsRepeatedFullForwards) {
  for (Variant v : {Variant::Rope, Variant::Alibi, Variant::Coca}) {
    const ModelConfig c = tiny_config(v);
    Decoder model(c, DType::F64);
    model.initialize(11);
    const std::vector<int32_t> prompt = test_tokens(6, c.vocab_size, 2);
    SamplingOptions greedy;
    greedy.max_tokens = 7;
    ForwardOptions base = forward_options_for(c, parse_scaling(v == Variant::Alibi ? "dynamic-ntk-alibi:2" : "dynamic-ntk:2"));
    const std::vector<int32_t> out = generate(model, prompt, greedy, base);
    ASSERT_EQ(out.size(), 7u);
    // Reference: the whole sequence so far through a full forward, the table of prompt + max_tokens.
    NoGradGuard no_grad;
    std::vector<int32_t> seq = prompt;
    base.total_len = 6 + 7;
    for (size_t i = 0; i < out.size(); ++i) {
      const int64_t n = static_cast<int64_t>(seq.size());
      const std::vector<double> row =
          narrow(model.forward(Tensor::from_vector(seq, {1, n}), base), 1, n - 1, 1).to_vector<double>();
      const int32_t next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      ASSERT_EQ(out[i], next) << variant_name(v) << " token " << i;
      seq.push_back(next);
    }
  }
}

TEST(Generate, StopsOnTheStopTokenAndThePredicate) {
  const ModelConfig c = tiny_config(Variant::Rope);
  Decoder model(c);
  model.initialize(5);
  SamplingOptions s;
  s.max_tokens = 9;
  const std::vector<int32_t> all = generate(model, {1, 2, 3}, s);
  ASSERT_EQ(all.size(), 9u);
  s.stop_token = all[2];
  const auto first = std::find(all.begin(), all.end(), all[2]) - all.begin();
  EXPECT_EQ(static_cast<int64_t>(generate(model, {1, 2, 3}, s).size()), first + 1);
  s.stop_token = -1;
  EXPECT_EQ(generate(model, {1, 2, 3}, s, {}, [](const std::vector<int32_t>& g) { return g.size() == 4; }).size(), 4u);
  EXPECT_THROW(generate(model, {}, s), Error);
}

TEST(SampleToken, GreedyTopKAndSeededDraws) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.9f, 2.0f};
  SamplingOptions s;
  EXPECT_EQ(sample_token(logits.data(), 5, s, 0), 1);  // argmax, lowest id on ties
  s.temperature = 1.0;
  s.top_k = 1;
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits.data(), 5, s, i), 1);
  s.top_k = 3;  // {1, 4, 3}
  std::vector<int> counts(5, 0);
  s.seed = 42;
  for (uint64_t i = 0; i < 3000; ++i) ++counts[static_cast<size_t>(sample_token(logits.data(), 5, s, i))];
  EXPECT_EQ(counts[0] + counts[2], 0);
  // Probabilities e^2, e^2, e^1.9 over their sum: about 0.345, 0.345, 0.31.
  EXPECT_NEAR(counts[1] / 3000.0, 0.345, 0.04);
  EXPECT_NEAR(counts[3] / 3000.0, 0.31, 0.04);
  s.seed = 7;
  EXPECT_EQ(sample_token(logits.data(), 5, s, 5), sample_token(logits.data(), 5, s, 5));
}

}  // namespace
}  // namespace tstl
