// Passkey retrieval accuracy and `tstl eval passkey`.
#include "train/eval_passkey.h"

#include <boost/program_options.hpp>

#include <cctype>
#include <cstdio>

#include "data/passkey.h"
#include "train/cli_util.h"
#include "train/json.h"

namespace po = boost::program_options;

namespace tstl {

Continuation decoder_continuation(const Decoder& model, const ForwardOptions& base) {
  return [&model, base](const std::vector<int32_t>& prompt, int64_t max_new, const StopPredicate& stop) {
    SamplingOptions greedy;
    greedy.max_tokens = max_new;
    return generate(model, prompt, greedy, base, stop);
  };
}

std::string first_five_digit_number(const std::string& text, bool finished) {
  const auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  size_t i = 0;
  while (i < text.size()) {
    if (!digit(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && digit(text[j])) ++j;
    const bool complete = j < text.size() || finished;
    if (!complete) return "";  // the run may still grow
    if (j - i == 5) return text.substr(i, 5);
    i = j;
  }
  return "";
}

std::vector<PasskeyResult> evaluate_passkey(const Tokenizer& tokenizer, const Continuation& model,
                                            const PasskeyOptions& options,
                                            const std::function<void(const PasskeyResult&)>& progress) {
  TSTL_CHECK(options.cases >= 1, "passkey: --cases must be >= 1, got ", options.cases);
  TSTL_CHECK(options.max_new_tokens >= 1, "passkey: max_new_tokens must be >= 1");
  std::vector<PasskeyResult> results;
  for (int64_t length : options.lengths) {
    PasskeyResult r;
    r.length = length;
    for (int64_t c = 0; c < options.cases; ++c) {
      const PasskeyPrompt p = make_passkey_prompt(tokenizer, length, options.seed, static_cast<uint64_t>(c));
      // Decided once a complete 5-digit number has appeared.
      const StopPredicate decided = [&tokenizer](const std::vector<int32_t>& generated) {
        return !first_five_digit_number(tokenizer.decode(generated), false).empty();
      };
      const std::vector<int32_t> out = model(p.prompt, options.max_new_tokens, decided);
      const std::string text = tokenizer.decode(out);
      r.answers.push_back(text);
      if (first_five_digit_number(text, true) == std::to_string(p.key)) ++r.correct;
      ++r.cases;
    }
    r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.cases);
    results.push_back(r);
    if (progress) progress(results.back());
  }
  return results;
}

int command_eval_passkey(const Args& args) {
  std::string checkpoint, lengths_text, json_path;
  ScalingArguments scaling_args;
  PasskeyOptions options;
  po::options_description desc("tstl eval passkey options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file")
      ("lengths", po::value(&lengths_text)->required(), "prompt lengths in tokens, comma-separated")
      ("cases", po::value(&options.cases)->default_value(100), "prompts per length")
      ("seed", po::value(&options.seed)->default_value(0), "seed of the keys and depths")
      ("max-new-tokens", po::value(&options.max_new_tokens)->default_value(8), "longest continuation");
  add_scaling_options(desc, scaling_args);
  desc.add_options()("json", po::value(&json_path)->required(), "write the results here");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval passkey --checkpoint PATH --lengths 128,256,... [--cases 100] [--seed S] "
                          "[--scaling METHOD:FACTOR] [--logn] --json OUT"))
    return 0;
  options.lengths = parse_int_list(lengths_text, "--lengths");
  const InferenceModel model = load_for_inference(checkpoint, scaling_args);
  std::printf("eval passkey: %s, %lld cases per length, seed %llu\n", describe(model).c_str(),
              static_cast<long long>(options.cases), static_cast<unsigned long long>(options.seed));
  std::printf("%8s %8s %8s %9s  %s\n", "length", "cases", "correct", "accuracy", "first answer");
  const Continuation continuation = decoder_continuation(*model.loaded.model, model.forward);
  const auto results = evaluate_passkey(*model.tokenizer, continuation, options,
                                        [](const PasskeyResult& r) {
                                          std::string first = r.answers.empty() ? "" : r.answers[0];
                                          for (char& ch : first)
                                            if (ch == '\n') ch = ' ';
                                          std::printf("%8lld %8lld %8lld %9.3f  \"%s\"\n", static_cast<long long>(r.length),
                                                      static_cast<long long>(r.cases), static_cast<long long>(r.correct),
                                                      r.accuracy, first.c_str());
                                          std::fflush(stdout);
                                        });
  JsonWriter json;
  json.begin_object();
  json.field("kind", "passkey");
  write_model_fields(json, model);
  json.field("seed", static_cast<double>(options.seed));
  json.key("results");
  json.begin_array();
  for (const PasskeyResult& r : results) {
    json.begin_object();
    json.field("length", static_cast<double>(r.length));
    json.field("cases", static_cast<double>(r.cases));
    json.field("correct", static_cast<double>(r.correct));
    json.field("accuracy", r.accuracy);
    json.end_object();
  }
  json.end_array();
  json.end_object();
  write_text_file(json_path, json.str() + "\n");
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}

}  // namespace tstl
