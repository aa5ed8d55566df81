// AdamW against a two-step example computed by hand (in double), decay selection by name, and
// the state round trip used by checkpoints.
#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.h"

namespace tstl {
namespace {

Tensor param(const std::vector<double>& values, const Shape& shape) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true);
  return t;
}

TEST(AdamW, TwoStepsMatchHandComputedValues) {
  // w (2, 1) is decayed, b (2) is not. lr 0.01, betas 0.9/0.95, eps 1e-8, wd 0.1.
  // Step 1 for w[0] = 0.5, g = 0.1: m = 0.01, v = 0.0005, m^ = 0.1, sqrt(v^) = 0.1, so
  //   w = 0.5 * (1 - 0.001) - 0.01 * 0.1 / (0.1 + 1e-8) = 0.4995 - 0.009999999 = 0.489500001.
  // Step 2, g = 0.3: m = 0.039, v = 0.004975, bias corrections 0.19 and 0.0975:
  //   w = 0.489500001 * 0.999 - 0.01 * (0.039 / 0.19) / (sqrt(0.004975 / 0.0975) + 1e-8)
  //     = 0.4799235800039695.
  Tensor w = param({0.5, -1.0}, {2, 1});
  Tensor b = param({0.5, -1.0}, {2});
  AdamW opt({{"layer.weight", w}, {"layer.bias", b}}, AdamWOptions{0.01, 0.9, 0.95, 1e-8, 0.1});
  const std::vector<std::vector<double>> grads = {{0.1, -0.2}, {0.3, 0.4}};
  for (const auto& g : grads) {
    w.set_grad(Tensor::from_vector(g, {2, 1}));
    b.set_grad(Tensor::from_vector(g, {2}));
    opt.step(0.01);
  }
  EXPECT_EQ(opt.step_count(), 2);
  const auto wv = w.to_vector<double>(), bv = b.to_vector<double>();
  EXPECT_NEAR(wv[0], 0.4799235800039695, 1e-15);
  EXPECT_NEAR(wv[1], -0.9916447398902383, 1e-15);
  // Without decay: the same steps minus the (1 - lr wd) shrink. Step 1 for b[0]:
  //   0.5 - 0.009999999 = 0.490000001; step 2 subtracts 0.01 * 0.9087025... again.
  auto no_decay_reference = [](double p, std::vector<double> gs) {
    double m = 0, v = 0;
    for (size_t t = 1; t <= gs.size(); ++t) {
      const double g = gs[t - 1];
      m = 0.9 * m + 0.1 * g;
      v = 0.95 * v + 0.05 * g * g;
      const double mhat = m / (1 - std::pow(0.9, t)), vhat = v / (1 - std::pow(0.95, t));
      p -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    return p;
  };
  EXPECT_NEAR(bv[0], no_decay_reference(0.5, {0.1, 0.3}), 1e-15);
  EXPECT_NEAR(bv[1], no_decay_reference(-1.0, {-0.2, 0.4}), 1e-15);
  EXPECT_NEAR(no_decay_reference(0.5, {0.1}), 0.490000001, 1e-15);
  // The moments after step 2, by name.
  const NamedTensors state = opt.named_state();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[0].first, "exp_avg.layer.weight");
  EXPECT_EQ(state[2].first, "exp_avg_sq.layer.weight");
  EXPECT_NEAR(state[0].second.to_vector<double>()[0], 0.039, 1e-16);
  EXPECT_NEAR(state[2].second.to_vector<double>()[0], 0.004975, 1e-16);
}

TEST(AdamW, FloatKernelMatchesDoubleKernel) {
  const int64_t n = 3 * 5 * 7;
  std::vector<double> p0(n), g(n);
  for (int64_t i = 0; i < n; ++i) {
    p0[i] = std::sin(0.37 * i);
    g[i] = std::cos(1.3 * i) * 0.1;
  }
  Tensor pd = param(p0, {3, 5, 7});
  Tensor pf = Tensor::from_vector(p0, {3, 5, 7}).to(DType::F32);
  pf.set_requires_grad(true);
  AdamW od({{"w", pd}}, AdamWOptions{1e-2}), of({{"w", pf}}, AdamWOptions{1e-2});
  for (int s = 0; s < 3; ++s) {
    pd.set_grad(Tensor::from_vector(g, {3, 5, 7}));
    pf.set_grad(Tensor::from_vector(g, {3, 5, 7}).to(DType::F32));
    od.step(1e-2);
    of.step(1e-2);
  }
  const auto a = pd.to_vector<double>(), b = pf.to_vector<double>();
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(a[i], b[i], 1e-6) << i;
}

