// One table of every generic op of core/ops.h, each run on CUDA and on the CPU reference with the
// same random inputs of odd sizes, comparing the forward output and every input gradient (the
// backward seeded with the same random tensor), in f32 and bf16. For bf16 the inputs are rounded
// to bf16 once and the CPU runs f32 on exactly those values. Tolerances: gpu_compare.h.
// Skipped where no CUDA device is present; builds in the CPU-only configuration too.
#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "gpu/gpu_compare.h"

namespace tstl {
namespace {

using gpu_test::expect_close;
using gpu_test::tolerance;
using Inputs = std::vector<Tensor>;

struct ParityCase {
  const char* name;
  std::vector<Shape> shapes;  // the floating inputs, N(0, input_std^2), all requiring grad
  double input_std;
  std::function<Tensor(const Inputs&)> fn;  // integer inputs are made inside, on in[0]'s device
};

Tensor ids64(const std::vector<int64_t>& v, const Shape& shape, const Tensor& like) {
  return Tensor::from_vector(v, shape, like.device());
}
Tensor ids32(const std::vector<int32_t>& v, const Shape& shape, const Tensor& like) {
  return Tensor::from_vector(v, shape, like.device());
}

// Targets in [0, vocab) with every seventh row ignored (ignore_index), deterministic.
std::vector<int64_t> targets(int64_t rows, int64_t vocab, int64_t ignore_index) {
  std::vector<int64_t> t(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) t[r] = r % 7 == 3 ? ignore_index : (r * 37 + 11) % vocab;
  return t;
}

std::vector<int64_t> repeated_ids(int64_t n, int64_t vocab) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = (i * i * 7 + 3) % vocab;  // many repeats, unsorted
  return ids;
}

std::vector<ParityCase> parity_table() {
  return {
      {"matmul_2d", {{3, 5}, {5, 7}}, 1.0, [](const Inputs& in) { return matmul(in[0], in[1]); }},
      {"matmul_batched", {{3, 4, 5}, {3, 5, 7}}, 1.0, [](const Inputs& in) { return matmul(in[0], in[1]); }},
      {"matmul_batched_4d", {{2, 3, 4, 5}, {2, 3, 5, 6}}, 1.0, [](const Inputs& in) { return matmul(in[0], in[1]); }},
      {"matmul_shared_b", {{3, 4, 5}, {5, 7}}, 1.0, [](const Inputs& in) { return matmul(in[0], in[1]); }},
      {"matmul_shared_b_transposed", {{3, 4, 5}, {7, 5}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], false, true); }},
      {"matmul_transposed_a", {{3, 5, 4}, {3, 5, 7}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], true, false); }},
      {"matmul_transposed_b", {{3, 4, 5}, {3, 7, 5}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], false, true); }},
      {"matmul_both_transposed", {{2, 5, 3}, {2, 7, 5}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], true, true); }},
      {"matmul_transposed_a_shared_b", {{3, 5, 4}, {5, 7}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], true, false); }},
      {"matmul_both_transposed_shared_b", {{3, 5, 4}, {7, 5}}, 1.0,
       [](const Inputs& in) { return matmul(in[0], in[1], true, true); }},
      {"matmul_large", {{37, 129}, {129, 67}}, 1.0, [](const Inputs& in) { return matmul(in[0], in[1]); }},
      {"add", {{3, 5, 7}, {3, 5, 7}}, 1.0, [](const Inputs& in) { return add(in[0], in[1]); }},
      {"add_row", {{3, 5, 7}, {7}}, 1.0, [](const Inputs& in) { return add(in[0], in[1]); }},
      {"add_row_tall", {{301, 45}, {45}}, 1.0, [](const Inputs& in) { return add(in[0], in[1]); }},
      {"sub", {{3, 5, 7}, {3, 5, 7}}, 1.0, [](const Inputs& in) { return sub(in[0], in[1]); }},
      {"sub_row", {{5, 7}, {7}}, 1.0, [](const Inputs& in) { return sub(in[0], in[1]); }},
      {"mul", {{3, 5, 7}, {3, 5, 7}}, 1.0, [](const Inputs& in) { return mul(in[0], in[1]); }},
      {"mul_row", {{3, 5, 7}, {7}}, 1.0, [](const Inputs& in) { return mul(in[0], in[1]); }},
      {"scale", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return scale(in[0], -1.7); }},
      {"gelu", {{3, 5, 7}}, 2.0, [](const Inputs& in) { return gelu(in[0]); }},
      {"embedding_i64", {{11, 5}}, 1.0,
       [](const Inputs& in) { return embedding(in[0], ids64({3, 0, 10, 3, 7, 3, 1}, {7}, in[0])); }},
      {"embedding_i32_repeats", {{17, 33}}, 1.0,
       [](const Inputs& in) {
         const std::vector<int64_t> v = repeated_ids(3 * 101, 17);
         return embedding(in[0], ids32(std::vector<int32_t>(v.begin(), v.end()), {3, 101}, in[0]));
       }},
      {"sum", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return sum(in[0]); }},
      {"sum_large", {{100003}}, 1.0, [](const Inputs& in) { return sum(in[0]); }},
      {"mean", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return mean(in[0]); }},
      {"permute_4d", {{3, 5, 7, 2}}, 1.0, [](const Inputs& in) { return permute(in[0], {2, 0, 3, 1}); }},
      {"permute_3d", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return permute(in[0], {0, 2, 1}); }},
      {"narrow_middle", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return narrow(in[0], 1, 1, 3); }},
      {"narrow_first", {{5, 3, 7}}, 1.0, [](const Inputs& in) { return narrow(in[0], 0, 2, 3); }},
      {"narrow_last", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return narrow(in[0], -1, 4, 3); }},
      {"cross_entropy", {{3, 5, 13}}, 3.0,
       [](const Inputs& in) {
         return cross_entropy(in[0], ids64({0, 12, 5, -1, 3, 3, 7, 1, 2, -1, 11, 4, 6, 8, 9}, {3, 5}, in[0]));
       }},
      {"cross_entropy_ignore_3_i32", {{37, 1001}}, 3.0,
       [](const Inputs& in) {
         const std::vector<int64_t> t = targets(37, 1001, 3);
         return cross_entropy(in[0], ids32(std::vector<int32_t>(t.begin(), t.end()), {37}, in[0]), 3);
       }},
      {"cross_entropy_all_ignored", {{4, 9}}, 1.0,
       [](const Inputs& in) { return cross_entropy(in[0], ids64({-1, -1, -1, -1}, {4}, in[0])); }},
      {"dropout", {{3, 5, 7}}, 1.0, [](const Inputs& in) { return dropout(in[0], 0.3, 42, 5); }},
      {"chain_used_twice", {{5, 7}, {7, 7}}, 1.0,
       [](const Inputs& in) {
         Tensor h = gelu(matmul(in[0], in[1]));
         return add(h, mul(h, in[0]));  // h reaches the output along two paths
       }},
      {"reshape_mean", {{3, 5, 7}}, 1.0,
       [](const Inputs& in) { return mean(mul(in[0].reshape({15, 7}), in[0].reshape({15, 7}))); }},
  };
}

