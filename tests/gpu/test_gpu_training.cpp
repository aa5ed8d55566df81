// A training step of the whole decoder on CUDA against the same step on the CPU: loss, every
// parameter gradient and the parameters after one AdamW update, for each variant (f32).
#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "common/variant_param.h"
#include "core/autograd.h"
#include "layers/decoder.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace tstl {
namespace {

class GpuTraining : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuTraining, StepMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig c;
  c.variant = GetParam();
  c.layers = 2, c.hidden = 48, c.heads = 3, c.ffn = 80, c.vocab_size = 37, c.train_len = 24;
  c.logn = GetParam() == Variant::Rope;
  Decoder cpu(c, DType::F32, Device::CPU), gpu(c, DType::F32, Device::CUDA);
  cpu.initialize(11);
  gpu.initialize(11);  // the same Philox values on both devices
  std::vector<int32_t> ids(2 * 23);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % 37);
  const Tensor inputs = Tensor::from_vector(std::vector<int32_t>(ids.begin(), ids.end()), {2, 23});
  std::vector<int32_t> shifted(ids.begin() + 1, ids.end());
  shifted.push_back(0);
  const Tensor targets = Tensor::from_vector(shifted, {2, 23});
  Tensor loss_cpu = cpu.loss(inputs, targets), loss_gpu = gpu.loss(inputs, targets);
  EXPECT_NEAR(loss_gpu.item(), loss_cpu.item(), 1e-5 * loss_cpu.item());
  loss_cpu.backward();
  loss_gpu.backward();
  for (size_t i = 0; i < cpu.named_parameters().size(); ++i) {
    const auto& [name, p] = cpu.named_parameters()[i];
    EXPECT_LT(testing::max_relative_difference(gpu.named_parameters()[i].second.grad(), p.grad()), 1e-4) << name;
  }
  EXPECT_NEAR(grad_norm(gpu.named_parameters()), grad_norm(cpu.named_parameters()), 1e-4);
  AdamWOptions options;
  options.lr = 1e-2;
  AdamW adam_cpu(cpu.named_parameters(), options), adam_gpu(gpu.named_parameters(), options);
  adam_cpu.step();
  adam_gpu.step();
  for (size_t i = 0; i < cpu.named_parameters().size(); ++i) {
    const auto& [name, p] = cpu.named_parameters()[i];
    EXPECT_LT(testing::max_relative_difference(gpu.named_parameters()[i].second, p), 1e-4) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuTraining,
                         testing::all_variants(), testing::variant_test_name);

}  // namespace
}  // namespace tstl
