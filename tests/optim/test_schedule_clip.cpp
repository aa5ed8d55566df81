// LR schedules at hand-checked steps, and global-norm clipping against a hand-computed norm and
// on random gradients against a long double reference at 1, 2, 3 and 7 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "common/threads.h"

#include "optim/clip.h"
#include "optim/schedule.h"

namespace tstl {
namespace {

TEST(Schedule, CosineAtHandCheckedSteps) {
  // lr 1e-3, min 1e-4, warm-up 10 of 110 steps: decay spans steps 10..110 (100 steps).
  const ScheduleOptions o{1e-3, 1e-4, 10, 110, DecayShape::Cosine};
  EXPECT_DOUBLE_EQ(learning_rate(0, o), 1e-4);   // 1e-3 * 1/10
  EXPECT_DOUBLE_EQ(learning_rate(4, o), 5e-4);   // 1e-3 * 5/10
  EXPECT_DOUBLE_EQ(learning_rate(9, o), 1e-3);   // end of warm-up: the peak
  EXPECT_DOUBLE_EQ(learning_rate(10, o), 1e-3);  // progress 0
  EXPECT_DOUBLE_EQ(learning_rate(60, o), 5.5e-4);  // progress 1/2: min + (lr - min) / 2
  EXPECT_DOUBLE_EQ(learning_rate(35, o), 1e-4 + 9e-4 * 0.5 * (1 + std::sqrt(0.5)));  // progress 1/4
  EXPECT_NEAR(learning_rate(109, o), 1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-18);
  EXPECT_DOUBLE_EQ(learning_rate(110, o), 1e-4);  // end
  EXPECT_DOUBLE_EQ(learning_rate(500, o), 1e-4);  // past the end: constant
}

TEST(Schedule, LinearAtHandCheckedSteps) {
  // The paper's recipe shape: peak 1e-4, 1% warm-up, linear decay to 1e-5.
  const ScheduleOptions o{1e-4, 1e-5, 10, 1010, DecayShape::Linear};
  EXPECT_DOUBLE_EQ(learning_rate(0, o), 1e-5);
  EXPECT_DOUBLE_EQ(learning_rate(9, o), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(10, o), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(510, o), 5.5e-5);   // midpoint
  EXPECT_DOUBLE_EQ(learning_rate(760, o), 3.25e-5);  // three quarters: 1e-4 - 9e-5 * 0.75
  EXPECT_DOUBLE_EQ(learning_rate(1010, o), 1e-5);
  EXPECT_DOUBLE_EQ(learning_rate(2000, o), 1e-5);
  const ScheduleOptions no_warmup{1e-4, 0, 0, 100, DecayShape::Linear};
  EXPECT_DOUBLE_EQ(learning_rate(0, no_warmup), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(50, no_warmup), 5e-5);
  EXPECT_EQ(parse_decay_shape("cosine"), DecayShape::Cosine);
  EXPECT_THROW(parse_decay_shape("exp"), Error);
}

Tensor with_grad(const Shape& shape, const std::vector<double>& g) {
  Tensor p = Tensor::zeros(shape, DType::F64);
  p.set_requires_grad(true);
  p.set_grad(Tensor::from_vector(g, shape));
  return p;
}

TEST(Clip, GlobalNormMatchesHandComputedValue) {
  // Gradients (3, 4) and (12): sum of squares 9 + 16 + 144 = 169, norm 13.
  NamedTensors params = {{"a", with_grad({2}, {3, 4})}, {"b", with_grad({1}, {12})}, {"c", Tensor::zeros({3})}};
  EXPECT_DOUBLE_EQ(grad_norm(params), 13.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 0), 13.0);  // measure only
  EXPECT_EQ(params[0].second.grad().to_vector<double>(), (std::vector<double>{3, 4}));
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 20), 13.0);  // below the limit: untouched
  EXPECT_EQ(params[1].second.grad().to_vector<double>(), (std::vector<double>{12}));
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 6.5), 13.0);  // scaled by 1/2
  EXPECT_EQ(params[0].second.grad().to_vector<double>(), (std::vector<double>{1.5, 2}));
  EXPECT_EQ(params[1].second.grad().to_vector<double>(), (std::vector<double>{6}));
  EXPECT_DOUBLE_EQ(grad_norm(params), 6.5);
}

