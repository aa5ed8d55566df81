// ZeRO-1: the layout covers every element once, and a sharded AdamW step changes the parameters
// and moments exactly (bitwise) as the unsharded AdamW does given the same gradient, on any world
// size this binary runs at (1 as a plain test, 2 and 3 under mpirun).
#include <gtest/gtest.h>

#include "dist/dist_test_util.h"

#include "core/rng.h"
#include "optim/zero1.h"

namespace tstl {
namespace {

NamedTensors make_params(uint64_t seed) {
  const std::vector<std::pair<std::string, Shape>> shapes = {
      {"embed.weight", {7, 5}}, {"norm.weight", {5}}, {"mlp.weight", {5, 9}}, {"mlp.bias", {9}}, {"one", {1}}};
  NamedTensors params;
  for (size_t k = 0; k < shapes.size(); ++k) params.emplace_back(shapes[k].first, seeded(shapes[k].second, seed + k));
  return params;
}

const std::vector<std::vector<size_t>> kGroups = {{4, 3, 2}, {1, 0}};

TEST(Zero1Layout, PiecesCoverEveryElementOnceAcrossRanks) {
  const NamedTensors params = make_params(1);
  for (int world = 1; world <= 5; ++world) {
    std::vector<std::vector<int>> covered(params.size());
    for (size_t i = 0; i < params.size(); ++i) covered[i].assign(static_cast<size_t>(params[i].second.numel()), 0);
    for (int r = 0; r < world; ++r) {
      const Zero1Layout layout(params, kGroups, world, r);
      std::vector<int64_t> next_offset(kGroups.size(), 0);
      for (const ShardPiece& p : layout.pieces()) {
        EXPECT_EQ(p.shard_offset, next_offset[p.group]) << "pieces are contiguous in the shard";
        next_offset[p.group] += p.length;
        for (int64_t e = p.begin; e < p.begin + p.length; ++e) ++covered[p.param][static_cast<size_t>(e)];
      }
      for (size_t g = 0; g < kGroups.size(); ++g) EXPECT_EQ(next_offset[g], layout.group_shard(g).size());
    }
    for (size_t i = 0; i < params.size(); ++i)
      for (int c : covered[i]) ASSERT_EQ(c, 1) << params[i].first << " at world " << world;
  }
  // Hand-computed: group 0 is one(1) + mlp.bias(9) + mlp.weight(45) = 55 elements; at world 2
  // rank 1 owns [28, 55): mlp.weight elements 18..44, at offset 0 of its slice.
  const Zero1Layout layout(params, kGroups, 2, 1);
  EXPECT_EQ(layout.group_elements(0), 55);
  ASSERT_FALSE(layout.pieces().empty());
  EXPECT_EQ(layout.pieces()[0].param, 2u);
  EXPECT_EQ(layout.pieces()[0].begin, 18);
  EXPECT_EQ(layout.pieces()[0].length, 27);
}

TEST(Zero1Layout, AParameterInNoGroupIsAnError) {
  const NamedTensors params = make_params(1);
  EXPECT_THROW(Zero1Layout(params, {{0, 1, 2}}, 2, 0), Error);
  EXPECT_THROW(Zero1Layout(params, {{0, 1, 2, 3, 4}, {0}}, 2, 0), Error);
}

// This rank's slice of every group of the full gradient (what reduce_scatter would hand it).
std::vector<Tensor> slices_of(const NamedTensors& params, const std::vector<Tensor>& grads, const Zero1Layout& layout) {
  std::vector<Tensor> out;
  for (size_t g = 0; g < kGroups.size(); ++g) {
    std::vector<float> flat;
    for (size_t i : kGroups[g]) {
      const std::vector<float> v = grads[i].to_vector<float>();
      flat.insert(flat.end(), v.begin(), v.end());
    }
    const ShardRange mine = layout.group_shard(g);
    out.push_back(Tensor::from_vector<float>(
        std::vector<float>(flat.begin() + mine.begin, flat.begin() + mine.end), {mine.size()}));
  }
  (void)params;
  return out;
}

TEST(Zero1AdamW, StepsEqualTheUnshardedAdamWBitwiseAndTheStateRoundTrips) {
  AdamWOptions options;
  options.lr = 1e-2;
  options.weight_decay = 0.1;
  NamedTensors plain = make_params(10), sharded = make_params(10);
  AdamW reference(plain, options);
  Zero1AdamW zero(sharded, kGroups, options, make_decay_predicate(), test_comm());
  EXPECT_EQ(zero.decay_summary().str(), reference.decay_summary().str());
  for (int step = 0; step < 3; ++step) {
    std::vector<Tensor> grads;
    for (size_t i = 0; i < plain.size(); ++i) grads.push_back(seeded(plain[i].second.shape(), 100 + 10 * step + i));
    for (size_t i = 0; i < plain.size(); ++i) plain[i].second.set_grad(grads[i]);
    reference.step(options.lr * (step + 1));
    reference.zero_grad();
    zero.step(options.lr * (step + 1), slices_of(sharded, grads, zero.layout()));
    for (size_t i = 0; i < plain.size(); ++i)
      ASSERT_EQ(plain[i].second.to_vector<float>(), sharded[i].second.to_vector<float>())
          << plain[i].first << " after step " << step + 1 << " on rank " << test_comm().rank();
  }
  const NamedTensors full = zero.gather_state(), expected = reference.named_state();
  ASSERT_EQ(full.size(), expected.size());
  for (size_t k = 0; k < full.size(); ++k) {
    EXPECT_EQ(full[k].first, expected[k].first);
    EXPECT_EQ(full[k].second.shape(), expected[k].second.shape());
    EXPECT_EQ(full[k].second.to_vector<float>(), expected[k].second.to_vector<float>()) << full[k].first;
  }
  // A fresh sharded optimizer loading the full state continues exactly.
  NamedTensors resumed = make_params(0);
  for (size_t i = 0; i < resumed.size(); ++i) resumed[i].second.copy_(plain[i].second);
  Zero1AdamW again(resumed, kGroups, options, make_decay_predicate(), test_comm());
  again.load_state(expected, reference.step_count());
  std::vector<Tensor> grads;
  for (size_t i = 0; i < plain.size(); ++i) grads.push_back(seeded(plain[i].second.shape(), 999 + i));
  for (size_t i = 0; i < plain.size(); ++i) plain[i].second.set_grad(grads[i]);
  reference.step(options.lr);
  again.step(options.lr, slices_of(resumed, grads, again.layout()));
  for (size_t i = 0; i < plain.size(); ++i)
    ASSERT_EQ(plain[i].second.to_vector<float>(), resumed[i].second.to_vector<float>()) << plain[i].first;
}

}  // namespace
}  // namespace tstl
