// Sliding-window perplexity against hand-computed values (a zero model: NLL = log V exactly) and
// against an independent naive evaluation (one forward per window, log-softmax in double).
#include <gtest/gtest.h>

#include <cmath>

#include "core/autograd.h"
#include "eval/eval_test_util.h"
#include "eval/ppl.h"
#include "eval/generate.h"
#include "eval/inference_model.h"

namespace tstl {
namespace {

using testing::test_tokens;
using testing::tiny_config;

TEST(SlidingWindows, ScoreEveryPredictionExactlyOnceWithinTheWindow) {
  for (int64_t n_tokens = 0; n_tokens <= 23; ++n_tokens) {
    for (int64_t window = 1; window <= 9; ++window) {
      for (int64_t stride = 1; stride <= window; ++stride) {
        std::vector<int> scored(static_cast<size_t>(std::max<int64_t>(n_tokens, 1)), 0);
        int64_t prev_end = 0;
        for (const EvalWindow& w : sliding_windows(n_tokens, window, stride)) {
          ASSERT_LE(w.length, window);
          ASSERT_GE(w.start, 0);
          ASSERT_LE(w.start + w.length + 1, n_tokens);  // the last target exists
          ASSERT_EQ(w.start + w.score_from, prev_end);  // scores (prev_end, end]
          ASSERT_GE(w.score_from, 0);
          ASSERT_LT(w.score_from, w.length);
          // The model sees min(window, end) inputs ending at end.
          ASSERT_EQ(w.length, std::min(window, w.start + w.length));
          for (int64_t i = w.score_from; i < w.length; ++i) ++scored[static_cast<size_t>(w.start + i + 1)];
          prev_end = w.start + w.length;
        }
        for (int64_t t = 1; t < n_tokens; ++t) ASSERT_EQ(scored[static_cast<size_t>(t)], 1) << n_tokens << " " << window << " " << stride;
      }
    }
  }
}

TEST(SlidingWindows, MatchesTheHandWorkedExample) {
  // 11 tokens = 10 predictions, W = 4, S = 2: windows end at 4, 6, 8, 10.
  const auto w = sliding_windows(11, 4, 2);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].start, 0); EXPECT_EQ(w[0].length, 4); EXPECT_EQ(w[0].score_from, 0);
  EXPECT_EQ(w[1].start, 2); EXPECT_EQ(w[1].length, 4); EXPECT_EQ(w[1].score_from, 2);
  EXPECT_EQ(w[3].start, 6); EXPECT_EQ(w[3].length, 4); EXPECT_EQ(w[3].score_from, 2);
  // Non-overlapping, 10 predictions, W = 4: the last window is shifted back to full length.
  const auto n = sliding_windows(11, 4, 4);
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[2].start, 6); EXPECT_EQ(n[2].length, 4); EXPECT_EQ(n[2].score_from, 2);
  EXPECT_THROW(sliding_windows(11, 4, 5), Error);
}

TEST(EvalPpl, ZeroModelGivesLogVocabExactly) {
  const ModelConfig c = tiny_config(Variant::Rope, 23);
  const Decoder model(c);  // parameters are zero until initialize(): every logit is 0
  const std::vector<std::vector<int32_t>> docs = {test_tokens(29, 23, 1), test_tokens(5, 23, 2), test_tokens(2, 23, 3)};
  for (int64_t stride : {0, 3}) {
    for (int64_t length : {4, 7, 64}) {
      const PplResult r = evaluate_ppl(model, docs, length, stride, {}, 20, true);
      EXPECT_EQ(r.tokens, 28 + 4 + 1);
      EXPECT_NEAR(r.mean_nll, std::log(23.0), 1e-6);
      EXPECT_NEAR(r.ppl, 23.0, 1e-4);
      for (size_t i = 0; i < r.position_loss.size(); ++i)
        if (r.position_count[i] > 0) {
          EXPECT_NEAR(r.position_loss[i], std::log(23.0), 1e-6);
        }
    }
  }
}

