// --device / --dtype (eval/inference_model.h parse_placement) and the copy of a model onto a
// placement (place_model). The CUDA placements run in tests/gpu/test_gpu_eval.cpp.
#include <gtest/gtest.h>

#include <string>

#include "core/autograd.h"
#include "eval/eval_test_util.h"
#include "eval/inference_model.h"
#include "common/error_of.h"

namespace tstl {
namespace {

// The message of the error `f` throws ("" when it throws none).
TEST(Placement, ParsesDeviceAndDtypeWithTheirDefaults) {
  InferencePlacement p = parse_placement("cpu", "");
  EXPECT_EQ(p.device, Device::CPU);
  EXPECT_EQ(p.dtype, DType::F32);
  EXPECT_EQ(placement_label(p), "cpu f32");
  p = parse_placement("cpu", "f32");
  EXPECT_EQ(p.dtype, DType::F32);
  if (cuda_available()) {
    p = parse_placement("cuda", "");
    EXPECT_EQ(p.device, Device::CUDA);
    EXPECT_EQ(p.dtype, DType::BF16);  // the default on CUDA
    EXPECT_EQ(placement_label(p), "cuda bf16");
    EXPECT_EQ(parse_placement("cuda", "f32").dtype, DType::F32);
  } else {
    EXPECT_NE(error_of([] { parse_placement("cuda", ""); })
                  .find(cuda_compiled() ? "--device cuda: no CUDA device is present"
                                        : "--device cuda: this tstl was built without the CUDA backend"),
              std::string::npos);
  }
}

TEST(Placement, RejectsUnknownValuesAndBf16OnTheCpu) {
  EXPECT_NE(error_of([] { parse_placement("gpu", ""); }).find("--device 'gpu': expected cpu or cuda"), std::string::npos);
  EXPECT_NE(error_of([] { parse_placement("cpu", "fp16"); }).find("--dtype 'fp16': expected f32 or bf16"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_placement("cpu", "bf16"); }).find("--dtype bf16 needs --device cuda"), std::string::npos);
}

TEST(Placement, PlacedModelIsAnIndependentCopyWithTheSameLogits) {
  const ModelConfig c = testing::tiny_config(Variant::Alibi);
  Decoder model(c);
  model.initialize(3);
  const auto placed = place_model(model, InferencePlacement{});
  ASSERT_EQ(placed->named_parameters().size(), model.named_parameters().size());
  NoGradGuard no_grad;
  const Tensor ids = Tensor::from_vector(testing::test_tokens(9, c.vocab_size, 4), {1, 9});
  const std::vector<float> want = model.forward(ids).to_vector<float>();
  EXPECT_EQ(placed->forward(ids).to_vector<float>(), want);  // bitwise: the same weights on the same device
  model.named_parameters()[0].second.detach().fill_(0.0);     // the copy owns its weights
  EXPECT_EQ(placed->forward(ids).to_vector<float>(), want);
}

}  // namespace
}  // namespace tstl
