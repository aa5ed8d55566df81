// CUDA vs CPU parity of the layer ops: each op runs on both backends on the same random inputs of
// odd sizes, and its output and every input gradient (seeded by the same random output gradient)
// must agree: f32 to 1e-5 relative (max |diff| / max |ref|), bf16 to 2e-2. For bf16 the inputs
// and the seed are first rounded to bf16, so the f32 CPU run sees exactly the values the CUDA run
// loads and the comparison measures only the kernels' compute and output rounding.
// Every test is skipped where no CUDA device is present (and compiles in the CPU-only build).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/gradcheck.h"
#include "layers/coca.h"
#include "layers/flash_attention.h"
#include "layers/heads.h"
#include "layers/keynorm.h"
#include "layers/linear.h"
#include "layers/norm.h"
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

// ---- Norms -----------------------------------------------------------------------------------

TEST(GpuLayers, NormsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // Rows not a multiple of 8 (rows per block), C below, at and above a warp, and more than 64
  // rows so the parameter gradients take several row chunks.
  const Shape shapes[] = {{3, 5, 37}, {7, 100}, {2, 1}, {130, 32}};
  for (DType dtype : kDtypes) {
    for (const Shape& shape : shapes) {
      const Shape row{shape.back()};
      const DeviceOp ln = [](const std::vector<Tensor>& in, Device) { return layer_norm(in[0], in[1], in[2]); };
      const DeviceOp rms = [](const std::vector<Tensor>& in, Device) { return rms_norm(in[0], in[1]); };
      expect_parity("layer_norm " + shape_str(shape), ln, random_inputs({shape, row, row}, 4, dtype), dtype);
      expect_parity("rms_norm " + shape_str(shape), rms, random_inputs({shape, row}, 5, dtype), dtype);
    }
  }
}

// ---- Heads -----------------------------------------------------------------------------------

TEST(GpuLayers, SplitAndMergeHeadsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t batch = 2, tokens = 5, heads = 3, head_dim = 7;
  for (DType dtype : kDtypes) {
    for (int which = 0; which < 3; ++which) {
      const DeviceOp split = [which](const std::vector<Tensor>& in, Device) { return split_heads(in[0], heads, which); };
      expect_parity("split_heads " + std::to_string(which), split,
                    random_inputs({{batch, tokens, 3 * heads * head_dim}}, 6, dtype), dtype);
    }
    const DeviceOp merge = [](const std::vector<Tensor>& in, Device) { return merge_heads(in[0]); };
    expect_parity("merge_heads", merge, random_inputs({{batch, heads, tokens, head_dim}}, 7, dtype), dtype);
  }
}

// ---- Linear and MLP (core gemm / elementwise kernels under the layer ops) --------------------

TEST(GpuLayers, LinearAndMlpMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (DType dtype : kDtypes) {
    const DeviceOp lin = [](const std::vector<Tensor>& in, Device) { return linear(in[0], in[1], in[2]); };
    expect_parity("linear", lin, random_inputs({{2, 5, 7}, {9, 7}, {9}}, 8, dtype, 0.5), dtype);
    const DeviceOp mlp = [](const std::vector<Tensor>& in, Device) {
      return gelu_mlp(in[0], in[1], in[2], in[3], in[4]);
    };
    expect_parity("gelu_mlp", mlp, random_inputs({{3, 5, 6}, {11, 6}, {11}, {6, 11}, {6}}, 9, dtype, 0.5), dtype);
  }
}

// ---- Flash attention -------------------------------------------------------------------------

struct FlashCase {
  int64_t batch, heads, n_queries, n_keys, head_dim;
  bool alibi, logn;
  int64_t query_offset;  // -1: M - N
};

TEST(GpuLayers, FlashAttentionMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // Partial tiles on both axes, every flag combination, N < M (decoding against a cache), an
  // explicit offset, and each compiled head-dim bucket (64, 128, 256) with padded dims.
  const FlashCase cases[] = {
      {2, 3, 37, 37, 16, false, false, -1}, {1, 2, 70, 70, 64, true, false, -1},
      {2, 2, 45, 45, 24, false, true, -1},  {1, 3, 33, 33, 40, true, true, -1},
      {2, 2, 1, 9, 64, true, true, -1},     {1, 2, 13, 50, 10, false, false, -1},
      {1, 1, 20, 31, 8, true, false, 4},    {1, 2, 29, 29, 100, false, false, -1},
      {1, 1, 19, 19, 200, true, true, -1},
  };
  for (DType dtype : kDtypes) {
    for (const FlashCase& c : cases) {
      const std::string what = "flash B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " N" +
                               std::to_string(c.n_queries) + " M" + std::to_string(c.n_keys) + " d" +
                               std::to_string(c.head_dim) + (c.alibi ? " alibi" : "") + (c.logn ? " logn" : "");
      const DeviceOp op = [&c](const std::vector<Tensor>& in, Device device) {
        AttentionOptions opt;
        opt.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
        opt.query_offset = c.query_offset;
        if (c.alibi) {
          std::vector<float> slopes;
          for (int64_t h = 0; h < c.heads; ++h) slopes.push_back(0.5f / static_cast<float>(h + 1));
          opt.alibi_slopes = Tensor::from_vector(slopes, {c.heads}).to(device);
        }
        if (c.logn) opt.logn = logn_factors(c.n_keys - c.n_queries, c.n_queries, 8, false, DType::F32, device);
        return flash_attention(in[0], in[1], in[2], opt);
      };
      const Shape q_shape{c.batch, c.heads, c.n_queries, c.head_dim}, kv_shape{c.batch, c.heads, c.n_keys, c.head_dim};
      expect_parity(what, op, random_inputs({q_shape, kv_shape, kv_shape}, 10, dtype), dtype);
    }
  }
}

TEST(GpuLayers, FlashAttentionIsDeterministic) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const Shape shape{2, 2, 77, 64};
  const std::vector<Tensor> inputs = random_inputs({shape, shape, shape}, 11, DType::F32);
  const Tensor g = random_input(shape, 12, 1.0, false).to(DType::F32);
  const DeviceOp op = [](const std::vector<Tensor>& in, Device) {
    AttentionOptions opt;
    opt.scale = 0.125;
    return flash_attention(in[0], in[1], in[2], opt);
  };
  const OpRun first = run_op(op, inputs, g, DType::F32, Device::CUDA);
  const OpRun second = run_op(op, inputs, g, DType::F32, Device::CUDA);
  EXPECT_EQ(first.out.to_vector<float>(), second.out.to_vector<float>());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(first.grads[i].to_vector<float>(), second.grads[i].to_vector<float>()) << i;
}

}  // namespace
}  // namespace tstl
