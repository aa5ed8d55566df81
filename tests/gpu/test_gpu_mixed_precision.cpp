// bf16 mixed precision on CUDA against the CPU's bf16 path (docs/training.md, "Mixed precision"):
// the cast kernel bit for bit, and a mixed-precision training step of the whole decoder (bf16
// copies of f32 masters) for each variant. Skipped without a device.
//
// Tolerances: the cast is exact on both devices (the same float_to_bf16). The step: both devices
// round at the same points (op outputs and input gradients) but sum in other orders, so a value
// near a rounding boundary can round the other way and carry a bf16 ulp (2^-8 relative) through the
// following ops: logits and loss within gpu_test::tolerance(bf16) = 2e-2 of max |CPU value|, master
// gradients and the parameters after AdamW within 5e-2.
#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "common/variant_param.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "gpu/gpu_compare.h"
#include "layers/decoder.h"
#include "optim/adamw.h"

namespace tstl {
namespace {

TEST(GpuMixedPrecision, CastMatchesTheCpuBitForBitForwardAndBackward) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  Generator gen{3, 0};
  const Tensor x = randn({1000}, gen, DType::F32);
  for (const auto& [from, to] : {std::pair{DType::F32, DType::BF16}, {DType::BF16, DType::F32}, {DType::F64, DType::BF16},
                                 {DType::F32, DType::F64}}) {
    const Tensor source = cast(x, from);
    const Tensor cpu = cast(source, to), gpu = cast(source.to(Device::CUDA), to);
    ASSERT_EQ(gpu.dtype(), to);
    EXPECT_EQ(gpu.to_vector<double>(), cpu.to_vector<double>()) << dtype_name(from) << " -> " << dtype_name(to);
    Tensor leaf_cpu = source.detach(), leaf_gpu = source.to(Device::CUDA);
    leaf_cpu.set_requires_grad(true);
    leaf_gpu.set_requires_grad(true);
    const Tensor seed = cast(randn({1000}, gen, DType::F32), to);
    cast(leaf_cpu, to).backward(seed);
    cast(leaf_gpu, to).backward(seed.to(Device::CUDA));
    ASSERT_EQ(leaf_gpu.grad().dtype(), from);
    EXPECT_EQ(leaf_gpu.grad().to_vector<double>(), leaf_cpu.grad().to_vector<double>());
  }
}

class GpuMixedPrecision : public ::testing::TestWithParam<Variant> {};

TEST_P(GpuMixedPrecision, StepMatchesTheCpuBf16Path) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig c;
  c.variant = GetParam();
  c.layers = 2, c.hidden = 48, c.heads = 3, c.ffn = 80, c.vocab_size = 37, c.train_len = 24;
  c.logn = GetParam() == Variant::Rope;
  Decoder cpu(c, DType::F32, Device::CPU), gpu(c, DType::F32, Device::CUDA);
  cpu.initialize(11);
  gpu.initialize(11);
  std::vector<int32_t> ids(2 * 24);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % 37);
  const Tensor inputs = Tensor::from_vector(std::vector<int32_t>(ids.begin(), ids.end() - 2), {2, 23});
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>(ids.begin() + 1, ids.end() - 1), {2, 23});
  cpu.cast_weights(DType::BF16);
  gpu.cast_weights(DType::BF16);
  const Tensor logits_cpu = cpu.forward(inputs), logits_gpu = gpu.forward(inputs);
  ASSERT_EQ(logits_gpu.dtype(), DType::BF16);
  gpu_test::expect_close(logits_gpu, logits_cpu, gpu_test::tolerance(DType::BF16), "logits");
  Tensor loss_cpu = cpu.loss(inputs, targets), loss_gpu = gpu.loss(inputs, targets);
  ASSERT_EQ(loss_gpu.dtype(), DType::F32);
  EXPECT_NEAR(loss_gpu.item(), loss_cpu.item(), 2e-2 * loss_cpu.item());
  loss_cpu.backward();
  loss_gpu.backward();
  for (size_t i = 0; i < cpu.named_parameters().size(); ++i) {
    const auto& [name, p] = cpu.named_parameters()[i];
    const Tensor g = gpu.named_parameters()[i].second.grad();
    ASSERT_EQ(g.dtype(), DType::F32) << name << ": master gradients are f32";
    gpu_test::expect_close(g, p.grad(), 5e-2, name + " gradient");
  }
  AdamWOptions options;
  options.lr = 1e-2;
  AdamW adam_cpu(cpu.named_parameters(), options), adam_gpu(gpu.named_parameters(), options);
  adam_cpu.step();
  adam_gpu.step();
  for (size_t i = 0; i < cpu.named_parameters().size(); ++i) {
    const auto& [name, p] = cpu.named_parameters()[i];
    gpu_test::expect_close(gpu.named_parameters()[i].second, p, 5e-2, name + " after AdamW");
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuMixedPrecision, testing::all_variants(), testing::variant_test_name);

}  // namespace
}  // namespace tstl