struct ParityParam {
  size_t index;
  DType dtype;
};

std::vector<ParityParam> parity_params() {
  std::vector<ParityParam> params;
  const size_t n = parity_table().size();
  for (DType dtype : {DType::F32, DType::BF16})
    for (size_t i = 0; i < n; ++i) params.push_back({i, dtype});
  return params;
}

// Readable names in test output (the default prints the struct's bytes).
void PrintTo(const ParityParam& p, std::ostream* os) {
  *os << parity_table()[p.index].name << " " << dtype_name(p.dtype);
}

class GpuParity : public ::testing::TestWithParam<ParityParam> {};

TEST_P(GpuParity, ForwardAndGradientsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const ParityParam param = GetParam();
  const ParityCase c = parity_table()[param.index];
  const double tol = tolerance(param.dtype);

  Inputs cpu_in, gpu_in;
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    Generator gen{1000 + i, 0};
    Tensor base = randn(c.shapes[i], gen, DType::F32);
    if (c.input_std != 1.0) base = scale(base, c.input_std);
    const Tensor rounded = base.to(param.dtype);  // CPU, the values both sides see
    Tensor cpu = rounded.to(DType::F32);
    Tensor gpu = rounded.to(Device::CUDA);
    cpu.set_requires_grad(true);
    gpu.set_requires_grad(true);
    cpu_in.push_back(cpu);
    gpu_in.push_back(gpu);
  }

  const Tensor cpu_out = c.fn(cpu_in);
  const Tensor gpu_out = c.fn(gpu_in);
  expect_close(gpu_out, cpu_out, tol, std::string(c.name) + " forward");

  Generator seed_gen{77, 0};
  const Tensor seed = randn(cpu_out.shape(), seed_gen, DType::F32).to(gpu_out.dtype());  // CPU
  cpu_out.backward(seed.to(DType::F32));
  gpu_out.backward(seed.to(Device::CUDA));
  for (size_t i = 0; i < cpu_in.size(); ++i)
    expect_close(gpu_in[i].grad(), cpu_in[i].grad(), tol, std::string(c.name) + " gradient of input " + std::to_string(i));
}

INSTANTIATE_TEST_SUITE_P(Ops, GpuParity, ::testing::ValuesIn(parity_params()),
                         [](const ::testing::TestParamInfo<ParityParam>& info) {
                           return std::string(parity_table()[info.param.index].name) + "_" +
                                  dtype_name(info.param.dtype);
                         });

}  // namespace
}  // namespace tstl
