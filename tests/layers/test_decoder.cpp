// The whole decoder: every parameter's gradient against float64 finite differences for each
// variant, naming/layout, and 200 steps of plain SGD on a repeated text lowering the loss.
#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "common/variant_param.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "layers/decoder.h"

namespace tstl {
namespace {

ModelConfig tiny_config(Variant v) {
  ModelConfig c;
  c.variant = v;
  c.layers = 2, c.hidden = 12, c.heads = 3, c.ffn = 10, c.vocab_size = 11, c.train_len = 8;
  c.init_std = 0.3;  // large enough that every path carries a visible gradient
  return c;
}

Tensor ids(const std::vector<int32_t>& v, int64_t b, int64_t n) { return Tensor::from_vector(v, {b, n}); }

class DecoderVariants : public ::testing::TestWithParam<Variant> {};

TEST_P(DecoderVariants, EveryParameterGradientMatchesFiniteDifferences) {
  for (bool parallel : {true, false}) {
    ModelConfig c = tiny_config(GetParam());
    c.parallel_residual = parallel;
    c.rmsnorm = !parallel;  // cover both norms
    c.logn = !parallel && GetParam() != Variant::Alibi;
    Decoder model(c, DType::F64);
    model.initialize(5);
    const Tensor inputs = ids({1, 4, 2, 9, 3, 3, 0, 7, 10, 5, 6, 2, 8, 1}, 2, 7);
    const Tensor targets = ids({4, 2, 9, 3, 3, 0, 7, 5, 6, 2, 8, 1, 1, 10}, 2, 7);
    std::vector<Tensor> params;
    for (const auto& [name, p] : model.named_parameters()) params.push_back(p);
    // Perturbing params[i] in place changes the model, so f ignores its argument list.
    const testing::GradcheckResult r = testing::gradcheck(
        [&](const std::vector<Tensor>&) { return model.loss(inputs, targets).reshape({1}); }, params);
    EXPECT_LT(r.worst_relative_error, 1e-6)
        << variant_name(GetParam()) << (parallel ? " parallel" : " sequential") << ": worst parameter "
        << model.named_parameters()[r.worst_input].first;
  }
}

TEST_P(DecoderVariants, PlainSgdOnARepeatedTextLowersTheLoss) {
  ModelConfig c = tiny_config(GetParam());
  c.hidden = 24, c.heads = 4, c.ffn = 48, c.vocab_size = 16, c.train_len = 16, c.init_std = 0.1;
  Decoder model(c);
  model.initialize(1);
  std::vector<int32_t> text;
  for (int rep = 0; rep < 3; ++rep)
    for (int32_t t : {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}) text.push_back(t);
  const int64_t n = 16;
  const Tensor inputs = ids(std::vector<int32_t>(text.begin(), text.begin() + n), 1, n);
  const Tensor targets = ids(std::vector<int32_t>(text.begin() + 1, text.begin() + n + 1), 1, n);
  double first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    model.zero_grad();
    Tensor loss = model.loss(inputs, targets);
    loss.backward();
    if (step == 0) first = loss.item();
    last = loss.item();
    NoGradGuard no_grad;
    for (const auto& [name, p] : model.named_parameters()) {
      Tensor w = p;
      w.copy_(sub(p.detach(), scale(p.grad(), 0.5)));
    }
  }
  EXPECT_GT(first, 2.0) << variant_name(GetParam());
  EXPECT_LT(last, 0.25 * first) << variant_name(GetParam()) << ": " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(Decoder, DecoderVariants,
                         testing::all_variants(), testing::variant_test_name);

TEST(Decoder, ParameterNamesShapesAndCountsFollowGptNeoX) {
  ModelConfig c;
  c.layers = 24, c.hidden = 1024, c.heads = 16, c.ffn = 4096, c.vocab_size = 50304, c.train_len = 512;
  const auto shapes = parameter_shapes(c);
  int64_t total = 0, embeddings = 0;
  for (const auto& [name, s] : shapes) {
    total += shape_numel(s);
    if (name == "gpt_neox.embed_in.weight" || name == "embed_out.weight") embeddings += shape_numel(s);
  }
  EXPECT_EQ(total, 405334016);
  EXPECT_EQ(total - embeddings, 302311424);
  EXPECT_EQ(shapes.front().first, "gpt_neox.embed_in.weight");
  EXPECT_EQ(shapes.back().first, "embed_out.weight");
  EXPECT_EQ(shapes[5].first, "gpt_neox.layers.0.attention.query_key_value.weight");
  EXPECT_EQ(shapes[5].second, (Shape{3072, 1024}));
  c.hidden = 2048, c.ffn = 8192;
  total = 0;
  for (const auto& [name, s] : parameter_shapes(c)) total += shape_numel(s);
  EXPECT_EQ(total, 1414647808);
}

TEST(Decoder, InitialisationFollowsTheConfig) {
  ModelConfig c = tiny_config(Variant::Rope);
  Decoder a(c), b(c);
  a.initialize(7);
  b.initialize(7);
  for (size_t i = 0; i < a.named_parameters().size(); ++i) {
    const auto& [name, p] = a.named_parameters()[i];
    const auto va = p.to_vector<float>();
    EXPECT_EQ(va, b.named_parameters()[i].second.to_vector<float>()) << name;
    if (name.find("layernorm.weight") != std::string::npos || name == "gpt_neox.final_layer_norm.weight") {
      for (float v : va) EXPECT_EQ(v, 1.0f) << name;
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
      for (float v : va) EXPECT_EQ(v, 0.0f) << name;
    }
  }
  const auto w = a.parameter("embed_out.weight").to_vector<double>();
  double var = 0;
  for (double v : w) var += v * v;
  EXPECT_NEAR(std::sqrt(var / w.size()), 0.3, 0.05);
  EXPECT_THROW(a.parameter("gpt_neox.layers.9.mlp.dense_h_to_4h.weight"), Error);
  ModelConfig bad = c;
  bad.heads = 5;
  EXPECT_THROW(Decoder{bad}, Error);
}

}  // namespace
}  // namespace tstl
