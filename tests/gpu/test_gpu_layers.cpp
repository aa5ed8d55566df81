// CUDA vs CPU parity of the layer ops: each op runs on both backends on the same random inputs of
// odd sizes, and its output and every input gradient (seeded by the same random output gradient)
// must agree: f32 to 1e-5 relative (max |diff| / max |ref|), bf16 to 2e-2. For bf16 the inputs
// and the seed are first rounded to bf16, so the f32 CPU run sees exactly the values the CUDA run
// loads and the comparison measures only the kernels' compute and output rounding.
// Every test is skipped where no CUDA device is present (and compiles in the CPU-only build).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "layers/coca.h"
#include "layers/keynorm.h"
#include "layers/rope.h"

namespace tstl {
namespace {

using testing::max_relative_difference;
using testing::random_input;

// The op under test: takes the activations (on `device`, in the dtype under test) and builds
// its constants (tables) on that device itself.
using DeviceOp = std::function<Tensor(const std::vector<Tensor>& inputs, Device device)>;

struct OpRun {
  Tensor out;                 // f32, CPU
  std::vector<Tensor> grads;  // f32, CPU; one per input
};

OpRun run_op(const DeviceOp& op, const std::vector<Tensor>& inputs, const Tensor& seed, DType dtype, Device device) {
  std::vector<Tensor> on_device;
  for (const Tensor& x : inputs) {
    Tensor t = x.to(dtype).to(device);
    t.set_requires_grad(true);
    on_device.push_back(t);
  }
  OpRun run;
  Tensor out = op(on_device, device);
  out.backward(seed.to(out.dtype()).to(device));
  run.out = out.detach().to(Device::CPU).to(DType::F32);
  for (const Tensor& t : on_device) {
    EXPECT_TRUE(t.grad().defined());
    run.grads.push_back(t.grad().defined() ? t.grad().to(Device::CPU).to(DType::F32) : Tensor());
  }
  return run;
}

Tensor round_to(const Tensor& x, DType dtype) { return dtype == DType::BF16 ? x.to(DType::BF16).to(DType::F32) : x; }

// Random f32 CPU inputs of the given shapes (N(0, std)), rounded to the dtype under test.
std::vector<Tensor> random_inputs(const std::vector<Shape>& shapes, uint64_t seed, DType dtype, double std = 1.0) {
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < shapes.size(); ++i)
    inputs.push_back(round_to(random_input(shapes[i], seed + 17 * i, std, false).to(DType::F32), dtype));
  return inputs;
}

double tolerance(DType dtype) { return dtype == DType::BF16 ? 2e-2 : 1e-5; }

// Runs op on CPU (f32) and CUDA (dtype) and compares the output and each input gradient.
void expect_parity(const std::string& what, const DeviceOp& op, const std::vector<Tensor>& inputs, DType dtype,
                   uint64_t seed = 99) {
  SCOPED_TRACE(what + " (" + dtype_name(dtype) + ")");
  Shape out_shape;
  {
    NoGradGuard no_grad;
    out_shape = op(inputs, Device::CPU).shape();
  }
  const Tensor g = round_to(random_input(out_shape, seed, 1.0, false).to(DType::F32), dtype);
  const OpRun ref = run_op(op, inputs, g, DType::F32, Device::CPU);
  const OpRun dev = run_op(op, inputs, g, dtype, Device::CUDA);
  const double tol = tolerance(dtype);
  EXPECT_LT(max_relative_difference(dev.out, ref.out), tol) << "forward";
  ASSERT_EQ(dev.grads.size(), ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    if (!ref.grads[i].defined() || !dev.grads[i].defined()) continue;
    EXPECT_LT(max_relative_difference(dev.grads[i], ref.grads[i]), tol) << "gradient of input " << i;
  }
}

const DType kDtypes[] = {DType::F32, DType::BF16};

// ---- RoPE ------------------------------------------------------------------------------------

TEST(GpuLayers, RopeMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    Shape shape;
    int64_t start;
    RopeOptions options;
  };
  RopeOptions yarn;
  yarn.scaling = RopeScaling::YaRN;
  yarn.factor = 4;
  yarn.train_len = 16;
  const Case cases[] = {{{2, 3, 7, 10}, 0, {}}, {{3, 5, 33, 64}, 11, yarn}, {{1, 1, 1, 2}, 4, {}}};
  for (DType dtype : kDtypes) {
    for (const Case& c : cases) {
      const int64_t n = c.shape[2], d = c.shape[3];
      const DeviceOp op = [&](const std::vector<Tensor>& in, Device device) {
        const RopeTable table = rope_table(d, c.start, n, c.start + n, c.options, DType::F32, device);
        return rope(in[0], table);
      };
      expect_parity("rope " + shape_str(c.shape), op, random_inputs({c.shape}, 1, dtype), dtype);
    }
  }
}

