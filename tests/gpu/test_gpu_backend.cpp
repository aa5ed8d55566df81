// The CUDA backend beyond op parity: the caching allocator's reuse, random streams equal to the
// CPU's (dropout masks bit for bit, normal/uniform fills to 1e-6), deterministic reductions and
// embedding backward (bitwise across runs, and bitwise equal to the CPU's serial order in f32).
// (Invalid ids and targets: tests/gpu/test_gpu_syncs.cpp.) Skipped where no CUDA device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "core/autograd.h"
#include "core/cuda_backend.h"
#include "core/ops.h"
#include "core/rng.h"
#include "gpu/gpu_compare.h"

namespace tstl {
namespace {

#define SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

// Bitwise equality of two tensors' bytes (any devices).
bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  return ha.dtype() == hb.dtype() && ha.shape() == hb.shape() && std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

TEST(GpuAllocator, ReusesCachedBlocksOfTheSameSizes) {
  SKIP_WITHOUT_CUDA();
  cuda::synchronize();
  cuda::empty_cache();
  EXPECT_EQ(cuda::cached_bytes(), 0u);
  const std::vector<Shape> shapes = {{3, 5, 7}, {1001}, {3, 1 << 19}};  // 512 B and 2 MiB granules
  std::set<void*> first_blocks;
  size_t requested = 0;
  {
    std::vector<Tensor> held;
    for (const Shape& s : shapes) {
      held.push_back(Tensor::empty(s, DType::F32, Device::CUDA));
      first_blocks.insert(held.back().raw());
      requested += held.back().nbytes();
    }
    EXPECT_EQ(cuda::cached_bytes(), 0u);
  }
  const size_t cached = cuda::cached_bytes();
  EXPECT_GE(cached, requested);
  {
    std::vector<Tensor> again;
    for (const Shape& s : shapes) {
      again.push_back(Tensor::empty(s, DType::F32, Device::CUDA));
      EXPECT_EQ(first_blocks.count(again.back().raw()), 1u) << "a new block for " << shape_str(s);
    }
    EXPECT_EQ(cuda::cached_bytes(), 0u) << "every block came from the cache";
  }
  EXPECT_EQ(cuda::cached_bytes(), cached);
  cuda::empty_cache();
  EXPECT_EQ(cuda::cached_bytes(), 0u);
}

TEST(GpuRandom, DropoutMaskIsBitwiseTheCpuMask) {
  SKIP_WITHOUT_CUDA();
  Generator gen{5, 0};
  const Tensor x = randn({7, 13, 11}, gen, DType::F32);
  for (DType dtype : {DType::F32, DType::BF16}) {
    const Tensor xd = x.to(dtype);
    const std::vector<double> cpu = dropout(xd.to(DType::F32), 0.3, 42, 5).to_vector<double>();
    const std::vector<double> gpu = dropout(xd.to(Device::CUDA), 0.3, 42, 5).to_vector<double>();
    ASSERT_EQ(cpu.size(), gpu.size());
    size_t dropped = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      ASSERT_EQ(cpu[i] == 0.0, gpu[i] == 0.0) << dtype_name(dtype) << " element " << i;
      dropped += cpu[i] == 0.0;
      if (dtype == DType::F32) {
        EXPECT_EQ(cpu[i], gpu[i]) << "element " << i;
      }
    }
    EXPECT_NEAR(static_cast<double>(dropped) / cpu.size(), 0.3, 0.05);
  }
}

TEST(GpuRandom, FillsEqualTheCpuStreams) {
  SKIP_WITHOUT_CUDA();
  for (DType dtype : {DType::F32, DType::BF16}) {
    Generator cpu_gen{123, 17}, gpu_gen{123, 17};
    Tensor cpu_n = Tensor::empty({1001, 7}, DType::F32), gpu_n = Tensor::empty({1001, 7}, dtype, Device::CUDA);
    normal_(cpu_n, cpu_gen, 0.5, 2.0);
    normal_(gpu_n, gpu_gen, 0.5, 2.0);
    Tensor cpu_u = Tensor::empty({333}, DType::F32), gpu_u = Tensor::empty({333}, dtype, Device::CUDA);
    uniform_(cpu_u, cpu_gen, -3.0, 1.0);
    uniform_(gpu_u, gpu_gen, -3.0, 1.0);
    EXPECT_EQ(cpu_gen.offset, gpu_gen.offset);
    for (auto [cpu, gpu] : {std::pair{cpu_n, gpu_n}, std::pair{cpu_u, gpu_u}}) {
      // The reference is the CPU value rounded to the GPU tensor's dtype.
      const std::vector<double> ref = cpu.to(dtype).to_vector<double>(), got = gpu.to_vector<double>();
      for (size_t i = 0; i < ref.size(); ++i) {
        const double allowed = dtype == DType::F32 ? 1e-6 : 2e-2 * std::fabs(ref[i]);  // bf16: relative
        ASSERT_LE(std::fabs(ref[i] - got[i]), allowed) << dtype_name(dtype) << " element " << i << " of " << ref.size();
      }
    }
  }
}

TEST(GpuDeterminism, SumIsBitwiseRepeatable) {
  SKIP_WITHOUT_CUDA();
  Generator gen{9, 0};
  const Tensor x = randn({300007}, gen, DType::F32).to(Device::CUDA);
  const Tensor first = sum(x), second = sum(x);
  EXPECT_TRUE(same_bits(first, second));
  gpu_test::expect_close(first, sum(x.to(Device::CPU)), 1e-5, "sum of 300007");
}

TEST(GpuDeterminism, EmbeddingBackwardIsTheCpuOrder) {
  SKIP_WITHOUT_CUDA();
  const int64_t vocab = 23, width = 37, n = 4001;
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[i] = (i * 7919 + i / 5) % vocab;  // heavy repeats
  Generator gen{3, 0};
  const Tensor w = randn({vocab, width}, gen, DType::F32), dout = randn({n, width}, gen, DType::F32);
  auto weight_grad = [&](Device device) {
    Tensor wd = w.to(device);
    wd.set_requires_grad(true);
    embedding(wd, Tensor::from_vector(ids, {n}, device)).backward(dout.to(device));
    return wd.grad();
  };
  const Tensor cpu = weight_grad(Device::CPU), gpu1 = weight_grad(Device::CUDA), gpu2 = weight_grad(Device::CUDA);
  EXPECT_TRUE(same_bits(gpu1, gpu2)) << "two CUDA runs differ";
  EXPECT_TRUE(same_bits(gpu1, cpu)) << "CUDA sums in a different order than the CPU";
}

}  // namespace
}  // namespace tstl
