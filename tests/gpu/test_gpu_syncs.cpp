// The training step without host synchronisation (docs/gpu.md): the multi-tensor gradient
// statistics and clipping and the multi-tensor AdamW against the CPU, a decoder training step
// counted at exactly one synchronisation (core/cuda_sync.h), and invalid token ids: caught on the
// host before upload with the CPU's messages, and harmless (NaN, never an address) when they reach
// the device anyway. Skipped where no CUDA device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "core/autograd.h"
#include "core/cuda_sync.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/decoder.h"
#include "optim/adamw.h"
#include "optim/adamw_multi_tensor.h"
#include "optim/clip.h"
#include "common/error_of.h"

namespace tstl {
namespace {

#define SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

// Uniform in [-scale, scale), element i a function of (seed, i).
Tensor seeded(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * (2 * uniform_from_bits(philox_at(seed, i).v[0]) - 1);
  return Tensor::from_vector<float>(v, {n});
}

std::vector<Tensor> to_device(const std::vector<Tensor>& host) {
  std::vector<Tensor> out;
  for (const Tensor& t : host) out.push_back(t.to(Device::CUDA));
  return out;
}

// Sizes: one element, odd sizes, one larger than a grid pass (256 x 256), and more tensors than
// one launch's list holds (2100 small ones), so the stats kernel's partials span several launches.
std::vector<Tensor> gradient_list() {
  std::vector<Tensor> grads;
  const std::vector<int64_t> sizes = {1, 3, 1000, 70001};
  for (size_t k = 0; k < sizes.size(); ++k) grads.push_back(seeded(sizes[k], 10 + k));
  for (uint64_t k = 0; k < 2100; ++k) grads.push_back(seeded(1 + static_cast<int64_t>(k % 7), 100 + k));
  return grads;
}

TEST(GpuClip, MultiTensorStatsAndClippingMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  std::vector<Tensor> cpu = gradient_list();
  std::vector<Tensor> gpu = to_device(cpu);
  const Tensor stats_cpu = grad_stats_on_device(cpu, Device::CPU), stats_gpu = grad_stats_on_device(gpu, Device::CUDA);
  const GradStats c = read_grad_stats(stats_cpu), g = read_grad_stats(stats_gpu);
  EXPECT_NEAR(g.sum_squares, c.sum_squares, 1e-12 * c.sum_squares);  // both in double, other orders
  EXPECT_EQ(g.nonfinite, 0);
  const double max_norm = 0.5 * std::sqrt(c.sum_squares);
  clip_by_stats(cpu, stats_cpu, max_norm);
  clip_by_stats(gpu, stats_gpu, max_norm);
  for (size_t k = 0; k < cpu.size(); ++k)
    ASSERT_LT(testing::max_relative_difference(gpu[k].to(Device::CPU), cpu[k]), 1e-6) << "tensor " << k;
  // Deterministic: the same statistics bit for bit on a second pass.
  EXPECT_EQ(read_grad_stats(grad_stats_on_device(gpu, Device::CUDA)).sum_squares,
            read_grad_stats(grad_stats_on_device(gpu, Device::CUDA)).sum_squares);
}

TEST(GpuClip, NonFiniteGradientsAreCountedAndLeftAlone) {
  SKIP_WITHOUT_CUDA();
  std::vector<float> v = {1, 2, NAN, std::numeric_limits<float>::infinity(), 5};
  std::vector<Tensor> gpu = {Tensor::from_vector<float>(v, {5}).to(Device::CUDA), seeded(300, 3).to(Device::CUDA)};
  const Tensor stats = grad_stats_on_device(gpu, Device::CUDA);
  clip_by_stats(gpu, stats, 1e-3);
  EXPECT_EQ(read_grad_stats(stats).nonfinite, 2);
  const std::vector<float> after = gpu[0].to(Device::CPU).to_vector<float>();
  EXPECT_EQ(after[0], 1.0f);
  EXPECT_EQ(after[4], 5.0f);
  EXPECT_EQ(testing::max_relative_difference(gpu[1].to(Device::CPU), seeded(300, 3)), 0.0);
}

TEST(GpuAdamW, OneLaunchForManyParametersMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  // 600 parameters (more than one launch's list holds) of assorted sizes, decayed or not.
  NamedTensors cpu, gpu;
  for (uint64_t k = 0; k < 600; ++k) {
    const int64_t n = k == 0 ? 300000 : 1 + static_cast<int64_t>(k % 37);
    const Shape shape = k % 2 ? Shape{n} : Shape{1, n};  // 2-D ones decay (optim/adamw.h's default)
    Tensor p = seeded(n, 1000 + k).reshape(shape);
    Tensor q = p.to(Device::CUDA);
    p.set_requires_grad(true);
    q.set_requires_grad(true);
    cpu.emplace_back("p" + std::to_string(k), p);
    gpu.emplace_back("p" + std::to_string(k), q);
  }
  AdamWOptions options;
  options.lr = 1e-2;
  AdamW adam_cpu(cpu, options), adam_gpu(gpu, options);
  for (uint64_t step = 0; step < 3; ++step) {
    for (size_t k = 0; k < cpu.size(); ++k) {
      const Tensor g = seeded(cpu[k].second.numel(), 50000 + 1000 * step + k).reshape(cpu[k].second.shape());
      cpu[k].second.set_grad(g);
      gpu[k].second.set_grad(g.to(Device::CUDA));
    }
    adam_cpu.step();
    adam_gpu.step();
  }
  for (size_t k = 0; k < cpu.size(); ++k)
    ASSERT_LT(testing::max_relative_difference(gpu[k].second.to(Device::CPU), cpu[k].second), 1e-6) << cpu[k].first;
  const NamedTensors state_cpu = adam_cpu.named_state(), state_gpu = adam_gpu.named_state();
  for (size_t k = 0; k < state_cpu.size(); ++k)
    ASSERT_LT(testing::max_relative_difference(state_gpu[k].second.to(Device::CPU), state_cpu[k].second), 1e-5)
        << state_cpu[k].first;
}

TEST(GpuAdamW, WritesTheOptionalBf16CopyOfEachUpdatedParameter) {
#ifndef TSTL_WITH_CUDA
  GTEST_SKIP() << "built without CUDA";
#else
  SKIP_WITHOUT_CUDA();
  Tensor p = seeded(5000, 1).to(Device::CUDA), g = seeded(5000, 2).to(Device::CUDA);
  Tensor m = Tensor::zeros({5000}, DType::F32, Device::CUDA), v = Tensor::zeros({5000}, DType::F32, Device::CUDA);
  Tensor copy = Tensor::zeros({5000}, DType::BF16, Device::CUDA);
  AdamWScalars s;
  s.lr = 1e-2, s.beta1 = 0.9, s.beta2 = 0.95, s.eps = 1e-8;
  s.bias_correction1 = 0.1, s.bias_correction2_sqrt = std::sqrt(0.05);
  AdamWTensor e;
  e.param = p.data<float>(), e.grad = g.data<float>(), e.exp_avg = m.data<float>(), e.exp_avg_sq = v.data<float>();
  e.param_bf16 = copy.data<bf16>(), e.n = 5000, e.weight_decay = 0.1;
  kernels::adamw_multi_step_cuda(s, {e});
  const Tensor expected = p.to(Device::CPU).to(DType::BF16);  // round-to-nearest-even of the updated f32
  EXPECT_EQ(testing::max_relative_difference(copy.to(Device::CPU).to(DType::F32), expected.to(DType::F32)), 0.0);
#endif
}

TEST(GpuSyncs, ADecoderTrainingStepSynchronisesOnce) {
  SKIP_WITHOUT_CUDA();
  ModelConfig c;
  c.layers = 2, c.hidden = 48, c.heads = 3, c.ffn = 80, c.vocab_size = 37, c.train_len = 24;
  Decoder model(c, DType::F32, Device::CUDA);
  model.initialize(5);
  AdamW adam(model.named_parameters(), AdamWOptions{});
  std::vector<int32_t> ids(2 * 24);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % 37);
  const Tensor inputs = Tensor::from_vector(std::vector<int32_t>(ids.begin(), ids.end() - 2), {2, 23});
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>(ids.begin() + 1, ids.end() - 1), {2, 23});
  // The step of train/trainer.cpp without its logging: forward, backward, clipping, AdamW. The
  // count covers the calls routed through core/cuda_sync_cuda.h (docs/gpu.md lists, by
  // inspection, the synchronising calls of the step that are not: the uploads of the batch).
  auto step = [&] {
    Tensor loss = model.loss(inputs, targets);
    loss.backward();
    const double norm = clip_grad_norm(model.named_parameters(), 1.0);
    adam.step(1e-3);
    adam.zero_grad();
    return norm;
  };
  step();  // first use: handles and cached blocks
  for (int s = 0; s < 3; ++s) {
    const int64_t before = cuda::sync_count();
    const double norm = step();
    EXPECT_TRUE(std::isfinite(norm) && norm > 0) << norm;
    EXPECT_EQ(cuda::sync_count() - before, 1) << "step " << s;
  }
}

