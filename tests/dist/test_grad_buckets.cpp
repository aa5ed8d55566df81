// Gradient buckets: the plan's grouping (hand-computed), and the reduction launched from inside
// backward equals the sum of every rank's gradient computed independently (float64 reference),
// for the plain all-reduce and the ZeRO-1 reduce-scatter, on this binary's world size.
#include <gtest/gtest.h>

#include "dist/dist_test_util.h"

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "train/grad_buckets.h"

namespace tstl {
namespace {

// Three layers in registration order, plus a parameter the graph never uses.
NamedTensors make_params() {
  NamedTensors p = {{"w1", seeded({4, 6}, 1)}, {"w2", seeded({6, 5}, 2)}, {"w3", seeded({5, 3}, 3)},
                    {"unused", seeded({2}, 4)}};
  for (auto& [name, t] : p) t.set_requires_grad(true);
  return p;
}

void backward_of_rank(const NamedTensors& p, int rank) {
  const Tensor x = seeded({3, 4}, 100 + static_cast<uint64_t>(rank));
  const Tensor h = gelu(matmul(gelu(matmul(x, p[0].second)), p[1].second));
  const Tensor y = matmul(h, p[2].second);
  mean(mul(y, y)).backward();
}

TEST(GradBucketPlan, ReverseOrderCutAtTheCap) {
  const NamedTensors p = make_params();  // 24, 30, 15, 2 elements
  // Cap 40 floats = 160 bytes: [unused 2, w3 15] = 17, then w2 30 (47 > 40), then w1 24 (54 > 40).
  const GradBucketPlan plan(p, 160.0 / 1048576.0);
  ASSERT_EQ(plan.buckets().size(), 3u);
  EXPECT_EQ(plan.buckets()[0], (std::vector<size_t>{3, 2}));
  EXPECT_EQ(plan.buckets()[1], (std::vector<size_t>{1}));
  EXPECT_EQ(plan.buckets()[2], (std::vector<size_t>{0}));
  EXPECT_EQ(plan.bucket_elements(0), 17);
  // A cap below one parameter: every parameter alone. A large cap: one bucket.
  EXPECT_EQ(GradBucketPlan(p, 1e-6).buckets().size(), 4u);
  EXPECT_EQ(GradBucketPlan(p, 25).buckets().size(), 1u);
  EXPECT_THROW(GradBucketPlan(p, 0), Error);
}

// sum over ranks of each parameter's gradient, in float64.
std::vector<std::vector<double>> reference_sum(int world) {
  std::vector<std::vector<double>> sum;
  for (int q = 0; q < world; ++q) {
    const NamedTensors p = make_params();
    backward_of_rank(p, q);
    sum.resize(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      if (!p[i].second.grad().defined()) continue;
      const std::vector<float> g = p[i].second.grad().to_vector<float>();
      sum[i].resize(g.size(), 0.0);
      for (size_t e = 0; e < g.size(); ++e) sum[i][e] += g[e];
    }
  }
  return sum;
}

TEST(GradBuckets, AllReduceFromInsideBackwardSumsEveryRanksGradient) {
  const NamedTensors p = make_params();
  const GradBucketPlan plan(p, 1e-6);  // one bucket per parameter: three complete during backward
  GradBuckets buckets(p, plan, test_comm(), /*zero1=*/false);
  for (int pass = 0; pass < 2; ++pass) {  // the buckets are reusable step after step
    for (const auto& [name, t] : p) const_cast<Tensor&>(t).zero_grad();
    buckets.begin();
    backward_of_rank(p, test_comm().rank());
    EXPECT_EQ(buckets.launched_in_backward(), 3);
    buckets.finish();
    const auto expected = reference_sum(test_comm().world());
    for (size_t i = 0; i < 3; ++i) {
      const std::vector<float> got = p[i].second.grad().to_vector<float>();
      for (size_t e = 0; e < got.size(); ++e) ASSERT_NEAR(got[e], expected[i][e], 1e-6) << p[i].first << " " << e;
    }
    EXPECT_FALSE(p[3].second.grad().defined()) << "a parameter without a gradient keeps none";
  }
}

TEST(GradBuckets, ReduceScatterLeavesThisRanksSliceOfEachBucket) {
  const NamedTensors p = make_params();
  const GradBucketPlan plan(p, 160.0 / 1048576.0);
  GradBuckets buckets(p, plan, test_comm(), /*zero1=*/true);
  buckets.begin();
  backward_of_rank(p, test_comm().rank());
  buckets.finish();
  const auto expected = reference_sum(test_comm().world());
  for (size_t b = 0; b < plan.buckets().size(); ++b) {
    std::vector<double> flat;
    for (size_t i : plan.buckets()[b]) {
      if (expected[i].empty()) {
        flat.insert(flat.end(), static_cast<size_t>(p[i].second.numel()), 0.0);
      } else {
        flat.insert(flat.end(), expected[i].begin(), expected[i].end());
      }
    }
    const ShardRange mine = shard_range(plan.bucket_elements(b), test_comm().world(), test_comm().rank());
    const std::vector<float> got = buckets.shard_grads()[b].to_vector<float>();
    ASSERT_EQ(static_cast<int64_t>(got.size()), mine.size());
    for (int64_t e = 0; e < mine.size(); ++e)
      ASSERT_NEAR(got[static_cast<size_t>(e)], flat[static_cast<size_t>(mine.begin + e)], 1e-6) << "bucket " << b;
  }
}

}  // namespace
}  // namespace tstl
