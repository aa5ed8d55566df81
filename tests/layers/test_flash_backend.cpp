// [model] attention_backend = tstl | cudnn (layers/flash_attention.h, docs/attention.md): the
// value's parsing, the model-config checks of what cuDNN's SDPA does not cover, and the clear
// errors on the CPU (the GPU comparison of the cudnn backend with the CPU kernel is in
// tests/gpu/test_gpu_flash_mma.cpp, GpuFlashCudnn).
#include <gtest/gtest.h>

#include <string>

#include "common/gradcheck.h"
#include "layers/decoder.h"
#include "layers/flash_attention.h"
#include "common/error_of.h"

namespace tstl {
namespace {

using testing::random_input;

void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

TEST(FlashBackend, ParsesTheTwoNamesAndRejectsOthers) {
  EXPECT_EQ(parse_attention_backend("tstl"), AttentionBackend::Tstl);
  EXPECT_EQ(parse_attention_backend("cudnn"), AttentionBackend::Cudnn);
  EXPECT_STREQ(attention_backend_name(AttentionBackend::Cudnn), "cudnn");
  EXPECT_STREQ(attention_backend_name(AttentionBackend::Tstl), "tstl");
  const std::string message = error_of([] { parse_attention_backend("flash2"); });
  expect_contains(message, "model.attention_backend");
  expect_contains(message, "flash2");
}

ModelConfig cudnn_config(Variant variant, int64_t heads, bool logn) {
  ModelConfig c;
  c.variant = variant;
  c.heads = heads;
  c.hidden = 16 * heads;
  c.logn = logn;
  c.attention_backend = AttentionBackend::Cudnn;
  return c;
}

TEST(FlashBackend, ConfigRejectsWhatCudnnDoesNotCover) {
  for (Variant v : {Variant::Rope, Variant::KeyNorm, Variant::Coca, Variant::CocaStrict, Variant::Alibi})
    EXPECT_NO_THROW(cudnn_config(v, 4, false).validate()) << variant_name(v);
  const std::string logn = error_of([] { cudnn_config(Variant::Rope, 4, true).validate(); });
  expect_contains(logn, "model.attention_backend = cudnn");
  expect_contains(logn, "model.logn");
  const std::string heads = error_of([] { cudnn_config(Variant::Alibi, 6, false).validate(); });
  expect_contains(heads, "model.attention_backend = cudnn");
  expect_contains(heads, "heads = 6");
  // The rotary variants have no slopes: any head count.
  EXPECT_NO_THROW(cudnn_config(Variant::Coca, 6, false).validate());
  // The tstl backend covers everything.
  ModelConfig tstl_logn = cudnn_config(Variant::Rope, 6, true);
  tstl_logn.attention_backend = AttentionBackend::Tstl;
  EXPECT_NO_THROW(tstl_logn.validate());
}

TEST(FlashBackend, CpuModelAndCpuTensorsAreRejectedNamingTheKey) {
  const std::string model = error_of([] { Decoder(cudnn_config(Variant::Rope, 4, false), DType::F32, Device::CPU); });
  expect_contains(model, "model.attention_backend = cudnn");
  expect_contains(model, "cpu");
  const Tensor q = random_input({1, 2, 5, 8}, 1, 1.0, false).to(DType::F32);
  const Tensor k = random_input({1, 2, 5, 8}, 2, 1.0, false).to(DType::F32);
  AttentionOptions opt;
  opt.backend = AttentionBackend::Cudnn;
  const std::string call = error_of([&] { flash_attention(q, k, k, opt); });
  expect_contains(call, "model.attention_backend = cudnn");
  expect_contains(call, "cpu");
}

}  // namespace
}  // namespace tstl
