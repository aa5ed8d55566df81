// `tstl generate --checkpoint PATH --prompt TEXT [--max-tokens N --temperature T --top-k K
// --seed S --scaling METHOD:FACTOR --logn --device cpu|cuda --dtype f32|bf16]`.
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/options.h"
#include "eval/generate.h"

namespace po = boost::program_options;

namespace tstl {

int command_generate(const Args& args) {
  std::string tokenizer_spec, checkpoint, prompt;
  ScalingArguments scaling_args;
  DeviceArguments device_args;
  SamplingOptions sampling;
  po::options_description desc("tstl generate options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file (runs/NAME/checkpoints/step_*.h5)")
      ("prompt", po::value(&prompt)->required(), "the text to continue")
      ("max-tokens", po::value(&sampling.max_tokens)->default_value(128), "tokens to generate")
      ("temperature", po::value(&sampling.temperature)->default_value(0.8), "softmax temperature; 0 = greedy")
      ("top-k", po::value(&sampling.top_k)->default_value(0), "sample among the K most likely tokens (0: all)")
      ("seed", po::value(&sampling.seed)->default_value(0), "Philox seed of the sampler");
  add_scaling_options(desc, scaling_args, "METHOD:FACTOR, e.g. dynamic-ntk:4 (docs/evaluation.md)");
  add_device_options(desc, device_args);
  add_tokenizer_option(desc, tokenizer_spec);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl generate --checkpoint PATH --prompt TEXT [--max-tokens N --temperature T "
                          "--top-k K --seed S --scaling METHOD:FACTOR --logn --device cpu|cuda --dtype f32|bf16 --tokenizer SPEC]"))
    return 0;
  TSTL_CHECK(sampling.max_tokens >= 1, "--max-tokens must be >= 1, got ", sampling.max_tokens);
  TSTL_CHECK(sampling.temperature >= 0, "--temperature must be >= 0, got ", sampling.temperature);
  TSTL_CHECK(sampling.top_k >= 0, "--top-k must be >= 0, got ", sampling.top_k);
  const InferenceModel model = load_for_inference(checkpoint, scaling_args, device_args, tokenizer_spec);
  const Tokenizer& tokenizer = *model.tokenizer;
  const std::vector<int32_t> ids = tokenizer.encode(prompt);
  TSTL_CHECK(!ids.empty(), "--prompt encodes to no tokens");
  sampling.stop_token = tokenizer.eos_id();
  sampling.vocab_limit = tokenizer.vocab_size();
  const std::vector<int32_t> out = generate(*model.loaded.model, ids, sampling, model.forward);
  std::vector<int32_t> text_ids = out;
  if (!text_ids.empty() && text_ids.back() == sampling.stop_token) text_ids.pop_back();
  std::printf("%s%s\n", prompt.c_str(), tokenizer.decode(text_ids).c_str());
  return 0;
}

}  // namespace tstl