// The pooled NLL computed independently: windows built here from the definition, one forward per
// window with batch 1, the log-softmax in double.
double naive_pooled_nll(const Decoder& model, const std::vector<std::vector<int32_t>>& docs, int64_t window,
                        int64_t stride, const ForwardOptions& base, int64_t* count) {
  NoGradGuard no_grad;
  double total = 0;
  *count = 0;
  const int64_t vocab = model.config().vocab_size;
  for (const auto& doc : docs) {
    const int64_t n = static_cast<int64_t>(doc.size()) - 1;
    int64_t prev_end = 0;
    for (int64_t begin = 0; n >= 1; begin += stride) {
      const int64_t end = std::min(begin + window, n), start = std::max<int64_t>(0, end - window);
      std::vector<int32_t> ids(doc.begin() + start, doc.begin() + end);
      ForwardOptions opt = base;
      opt.total_len = end - start;
      const std::vector<double> logits =
          model.forward(Tensor::from_vector(ids, {1, end - start}), opt).to_vector<double>();  // (1, L, V)
      for (int64_t p = prev_end; p < end; ++p) {
        total += testing::row_nll(logits.data() + (p - start) * vocab, vocab, doc[static_cast<size_t>(p + 1)]);
        ++*count;
      }
      prev_end = end;
      if (end == n) break;
    }
  }
  return total / static_cast<double>(*count);
}

TEST(EvalPpl, MatchesANaiveEvaluationForEveryWindowingMode) {
  for (Variant v : {Variant::Rope, Variant::Alibi, Variant::Coca}) {
    const ModelConfig c = tiny_config(v);
    Decoder model(c, DType::F64);
    model.initialize(7);
    // 30 and 13 tokens do not divide by the windows; 4 tokens is shorter than every window but 3.
    const std::vector<std::vector<int32_t>> docs = {test_tokens(30, 17, 4), test_tokens(13, 17, 5),
                                                    test_tokens(4, 17, 6)};
    InferenceScaling dynamic;
    dynamic.method = v == Variant::Alibi ? ScalingMethod::DynamicNTKAlibi : ScalingMethod::DynamicNTK;
    dynamic.factor = 2;
    for (const InferenceScaling& scaling : {InferenceScaling{}, dynamic}) {
      const ForwardOptions opt = forward_options_for(c, scaling);
      for (int64_t window : {3, 7, 16}) {
        for (int64_t stride : {window, (window + 1) / 2}) {
          int64_t count = 0;
          const double expected = naive_pooled_nll(model, docs, window, stride, opt, &count);
          for (int64_t batch_tokens : {1, 1000}) {
            const PplResult r = evaluate_ppl(model, docs, window, stride, opt, batch_tokens);
            EXPECT_EQ(r.tokens, count);
            EXPECT_EQ(r.tokens, 29 + 12 + 3);
            EXPECT_NEAR(r.mean_nll, expected, 1e-12 * expected)
                << variant_name(v) << " " << scaling_label(scaling) << " W=" << window << " S=" << stride;
            EXPECT_DOUBLE_EQ(r.ppl, std::exp(r.mean_nll));
          }
        }
      }
    }
  }
}

TEST(EvalPpl, SelectDocumentsCutsOffsetsAndDropsShortOnes) {
  TokenSplit split;
  split.name = "val";
  split.tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  split.doc_offsets = {0, 6, 8, 11};
  split.doc_names = {"a", "b", "c"};
  DocumentSelection s;
  s.doc_offset = 1;
  s.max_doc_tokens = 3;
  const auto docs = select_documents(split, s);  // a -> {2,3,4}, b -> {8} dropped, c -> {10,11}
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ(docs[1], (std::vector<int32_t>{10, 11}));
  s.max_docs = 1;
  EXPECT_EQ(select_documents(split, s).size(), 1u);
  s.doc_offset = 100;
  EXPECT_THROW(select_documents(split, s), Error);
}

