// The device-side clipping interface (optim/clip.h: statistics as a tensor, clipping from it, one
// read) and the synchronisation counter (core/cuda_sync.h), on the CPU: the interface against a
// hand-computed norm and against clip_grad_norm over the same gradients split into two "ranks";
// the counter against known increments and a CPU step that must not synchronise.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/cuda_sync.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace tstl {
namespace {

TEST(DeviceClip, StatsTensorHoldsSumOfSquaresAndNonFiniteCount) {
  const std::vector<Tensor> grads = {Tensor::from_vector<float>({3, 4}, {2}), Tensor::from_vector<float>({12}, {1})};
  const Tensor stats = grad_stats_on_device(grads, Device::CPU);
  ASSERT_EQ(stats.shape(), (Shape{2}));
  EXPECT_EQ(stats.dtype(), DType::F64);
  EXPECT_EQ(stats.to_vector<double>(), (std::vector<double>{169.0, 0.0}));  // 9 + 16 + 144
  const std::vector<Tensor> bad = {Tensor::from_vector<float>({1, std::numeric_limits<float>::infinity(), NAN}, {3})};
  EXPECT_EQ(read_grad_stats(grad_stats_on_device(bad, Device::CPU)).nonfinite, 2);
  EXPECT_EQ(grad_stats_on_device({}, Device::CPU).to_vector<double>(), (std::vector<double>{0.0, 0.0}));
}

TEST(DeviceClip, ClipsFromStatsSummedOverTwoListsLikeOneList) {
  // Two "ranks" hold halves of the gradient; their summed statistics clip both halves exactly as
  // clip_grad_norm clips the whole list (ZeRO-1's use).
  auto make = [](float scale) {
    return std::vector<Tensor>{Tensor::from_vector<float>({1 * scale, -2 * scale, 3 * scale}, {3}),
                               Tensor::from_vector<float>({4 * scale, 5 * scale}, {2})};
  };
  const std::vector<Tensor> a = make(1.0f), b = make(-0.5f);
  NamedTensors whole;
  for (size_t i = 0; i < 2; ++i) {
    Tensor pa = Tensor::zeros(a[i].shape()), pb = Tensor::zeros(b[i].shape());
    pa.set_grad(a[i].clone());
    pb.set_grad(b[i].clone());
    whole.emplace_back("a" + std::to_string(i), pa);
    whole.emplace_back("b" + std::to_string(i), pb);
  }
  const double expected_norm = std::sqrt(55.0 * 1.25);  // 1 + 4 + 9 + 16 + 25 = 55, the b half 55 / 4
  EXPECT_DOUBLE_EQ(clip_grad_norm(whole, 2.0), expected_norm);
  Tensor stats = grad_stats_on_device(a, Device::CPU);
  const Tensor stats_b = grad_stats_on_device(b, Device::CPU);
  stats.data<double>()[0] += stats_b.data<double>()[0];
  stats.data<double>()[1] += stats_b.data<double>()[1];
  clip_by_stats(a, stats, 2.0);
  clip_by_stats(b, stats, 2.0);
  EXPECT_DOUBLE_EQ(std::sqrt(read_grad_stats(stats).sum_squares), expected_norm);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i].to_vector<float>(), whole[2 * i].second.grad().to_vector<float>());
    EXPECT_EQ(b[i].to_vector<float>(), whole[2 * i + 1].second.grad().to_vector<float>());
  }
  EXPECT_NEAR(std::sqrt(read_grad_stats(grad_stats_on_device(a, Device::CPU)).sum_squares +
                        read_grad_stats(grad_stats_on_device(b, Device::CPU)).sum_squares),
              2.0, 1e-6);
}

TEST(DeviceClip, ReadingAScalarAlongClipsExactlyLikeClipGradNorm) {
  // The trainer's step loss rides along with the norm in one read (clip_grad_norm_reading): the
  // norm and the clipped gradients are clip_grad_norm's, bit for bit, and the scalar comes back.
  auto make = [] {
    NamedTensors params;
    const std::vector<std::vector<float>> values = {{0.3f, -1.7f, 2.9f}, {4.1f, -0.2f}};
    for (size_t i = 0; i < values.size(); ++i) {
      Tensor p = Tensor::zeros({static_cast<int64_t>(values[i].size())});
      p.set_grad(Tensor::from_vector<float>(values[i], {static_cast<int64_t>(values[i].size())}));
      params.emplace_back("p" + std::to_string(i), p);
    }
    return params;
  };
  NamedTensors plain = make(), reading = make();
  const double expected = clip_grad_norm(plain, 1.5);
  double loss = 0;
  EXPECT_EQ(clip_grad_norm_reading(reading, 1.5, Tensor::from_vector<double>({2.625}, {}), loss), expected);
  EXPECT_EQ(loss, 2.625);
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_EQ(reading[i].second.grad().to_vector<float>(), plain[i].second.grad().to_vector<float>());
  EXPECT_THROW(clip_grad_norm_reading(reading, 1.5, Tensor::from_vector<float>({1.0f}, {}), loss), Error);
}

TEST(DeviceClip, NonFiniteOrSmallNormLeavesGradientsAlone) {
  std::vector<Tensor> g = {Tensor::from_vector<float>({3, 4}, {2})};
  clip_by_stats(g, grad_stats_on_device(g, Device::CPU), 5.0);  // norm 5 is not above 5
  EXPECT_EQ(g[0].to_vector<float>(), (std::vector<float>{3, 4}));
  clip_by_stats(g, grad_stats_on_device(g, Device::CPU), 0.0);  // max_norm 0: measure only
  EXPECT_EQ(g[0].to_vector<float>(), (std::vector<float>{3, 4}));
  std::vector<Tensor> bad = {Tensor::from_vector<float>({3, NAN}, {2})};
  clip_by_stats(bad, grad_stats_on_device(bad, Device::CPU), 1.0);
  EXPECT_EQ(bad[0].to_vector<float>()[0], 3.0f);
}

TEST(SyncCounter, CountsNotedSynchronisationsAndACpuStepMakesNone) {
  const int64_t before = cuda::sync_count();
  cuda::note_sync();
  cuda::note_sync();
  EXPECT_EQ(cuda::sync_count(), before + 2);
  // A CPU optimizer step (clipping with its read, AdamW) synchronises with no device.
  Tensor p = Tensor::from_vector<float>({1, 2, 3}, {3});
  p.set_requires_grad(true);
  p.set_grad(Tensor::from_vector<float>({0.5f, -1, 2}, {3}));
  NamedTensors params = {{"p", p}};
  AdamW adam(params, AdamWOptions{});
  const int64_t start = cuda::sync_count();
  clip_grad_norm(params, 1.0);
  adam.step(1e-3);
  EXPECT_EQ(cuda::sync_count(), start);
}

}  // namespace
}  // namespace tstl
