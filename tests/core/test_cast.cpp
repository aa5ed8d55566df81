// The cast op: bf16 rounding against hand-computed bit patterns (round to nearest, ties to even,
// NaN and infinities kept), exact widening, the gradient converted back to the input's dtype, and
// the backward of the math (the identity) against float64 finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "common/gradcheck.h"
#include "core/autograd.h"
#include "core/ops.h"

namespace tstl {
namespace {

uint16_t bf16_bits(const Tensor& t, int64_t i) { return t.data<bf16>()[i].bits; }

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(Cast, RoundsToNearestEvenBf16AndWidensExactly) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0). 1 + 3 * 2^-8 is
  // halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up. Just above a tie rounds up.
  const std::vector<float> values = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, from_bits(0x3f808001u), -2.5f,
                                     std::numeric_limits<float>::infinity(), 1e-40f};
  const std::vector<uint16_t> expected = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0x0001};
  const Tensor x = Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
  const Tensor y = cast(x, DType::BF16);
  ASSERT_EQ(y.dtype(), DType::BF16);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(bf16_bits(y, static_cast<int64_t>(i)), expected[i]) << values[i];
  const Tensor nan = cast(Tensor::from_vector<float>({std::nanf("")}, {1}), DType::BF16);
  EXPECT_TRUE(std::isnan(cast(nan, DType::F32).item()));
  // Widening is exact: every bf16 value comes back as the f32 with the same upper bits.
  const Tensor back = cast(y, DType::F32);
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t u;
    const float f = back.data<float>()[i];
    std::memcpy(&u, &f, sizeof u);
    EXPECT_EQ(u, static_cast<uint32_t>(expected[i]) << 16);
  }
  // f64 -> bf16 rounds as f64 -> f32 -> bf16 does (the CUDA store's path); f64 -> f32 as static_cast.
  const Tensor d = Tensor::from_vector<double>({1.0 + 0x1p-8, 0.1}, {2});
  EXPECT_EQ(bf16_bits(cast(d, DType::BF16), 0), 0x3f80);
  EXPECT_EQ(cast(d, DType::F32).data<float>()[1], 0.1f);
  EXPECT_TRUE(cast(x, DType::F32).same(x));  // to its own dtype: the tensor itself
}

TEST(Cast, RejectsNonFloatingTensorsAndTargets) {
  const Tensor ids = Tensor::from_vector<int32_t>({1, 2}, {2});
  try {
    cast(ids, DType::F32);
    FAIL() << "cast of an i32 tensor did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("i32"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cast(Tensor::from_vector<float>({1}, {1}), DType::I64), Error);
}

TEST(Cast, GradientReturnsInTheInputDtypeRoundedWhereABf16KernelWouldStoreIt) {
  // f32 -> bf16: the bf16 gradient comes back widened, exactly.
  Tensor x = Tensor::from_vector<float>({0.3f, -1.7f, 2.0f}, {3});
  x.set_requires_grad(true);
  Tensor seed = cast(Tensor::from_vector<float>({0.5f, -0.25f, 3.0f}, {3}), DType::BF16);
  cast(x, DType::BF16).backward(seed);
  ASSERT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{0.5f, -0.25f, 3.0f}));
  // bf16 -> f32: the f32 gradient is rounded to bf16 (1 + 2^-8 ties to 1, 1 + 3 * 2^-8 goes up).
  Tensor xb = cast(Tensor::from_vector<float>({1, 2}, {2}), DType::BF16).detach();
  xb.set_requires_grad(true);
  cast(xb, DType::F32).backward(Tensor::from_vector<float>({1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f}, {2}));
  ASSERT_EQ(xb.grad().dtype(), DType::BF16);
  EXPECT_EQ(bf16_bits(xb.grad(), 0), 0x3f80);
  EXPECT_EQ(bf16_bits(xb.grad(), 1), 0x3f82);
}

// The math of a cast is the identity: f64 -> f32 -> f64 and f64 -> bf16 -> f64 against central
// differences. The steps are large enough that the rounding of the perturbed inputs (2^-24 and
// 2^-8 relative) stays far below the tolerance.
TEST(Cast, BackwardMatchesFiniteDifferences) {
  const Tensor x = testing::random_input({4, 5}, 11);
  auto via = [](DType mid) {
    return [mid](const std::vector<Tensor>& in) { return cast(cast(in[0], mid), DType::F64); };
  };
  EXPECT_LT(testing::gradcheck(via(DType::F32), {x}, 1e-2).worst_relative_error, 1e-4);
  EXPECT_LT(testing::gradcheck(via(DType::BF16), {x}, 0.5).worst_relative_error, 2e-2);
}

}  // namespace
}  // namespace tstl