TEST(Scaling, MethodsThatDoNotApplyToTheVariantAreErrors) {
  const ModelConfig rope = tiny_config(Variant::Rope), alibi = tiny_config(Variant::Alibi);
  for (const char* m : {"pi:2", "ntk:2", "dynamic-ntk:2", "yarn:2"}) {
    EXPECT_NO_THROW(forward_options_for(rope, parse_scaling(m)));
    EXPECT_NO_THROW(forward_options_for(tiny_config(Variant::CocaStrict), parse_scaling(m)));
    EXPECT_THROW(forward_options_for(alibi, parse_scaling(m)), Error) << m;
  }
  for (const char* m : {"alibi-interp:2", "ntk-alibi:2", "dynamic-ntk-alibi:1.5"}) {
    EXPECT_NO_THROW(forward_options_for(alibi, parse_scaling(m)));
    EXPECT_THROW(forward_options_for(rope, parse_scaling(m)), Error) << m;
    EXPECT_THROW(forward_options_for(tiny_config(Variant::KeyNorm), parse_scaling(m)), Error) << m;
  }
  InferenceScaling logn;
  logn.logn = true;
  EXPECT_THROW(forward_options_for(alibi, logn), Error);
  EXPECT_TRUE(forward_options_for(rope, logn).logn_inference);
  const ForwardOptions dyn = forward_options_for(rope, parse_scaling("dynamic-ntk:4"));
  EXPECT_EQ(dyn.rope.scaling, RopeScaling::DynamicNTK);
  EXPECT_EQ(dyn.rope.factor, 4);
  EXPECT_EQ(dyn.rope.train_len, 4);
  for (const char* bad : {"ntk", "ntk:", "ntk:0.5", "ntk:x", "foo:2", "pi:2x"}) EXPECT_THROW(parse_scaling(bad), Error) << bad;
  EXPECT_EQ(scaling_label(parse_scaling("none")), "none");
  EXPECT_EQ(scaling_label(parse_scaling("yarn:8")), "yarn:8");
  try {
    forward_options_for(alibi, parse_scaling("pi:2"));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("alibi"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("'pi'"), std::string::npos);
  }
}

}  // namespace
// The names of the command line, as docs/variants.md lists them, against what each sets.
TEST(Scaling, EachMethodNameSetsItsRopeOrAlibiScaling) {
  struct Case {
    const char* spec;
    ScalingMethod method;
    RopeScaling rope;
    AlibiScaling alibi;
  };
  const Case cases[] = {
      {"pi:2", ScalingMethod::PI, RopeScaling::PI, AlibiScaling::None},
      {"ntk:2", ScalingMethod::NTK, RopeScaling::NTK, AlibiScaling::None},
      {"dynamic-ntk:2", ScalingMethod::DynamicNTK, RopeScaling::DynamicNTK, AlibiScaling::None},
      {"yarn:2", ScalingMethod::YaRN, RopeScaling::YaRN, AlibiScaling::None},
      {"alibi-interp:2", ScalingMethod::AlibiInterp, RopeScaling::None, AlibiScaling::Interp},
      {"ntk-alibi:2", ScalingMethod::NTKAlibi, RopeScaling::None, AlibiScaling::NTK},
      {"dynamic-ntk-alibi:2", ScalingMethod::DynamicNTKAlibi, RopeScaling::None, AlibiScaling::DynamicNTK},
  };
  for (const Case& c : cases) {
    const InferenceScaling s = parse_scaling(c.spec);
    EXPECT_EQ(s.method, c.method) << c.spec;
    EXPECT_EQ(scaling_label(s), c.spec);
    const bool alibi = c.alibi != AlibiScaling::None;
    const ForwardOptions o = forward_options_for(tiny_config(alibi ? Variant::Alibi : Variant::Rope), s);
    EXPECT_EQ(o.rope.scaling, c.rope) << c.spec;
    EXPECT_EQ(o.alibi.scaling, c.alibi) << c.spec;
  }
  EXPECT_EQ(parse_scaling("none").method, ScalingMethod::None);
  EXPECT_STREQ(scaling_method_name(ScalingMethod::None), "none");
  EXPECT_THROW(parse_scaling("none:2"), Error);
}

}  // namespace tstl