// Random gradients of several tensors, two above the parallel threshold and not whole numbers of
// blocks: the norm equals a long double reference, is the same double at 1, 2, 3 and 7 threads,
// and clipping scales every element by max_norm / norm (the same bits at every count too).
TEST(Clip, RandomGradientsNormAndClipSameForAnyThreadCount) {
  const std::vector<Shape> shapes = {{3, 5, 7, 401}, {70001}, {129}, {300, 257}};
  auto make_params = [&] {
    NamedTensors params;
    std::mt19937_64 rng(5);
    std::normal_distribution<double> normal;
    for (size_t i = 0; i < shapes.size(); ++i) {
      std::vector<float> g(static_cast<size_t>(shape_numel(shapes[i])));
      for (float& x : g) x = static_cast<float>(normal(rng) * std::exp2(static_cast<double>(i % 3) * 4 - 4));
      Tensor p = Tensor::zeros(shapes[i]);
      p.set_requires_grad(true);
      p.set_grad(Tensor::from_vector(g, shapes[i]));
      params.emplace_back("p" + std::to_string(i), p);
    }
    return params;
  };
  long double squares = 0;
  for (const auto& [name, p] : make_params())
    for (float x : p.grad().to_vector<float>()) squares += static_cast<long double>(x) * x;
  const double expected = std::sqrt(static_cast<double>(squares));
  const double max_norm = expected / 3;
  std::vector<std::string> clipped_reference;
  for (int threads : test::kThreadCounts) {
    NamedTensors params = make_params();
    const std::vector<Tensor> before = [&] {
      std::vector<Tensor> out;
      for (const auto& [name, p] : params) out.push_back(p.grad().clone());
      return out;
    }();
    const double norm = test::with_threads(threads, [&] { return clip_grad_norm(params, max_norm); });
    EXPECT_NEAR(norm, expected, 1e-12 * expected) << threads << " threads";
    EXPECT_EQ(norm, test::with_threads(1, [&] { return grad_norm(make_params()); })) << threads << " threads";
    std::vector<std::string> clipped;
    for (size_t i = 0; i < params.size(); ++i) {
      const std::vector<float> g = params[i].second.grad().to_vector<float>(), g0 = before[i].to_vector<float>();
      for (size_t j = 0; j < g.size(); j += 997)
        ASSERT_EQ(g[j], static_cast<float>(g0[j] * (max_norm / norm))) << params[i].first << "[" << j << "]";
      clipped.push_back(test::tensor_bytes(params[i].second.grad()));
    }
    if (clipped_reference.empty()) clipped_reference = clipped;
    EXPECT_EQ(clipped, clipped_reference) << threads << " threads";
    EXPECT_NEAR(test::with_threads(threads, [&] { return grad_norm(params); }), max_norm, 1e-6 * max_norm);
  }
}

TEST(Clip, FirstNonfiniteGradientNamesTheParameter) {
  NamedTensors params = {{"ok", with_grad({2}, {1, 2})},
                         {"bad", with_grad({3}, {0, std::numeric_limits<double>::infinity(), 1})},
                         {"worse", with_grad({1}, {std::nan("")})}};
  EXPECT_EQ(first_nonfinite_gradient(params), "bad");
  EXPECT_TRUE(std::isinf(clip_grad_norm(params, 1.0)) || std::isnan(clip_grad_norm(params, 1.0)));
  EXPECT_EQ(params[0].second.grad().to_vector<double>(), (std::vector<double>{1, 2}));  // left alone
  EXPECT_EQ(first_nonfinite_gradient({params[0]}), "");
}

}  // namespace
}  // namespace tstl
