// `tstl eval passkey --checkpoint PATH --lengths 128,256,... [--cases N] [--seed S] --json OUT`.
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/options.h"
#include "eval/passkey.h"

namespace po = boost::program_options;

namespace tstl {

int command_eval_passkey(const Args& args) {
  std::string tokenizer_spec, checkpoint, lengths_text, json_path;
  ScalingArguments scaling_args;
  DeviceArguments device_args;
  PasskeyOptions options;
  po::options_description desc("tstl eval passkey options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file")
      ("lengths", po::value(&lengths_text)->required(), "prompt lengths in tokens, comma-separated")
      ("cases", po::value(&options.cases)->default_value(100), "prompts per length")
      ("seed", po::value(&options.seed)->default_value(0), "seed of the keys and depths")
      ("max-new-tokens", po::value(&options.max_new_tokens)->default_value(8), "longest continuation");
  add_scaling_options(desc, scaling_args);
  add_device_options(desc, device_args);
  desc.add_options()("json", po::value(&json_path)->required(), "write the results here");
  add_tokenizer_option(desc, tokenizer_spec);
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval passkey --checkpoint PATH --lengths 128,256,... [--cases 100] [--seed S] "
                          "[--scaling METHOD:FACTOR] [--logn] [--device cpu|cuda] [--dtype f32|bf16] [--tokenizer SPEC] --json OUT"))
    return 0;
  options.lengths = parse_int_list(lengths_text, "--lengths");
  const InferenceModel model = load_for_inference(checkpoint, scaling_args, device_args, tokenizer_spec);
  std::printf("eval passkey: %s, %lld cases per length, seed %llu\n", describe(model).c_str(),
              static_cast<long long>(options.cases), static_cast<unsigned long long>(options.seed));
  std::printf("%8s %8s %8s %9s  %s\n", "length", "cases", "correct", "accuracy", "first answer");
  const Continuation continuation = decoder_continuation(*model.loaded.model, model.forward, model.tokenizer->vocab_size());
  size_t lengths_done = 0;  // names the length that runs out of memory
  const auto results = with_memory_message(options.lengths, lengths_done, model.config(), [&] {
    return evaluate_passkey(*model.tokenizer, continuation, options, [&](const PasskeyResult& r) {
      ++lengths_done;
      std::string first = r.answers.empty() ? "" : r.answers[0];
      for (char& ch : first)
        if (ch == '\n') ch = ' ';
      std::printf("%8lld %8lld %8lld %9.3f  \"%s\"\n", static_cast<long long>(r.length), static_cast<long long>(r.cases),
                  static_cast<long long>(r.correct), r.accuracy, first.c_str());
      std::fflush(stdout);
    });
  });
  write_passkey_json(json_path, model, options, results);
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}

}  // namespace tstl
