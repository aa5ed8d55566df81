// Tensor basics: shapes, views, dtype conversion, device errors, autograd bookkeeping.
#include <gtest/gtest.h>

#include "common/gradcheck.h"
#include "core/autograd.h"
#include "core/ops.h"

namespace tstl {
namespace {

TEST(Tensor, FromVectorRoundTripAndShape) {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_THROW(Tensor::from_vector<float>({1, 2}, {3}), Error);
  EXPECT_THROW(t.size(2), Error);
}

TEST(Tensor, ReshapeIsAViewSharingStorage) {
  Tensor t = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor v = t.reshape({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  v.data<float>()[5] = 60;
  EXPECT_EQ(t.to_vector<float>()[5], 60);
  EXPECT_THROW(t.reshape({4, -1}), Error);
  EXPECT_THROW(t.reshape({-1, -1}), Error);
}

TEST(Tensor, DtypeConversionsAndBf16Rounding) {
  Tensor t = Tensor::from_vector<double>({1.5, -2.25, 1e10}, {3});
  EXPECT_EQ(t.to(DType::F32).to_vector<float>(), (std::vector<float>{1.5f, -2.25f, 1e10f}));
  EXPECT_EQ(t.to(DType::I64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 10000000000LL}));
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties round to the even one (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_THROW(t.data<float>(), Error);  // wrong element type
}

TEST(Tensor, ZerosFullCopyAndItem) {
  Tensor z = Tensor::zeros({2, 5}, DType::F64);
  for (double v : z.to_vector<double>()) EXPECT_EQ(v, 0.0);
  Tensor f = Tensor::full({3}, 2.5);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{2.5f, 2.5f, 2.5f}));
  Tensor g = Tensor::zeros({3});
  g.copy_(Tensor::from_vector<double>({1, 2, 3}, {3}));  // converting copy
  EXPECT_EQ(g.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_THROW(g.copy_(Tensor::zeros({4})), Error);
  EXPECT_DOUBLE_EQ(sum(g).item(), 6.0);
  EXPECT_THROW(g.item(), Error);
}

TEST(Tensor, CudaTensorWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::empty({4}, DType::F32, Device::CUDA);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3});
  x.set_requires_grad(true);
  sum(scale(x, 2.0)).backward();
  sum(scale(x, 3.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 5, 5}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2});
  x.set_requires_grad(true);
  Tensor y;
  {
    NoGradGuard guard;
    y = scale(x, 2.0);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  Tensor z = scale(x, 2.0);
  EXPECT_TRUE(z.requires_grad());
  EXPECT_NE(z.grad_fn(), nullptr);
}

TEST(Autograd, IntermediateActivationsAreFreedAfterForward) {
  // Nodes hold edges to producer nodes, not the input tensors: an activation that no backward
  // needs (the input of scale) is released as soon as the caller drops it.
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3});
  x.set_requires_grad(true);
  Tensor h = add(x, x);
  std::weak_ptr<Storage> h_storage = h.impl().storage;
  Tensor y = scale(h, 3.0);
  h = Tensor();
  EXPECT_TRUE(h_storage.expired());
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{6, 6, 6}));
}

TEST(Autograd, BackwardOnTensorWithoutGradIsAnError) {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2});
  EXPECT_THROW(sum(x).backward(), Error);
  Tensor y = Tensor::from_vector<double>({1, 2}, {2}).set_requires_grad(true);
  EXPECT_THROW(scale(y, 2.0).backward(), Error);  // not a scalar and no seed
}

TEST(Ops, HandComputedValues) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
  EXPECT_EQ(matmul(a, b).to_vector<float>(), (std::vector<float>{4, 5, 10, 11}));
  EXPECT_EQ(matmul(a, a, false, true).to_vector<float>(), (std::vector<float>{14, 32, 32, 77}));
  EXPECT_EQ(add(a, Tensor::from_vector<float>({10, 20, 30}, {3})).to_vector<float>(),
            (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ(permute(a, {1, 0}).to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(narrow(a, 1, 1, 2).to_vector<float>(), (std::vector<float>{2, 3, 5, 6}));
  EXPECT_NEAR(gelu(Tensor::from_vector<double>({1.0}, {1})).item(), 0.8413447460685429, 1e-15);
  Tensor w = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {3, 2});
  EXPECT_EQ(embedding(w, Tensor::from_vector<int32_t>({2, 0}, {2})).to_vector<float>(),
            (std::vector<float>{4, 5, 0, 1}));
  EXPECT_THROW(embedding(w, Tensor::from_vector<int32_t>({3}, {1})), Error);
  // Uniform logits over 4 classes: the loss is log 4 whatever the target.
  Tensor logits = Tensor::zeros({2, 4}, DType::F64);
  EXPECT_NEAR(cross_entropy(logits, Tensor::from_vector<int64_t>({3, -1}, {2})).item(), std::log(4.0), 1e-15);
  EXPECT_EQ(cross_entropy(logits, Tensor::from_vector<int64_t>({-1, -1}, {2})).item(), 0.0);
  EXPECT_THROW(cross_entropy(logits, Tensor::from_vector<int64_t>({4, 0}, {2})), Error);
  EXPECT_THROW(matmul(a, a), Error);  // inner sizes differ
}

TEST(Ops, CrossEntropyIsStableForLargeLogits) {
  Tensor logits = Tensor::from_vector<float>({1000, 0, -1000, 990}, {1, 4});
  const double loss = cross_entropy(logits, Tensor::from_vector<int32_t>({3}, {1})).item();
  EXPECT_NEAR(loss, 10.0 + std::log1p(std::exp(-10.0)), 1e-4);
}

// The checker must catch a wrong backward: an op whose closure returns twice the true gradient.
TEST(Gradcheck, DetectsAWrongBackward) {
  auto wrong_square = [](const std::vector<Tensor>& in) {
    Tensor y;
    {
      NoGradGuard g;
      y = mul(in[0], in[0]);
    }
    if (in[0].requires_grad() && grad_mode_enabled()) {
      Tensor x = in[0].detach();
      record(y, "wrong_square", {in[0]}, [x](const Tensor& g) { return std::vector<Tensor>{scale(mul(g, x), 4.0)}; });
    }
    return y;
  };
  Tensor x = testing::random_input({3, 5}, 11);
  EXPECT_GT(testing::gradcheck(wrong_square, {x}).worst_relative_error, 0.4);
  auto right_square = [](const std::vector<Tensor>& in) { return mul(in[0], in[0]); };
  EXPECT_LT(testing::gradcheck(right_square, {x}).worst_relative_error, 1e-6);
}

}  // namespace
}  // namespace tstl