TEST(AdamW, ParametersWithoutGradientAreSkipped) {
  Tensor w = param({1.0, 2.0, 3.0, 4.0}, {2, 2});
  AdamW opt({{"w", w}}, AdamWOptions{0.1});
  opt.step(0.1);
  EXPECT_EQ(w.to_vector<double>(), (std::vector<double>{1.0, 2.0, 3.0, 4.0}));
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(AdamW, DecayExclusionByName) {
  auto decays = make_decay_predicate();
  const Tensor matrix = Tensor::zeros({3, 5}), vector = Tensor::zeros({5});
  EXPECT_TRUE(decays("gpt_neox.layers.0.attention.query_key_value.weight", matrix));
  EXPECT_TRUE(decays("embed_out.weight", matrix));
  EXPECT_FALSE(decays("gpt_neox.embed_in.weight", matrix));
  EXPECT_FALSE(decays("gpt_neox.layers.0.attention.query_key_value.bias", vector));
  EXPECT_FALSE(decays("gpt_neox.layers.0.input_layernorm.weight", vector));
  EXPECT_FALSE(decays("gpt_neox.final_layer_norm.weight", vector));
  EXPECT_FALSE(decays("gpt_neox.layers.0.post_attention_layernorm.weight", matrix));  // by name
  EXPECT_FALSE(decays("some.vector", vector));                                         // 1-D
  // Configured patterns replace the defaults.
  auto custom = make_decay_predicate({"*.bias", "head.*"});
  EXPECT_TRUE(custom("gpt_neox.embed_in.weight", matrix));
  EXPECT_FALSE(custom("head.weight", matrix));
  EXPECT_TRUE(glob_match("a*b?d", "axxbcd"));
  EXPECT_FALSE(glob_match("a*b?d", "axxbd"));
  EXPECT_TRUE(glob_match("*", ""));

  AdamW opt({{"gpt_neox.embed_in.weight", Tensor::zeros({11, 3})},
             {"gpt_neox.layers.0.mlp.dense_h_to_4h.weight", Tensor::zeros({5, 3})},
             {"gpt_neox.layers.0.mlp.dense_h_to_4h.bias", Tensor::zeros({5})},
             {"embed_out.weight", Tensor::zeros({11, 3})}},
            AdamWOptions{1e-3});
  const DecaySummary d = opt.decay_summary();
  EXPECT_EQ(d.decayed_tensors, 2);
  EXPECT_EQ(d.decayed_elements, 15 + 33);
  EXPECT_EQ(d.plain_tensors, 2);
  EXPECT_EQ(d.plain_elements, 33 + 5);
  EXPECT_NE(d.str().find("not on 2 tensors"), std::string::npos) << d.str();
}

TEST(AdamW, DecayedWeightShrinksWithZeroGradient) {
  // g = 0 leaves only the decoupled decay: p (1 - lr wd) exactly (m = v = 0, update 0).
  Tensor w = param({2.0, -4.0}, {1, 2});
  Tensor b = param({2.0, -4.0}, {2});
  AdamW opt({{"w", w}, {"b.bias", b}}, AdamWOptions{0.5, 0.9, 0.95, 1e-8, 0.1});
  w.set_grad(Tensor::zeros({1, 2}, DType::F64));
  b.set_grad(Tensor::zeros({2}, DType::F64));
  opt.step(0.5);
  EXPECT_EQ(w.to_vector<double>(), (std::vector<double>{2.0 * 0.95, -4.0 * 0.95}));
  EXPECT_EQ(b.to_vector<double>(), (std::vector<double>{2.0, -4.0}));
}

TEST(AdamW, StateRoundTripContinuesIdentically) {
  auto make = [] { return param({0.3, -0.7, 1.1, 0.05, -0.2, 0.9}, {2, 3}); };
  const std::vector<double> g = {0.1, -0.3, 0.2, 0.05, -0.01, 0.4};
  Tensor a = make(), b = make();
  AdamW oa({{"w", a}}, AdamWOptions{1e-2});
  for (int s = 0; s < 2; ++s) {
    a.set_grad(Tensor::from_vector(g, {2, 3}));
    oa.step(1e-2);
  }
  b.copy_(a);
  AdamW ob({{"w", b}}, AdamWOptions{1e-2});
  NamedTensors saved;
  for (auto& [name, t] : oa.named_state()) saved.emplace_back(name, t.clone());
  ob.load_state(saved, oa.step_count());
  for (AdamW* o : {&oa, &ob}) {
    Tensor w = o->parameters()[0].second;
    w.set_grad(Tensor::from_vector(g, {2, 3}));
    o->step(1e-2);
  }
  EXPECT_EQ(a.to_vector<double>(), b.to_vector<double>());
  EXPECT_EQ(ob.step_count(), 3);
  saved.pop_back();
  try {
    ob.load_state(saved, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exp_avg_sq.w"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tstl