TEST(GpuErrors, HostIdsOutsideTheVocabularyAreReportedBeforeUpload) {
  SKIP_WITHOUT_CUDA();
  ModelConfig c;
  c.layers = 1, c.hidden = 16, c.heads = 2, c.ffn = 32, c.vocab_size = 11, c.train_len = 8;
  Decoder model(c, DType::F32, Device::CUDA);
  model.initialize(1);
  const Tensor good = Tensor::from_vector(std::vector<int32_t>{1, 2, 3, 4, 5}, {1, 5});
  const Tensor bad_ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 11, 4, -1}, {1, 5});
  const Tensor bad_targets = Tensor::from_vector(std::vector<int64_t>{0, -1, 5, 11, 2}, {1, 5});
  EXPECT_NE(error_of([&] { model.loss(bad_ids, good); }).find("embedding: id 11 at position 2 outside [0, 11)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model.loss(good, bad_targets, -1); }).find("cross_entropy: target 11 at row 3 outside [0, 11)"),
            std::string::npos);
}

TEST(GpuErrors, DeviceIdsOutsideTheVocabularyGiveNanNotAnAddress) {
  SKIP_WITHOUT_CUDA();
  const Tensor w = seeded(55, 9).reshape({11, 5});
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 11, 4, -1}, {5});
  const std::vector<float> out = embedding(w.to(Device::CUDA), ids.to(Device::CUDA)).to(Device::CPU).to_vector<float>();
  const std::vector<float> rows = w.to_vector<float>();
  for (int64_t i = 0; i < 5; ++i) {
    const int32_t id = ids.to_vector<int32_t>()[static_cast<size_t>(i)];
    for (int64_t col = 0; col < 5; ++col) {
      const float got = out[static_cast<size_t>(i * 5 + col)];
      if (id < 0 || id >= 11) {
        EXPECT_TRUE(std::isnan(got)) << "position " << i;
      } else {
        EXPECT_EQ(got, rows[static_cast<size_t>(id * 5 + col)]) << "position " << i;
      }
    }
  }
  const Tensor logits = Tensor::zeros({4, 6}, DType::F32, Device::CUDA);
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, -1, 5, 6}, {4}).to(Device::CUDA);
  EXPECT_TRUE(std::isnan(cross_entropy(logits, t, -1).item())) << "a bad target must make the loss non-finite";
}

}  // namespace
}  // namespace tstl