// ---- KeyNorm ---------------------------------------------------------------------------------

TEST(GpuLayers, KeyNormMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // d below, at and above a warp; rows not a multiple of the 8 rows per block.
  const Shape shapes[] = {{2, 3, 7, 10}, {3, 37}, {2, 5, 9, 100}, {1, 1, 1, 1}, {5, 32}};
  for (DType dtype : kDtypes) {
    for (const Shape& shape : shapes) {
      const DeviceOp op = [](const std::vector<Tensor>& in, Device) { return key_norm(in[0]); };
      expect_parity("key_norm " + shape_str(shape), op, random_inputs({shape}, 2, dtype, 3.0), dtype);
    }
  }
}

TEST(GpuLayers, KeyNormClampedRowMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // Row 0 is zero (clamped branch: kn = 0, dk = g / eps), row 1 is ordinary.
  const Tensor k = Tensor::from_vector(std::vector<float>{0, 0, 0, 0.5f, -1.25f, 2}, {2, 3});
  const Tensor g = Tensor::from_vector(std::vector<float>{1, -2, 3, 0.5f, 1.5f, -1}, {2, 3});
  const DeviceOp op = [](const std::vector<Tensor>& in, Device) { return key_norm(in[0], 1e-6); };
  const OpRun ref = run_op(op, {k}, g, DType::F32, Device::CPU);
  const OpRun dev = run_op(op, {k}, g, DType::F32, Device::CUDA);
  EXPECT_LT(max_relative_difference(dev.out, ref.out), 1e-5);
  EXPECT_LT(max_relative_difference(dev.grads[0], ref.grads[0]), 1e-5);
  const auto dk = dev.grads[0].to_vector<double>();
  EXPECT_NEAR(dk[1], -2e6, 1.0);  // g / eps in the clamped row
}

// ---- CoCA ------------------------------------------------------------------------------------

TEST(GpuLayers, CocaPartsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  using Part = Tensor (*)(const Tensor&, const RopeTable&);
  const std::pair<const char*, Part> parts[] = {{"coca_query", &coca_query},
                                                {"coca_key", &coca_key},
                                                {"coca_strict_query", &coca_strict_query},
                                                {"coca_strict_key", &coca_strict_key}};
  RopeOptions ntk;
  ntk.scaling = RopeScaling::DynamicNTK;
  ntk.factor = 2;
  ntk.train_len = 8;
  const Shape shapes[] = {{2, 3, 7, 10}, {1, 5, 33, 64}};
  for (DType dtype : kDtypes) {
    for (const auto& [name, part] : parts) {
      for (const Shape& shape : shapes) {
        const int64_t n = shape[2], d = shape[3];
        const DeviceOp op = [&, part = part](const std::vector<Tensor>& in, Device device) {
          const RopeTable table = rope_table(d, 3, n, 3 + n, ntk, DType::F32, device);
          return part(in[0], table);
        };
        expect_parity(std::string(name) + " " + shape_str(shape), op, random_inputs({shape}, 3, dtype), dtype);
      }
    }
  }
}

}  // namespace
}  // namespace tstl
