// Evaluation and generation on CUDA (`--device cuda`, eval/inference_model.h) against the same
// checkpoint evaluated on the CPU, for each variant: sliding-window perplexity in f32 (the same
// math: relative 1e-5 on the mean NLL) and in bf16 (weights and activations rounded to bf16:
// relative 2e-2, gpu_compare.h's bf16 tolerance), greedy generation with the KV cache on the
// device (the same tokens in f32), and the attention maps `tstl eval attention` rebuilds from the
// device's q and k.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/variant_param.h"
#include "eval/attention.h"
#include "eval/eval_test_util.h"
#include "eval/generate.h"
#include "eval/inference_model.h"
#include "eval/ppl.h"
#include "gpu/gpu_compare.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_config.h"

namespace fs = std::filesystem;

namespace tstl {
namespace {

class GpuEval : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    char buf[] = "/tmp/tstl_gpu_eval_XXXXXX";
    dir_ = mkdtemp(buf);
    // A 2-layer model of head dim 16 trained (here: initialised) at length 16, with weights large
    // enough (init_std 0.3) that the logits are far from uniform: no near-ties for greedy decoding.
    Config cfg;
    for (const auto& [k, v] : std::vector<std::pair<const char*, std::string>>{
             {"model.variant", variant_name(GetParam())}, {"model.layers", "2"}, {"model.hidden", "48"},
             {"model.heads", "3"}, {"model.ffn", "80"}, {"model.vocab_size", "259"}, {"model.train_len", "16"},
             {"model.init_std", "0.3"}, {"data.tokenizer", "byte"}})
      cfg.set(k, v, "test");
    Decoder model(model_config_from(cfg));
    model.initialize(5);
    CheckpointState state;
    state.parameters = model.named_parameters();
    state.config = cfg.dump();
    state.tokenizer = "byte:259";
    state.step = 1;
    checkpoint_ = (dir_ / "step_00000001.h5").string();
    save_checkpoint(checkpoint_, state);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  // A scaling that acts at the test lengths (beyond train_len 16), on the device as on the CPU.
  InferenceScaling dynamic_scaling() const {
    return parse_scaling(GetParam() == Variant::Alibi ? "dynamic-ntk-alibi:2" : "dynamic-ntk:2");
  }
  InferenceModel load(Device device, DType dtype, const InferenceScaling& scaling = {}) const {
    return load_for_inference(checkpoint_, scaling, "", InferencePlacement{device, dtype});
  }
  fs::path dir_;
  std::string checkpoint_;
};

TEST_P(GpuEval, PplMatchesCpu) {
  const std::vector<std::vector<int32_t>> docs = {testing::test_tokens(70, 259, 1), testing::test_tokens(33, 259, 2),
                                                  testing::test_tokens(5, 259, 3)};
  const InferenceModel cpu = load(Device::CPU, DType::F32, dynamic_scaling());
  for (DType dtype : {DType::F32, DType::BF16}) {
    const InferenceModel gpu = load(Device::CUDA, dtype, dynamic_scaling());
    ASSERT_EQ(gpu.loaded.model->device(), Device::CUDA);
    EXPECT_EQ(gpu.loaded.model->named_parameters()[0].second.dtype(), dtype);
    const double tol = dtype == DType::F32 ? 1e-5 : gpu_test::tolerance(DType::BF16);
    for (int64_t length : {16, 48}) {
      // Batches of several windows (batch_tokens 64) and a stride that overlaps them.
      const PplResult want = evaluate_ppl(*cpu.loaded.model, docs, length, length / 2, cpu.forward, 64, true);
      const PplResult got = evaluate_ppl(*gpu.loaded.model, docs, length, length / 2, gpu.forward, 64, true);
      ASSERT_EQ(got.tokens, want.tokens);
      ASSERT_EQ(got.windows, want.windows);
      EXPECT_NEAR(got.mean_nll, want.mean_nll, tol * want.mean_nll) << dtype_name(dtype) << " length " << length;
      if (dtype != DType::F32) continue;  // per position: a few tokens each, too few to average bf16 rounding
      for (size_t i = 0; i < want.position_loss.size(); ++i)
        EXPECT_NEAR(got.position_loss[i], want.position_loss[i], tol * want.position_loss[i])
            << "length " << length << " position " << i;
    }
  }
}

TEST_P(GpuEval, GreedyGenerationMatchesCpuInF32) {
  const InferenceModel cpu = load(Device::CPU, DType::F32, dynamic_scaling());
  const InferenceModel gpu = load(Device::CUDA, DType::F32, dynamic_scaling());
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 40;  // the KV cache grows to 52 positions, past train_len 16
  const std::vector<int32_t> prompt = testing::test_tokens(12, 259, 7);
  const std::vector<int32_t> want = generate(*cpu.loaded.model, prompt, greedy, cpu.forward);
  const std::vector<int32_t> got = generate(*gpu.loaded.model, prompt, greedy, gpu.forward);
  EXPECT_EQ(got, want);
  ASSERT_EQ(want.size(), 40u);  // no stop token is set: every step ran
}

TEST_P(GpuEval, AttentionMapsMatchCpuInF32) {
  const InferenceModel cpu = load(Device::CPU, DType::F32), gpu = load(Device::CUDA, DType::F32);
  const std::vector<int32_t> ids = testing::test_tokens(40, 259, 9);
  const std::vector<LayerMaps> want = attention_maps(cpu, ids, {0, 1}), got = attention_maps(gpu, ids, {1});
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].layer, 1);
  const std::vector<double> g = got[0].probabilities.to_vector<double>(), w = want[1].probabilities.to_vector<double>();
  ASSERT_EQ(g.size(), w.size());
  EXPECT_LE(gpu_test::relative_error(g, w), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuEval, testing::all_variants(), testing::variant_test_name);

}  // namespace
}  // namespace tstl
