// The CPU kernels rewritten for speed against independent references: the vectorisable f32 math
// of core/vec_math.h against libm in double; row-broadcast binary ops and column sums against
// naive loops (bit for bit: the same operations in the same order); the fused GELU kernels
// against the separate kernels they replace (bit for bit); and host memory reuse.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/gradcheck.h"
#include "core/kernels.h"
#include "core/ops.h"
#include "core/vec_math.h"

namespace tstl {
namespace {

using testing::random_input;

TEST(VecMath, ExpWithinTwoUlpOfLibm) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.01f) {
    const double ref = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(vec::exp_f32(x) - ref) / ref);
  }
  EXPECT_LE(worst, 2.4e-7);  // 2 ulp of f32
  EXPECT_EQ(vec::exp_f32(0.0f), 1.0f);
}

// GELU x Phi(x) in double with erfc (1 + erf cancels for negative x), and its derivative.
double gelu_ref(double x) { return x * 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double gelu_derivative_ref(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

TEST(VecMath, GeluRelativeErrorAcrossTheRange) {
  double worst_core = 0, worst_tail = 0, worst_derivative = 0;
  for (float x = -12.0f; x <= 12.0f; x += 1.0f / 512) {
    const double ref = gelu_ref(x);
    float value, derivative;
    vec::gelu_and_derivative_f32(x, value, derivative);
    EXPECT_EQ(value, vec::gelu_f32(x)) << x;
    EXPECT_EQ(derivative, vec::gelu_derivative_f32(x)) << x;
    if (ref == 0) continue;
    const double rel = std::fabs(value - ref) / std::fabs(ref);
    (x >= -5 ? worst_core : worst_tail) = std::max(x >= -5 ? worst_core : worst_tail, rel);
    worst_derivative = std::max(worst_derivative, std::fabs(derivative - gelu_derivative_ref(x)));
  }
  EXPECT_LE(worst_core, 3e-6);   // x >= -5: a few f32 ulp
  EXPECT_LE(worst_tail, 3e-5);   // x < -5: values below 1e-6, e^{-x^2/2}'s argument rounded in f32
  EXPECT_LE(worst_derivative, 3e-7);
  EXPECT_EQ(vec::gelu_f32(0.0f), 0.0f);
}

TEST(CpuKernels, RowBroadcastBinaryMatchesNaiveLoop) {
  const Tensor a = random_input({5, 3, 37}, 1, 1.0, false), row = random_input({37}, 2, 1.0, false);
  const Tensor same = random_input({5, 3, 37}, 3, 1.0, false);
  for (kernels::Binary op : {kernels::Binary::Add, kernels::Binary::Sub, kernels::Binary::Mul}) {
    Tensor out = Tensor::empty(a.shape(), a.dtype()), out2 = Tensor::empty(a.shape(), a.dtype());
    kernels::binary_cpu(op, a, row, out);
    kernels::binary_cpu(op, a, same, out2);
    for (int64_t i = 0; i < a.numel(); ++i) {
      const double x = a.data<double>()[i], r = row.data<double>()[i % 37], s = same.data<double>()[i];
      const double want = op == kernels::Binary::Add ? x + r : op == kernels::Binary::Sub ? x - r : x * r;
      const double want2 = op == kernels::Binary::Add ? x + s : op == kernels::Binary::Sub ? x - s : x * s;
      ASSERT_EQ(out.data<double>()[i], want) << i;
      ASSERT_EQ(out2.data<double>()[i], want2) << i;
    }
  }
  Tensor in_place = a.to(DType::F32);  // out aliasing a: the linear layers add their bias in place
  const Tensor before = in_place.clone(), row32 = row.to(DType::F32);
  kernels::binary_cpu(kernels::Binary::Add, in_place, row32, in_place);
  for (int64_t i = 0; i < a.numel(); ++i)
    ASSERT_EQ(in_place.data<float>()[i], before.data<float>()[i] + row32.data<float>()[i % 37]) << i;
  EXPECT_THROW(kernels::binary_cpu(kernels::Binary::Add, a, random_input({36}, 4, 1.0, false), in_place), Error);
}

TEST(CpuKernels, ColumnSumsMatchNaiveDoubleSumsBitForBit) {
  for (const int64_t cols : {1, 63, 64, 65, 300}) {  // around the 64-column block
    const Tensor x = random_input({257, cols}, 5, 1.0, false).to(DType::F32);
    Tensor out = Tensor::empty({cols}, DType::F32);
    kernels::sum_rows_cpu(x, out);
    for (int64_t c = 0; c < cols; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < 257; ++r) acc += x.data<float>()[r * cols + c];
      ASSERT_EQ(out.data<float>()[c], static_cast<float>(acc)) << cols << " " << c;
    }
  }
}

TEST(CpuKernels, FusedGeluKernelsEqualTheSeparateOnes) {
  for (DType dtype : {DType::F32, DType::F64}) {
    const Tensor h = random_input({9, 70}, 6, 2.0, false).to(dtype), bias = random_input({70}, 7, 1.0, false).to(dtype);
    const Tensor dy = random_input({9, 70}, 8, 1.0, false).to(dtype);
    // bias_gelu_forward = binary add, then gelu_forward
    Tensor biased = Tensor::empty(h.shape(), dtype), act = Tensor::empty(h.shape(), dtype);
    kernels::binary_cpu(kernels::Binary::Add, h, bias, biased);
    kernels::gelu_forward_cpu(biased, act);
    Tensor fused_h = h.clone(), fused_act = Tensor::empty(h.shape(), dtype);
    kernels::bias_gelu_forward_cpu(fused_h, bias, fused_act);
    // gelu_with_backward = gelu_forward and gelu_backward
    Tensor dx = Tensor::empty(h.shape(), dtype), both_y = Tensor::empty(h.shape(), dtype);
    Tensor both_dx = Tensor::empty(h.shape(), dtype);
    kernels::gelu_backward_cpu(h, dy, dx);
    kernels::gelu_with_backward_cpu(h, dy, both_y, both_dx);
    Tensor y = Tensor::empty(h.shape(), dtype);
    kernels::gelu_forward_cpu(h, y);
    ASSERT_EQ(std::memcmp(fused_h.raw(), biased.raw(), h.nbytes()), 0);
    ASSERT_EQ(std::memcmp(fused_act.raw(), act.raw(), h.nbytes()), 0);
    ASSERT_EQ(std::memcmp(both_y.raw(), y.raw(), h.nbytes()), 0);
    ASSERT_EQ(std::memcmp(both_dx.raw(), dx.raw(), h.nbytes()), 0);
    for (int64_t i = 0; i < h.numel(); ++i) {  // and the values are GELU's
      const double x = h.to(DType::F64).data<double>()[i];
      EXPECT_NEAR(y.to(DType::F64).data<double>()[i], gelu_ref(x), 3e-6 * std::fabs(gelu_ref(x)) + 1e-12);
    }
  }
}

// A step's pattern: tensors of several sizes allocated, written by all OpenMP threads, freed
// (some while others live), repeated. Served by glibc's malloc with 2 OpenMP threads, each
// repetition took fresh pages (none on 1 thread); the cache hands the same blocks back.
TEST(HostAllocator, RepeatedStepsReuseBlocksWithoutFreshPages) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the cache is off under AddressSanitizer (it must see every free)";
#else
  const int64_t sizes[] = {2 << 20, 512 << 10, 256 << 10, 768 << 10, 2 << 20, 128 << 10, 1 << 20};  // f32 counts
  auto step = [&] {
    std::vector<Tensor> live;
    for (int64_t n : sizes) {
      Tensor t = Tensor::empty({n});
      float* p = t.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i);
      live.push_back(t);
      if (live.size() > 3) live.erase(live.begin());
    }
  };
  step(), step();  // the first steps fill the cache
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  for (int i = 0; i < 4; ++i) step();
  getrusage(RUSAGE_SELF, &after);
  // glibc's malloc took ~1000 fresh pages a step in this pattern on 2 threads; reuse takes ~none.
  EXPECT_LT(after.ru_minflt - before.ru_minflt, 200);
  const void* first;
  {
    const Tensor a = Tensor::empty({1 << 20});
    first = a.raw();
  }
  EXPECT_EQ(Tensor::empty({1 << 20}).raw(), first) << "a freed block of the same size is handed out again";
#endif
}

}  // namespace
}  // namespace tstl
