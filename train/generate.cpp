// Inference helpers and `tstl generate --checkpoint PATH --prompt TEXT [--max-tokens N
// --temperature T --top-k K --seed S --scaling METHOD:FACTOR --logn]`.
#include "train/generate.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "train/cli_util.h"

namespace po = boost::program_options;

namespace tstl {

namespace {

struct MethodInfo {
  const char* name;
  bool rope_family;  // applies to rope, keynorm, coca, coca-strict; else to alibi
  RopeScaling rope;
  AlibiScaling alibi;
};

const MethodInfo kMethods[] = {
    {"pi", true, RopeScaling::PI, AlibiScaling::None},
    {"ntk", true, RopeScaling::NTK, AlibiScaling::None},
    {"dynamic-ntk", true, RopeScaling::DynamicNTK, AlibiScaling::None},
    {"yarn", true, RopeScaling::YaRN, AlibiScaling::None},
    {"alibi-interp", false, RopeScaling::None, AlibiScaling::Interp},
    {"ntk-alibi", false, RopeScaling::None, AlibiScaling::NTK},
    {"dynamic-ntk-alibi", false, RopeScaling::None, AlibiScaling::DynamicNTK},
};

const char* kMethodList = "none, pi, ntk, dynamic-ntk, yarn (rope, keynorm, coca, coca-strict) or alibi-interp, "
                          "ntk-alibi, dynamic-ntk-alibi (alibi)";

const MethodInfo* find_method(const std::string& name) {
  for (const MethodInfo& m : kMethods)
    if (name == m.name) return &m;
  return nullptr;
}

}  // namespace

InferenceScaling parse_scaling(const std::string& spec) {
  InferenceScaling s;
  if (spec.empty() || spec == "none") return s;
  const size_t colon = spec.find(':');
  TSTL_CHECK(colon != std::string::npos, "--scaling '", spec, "': expected METHOD:FACTOR (e.g. dynamic-ntk:4) or none");
  s.method = spec.substr(0, colon);
  TSTL_CHECK(find_method(s.method), "--scaling '", spec, "': unknown method '", s.method, "' (expected ", kMethodList, ")");
  const std::string factor = spec.substr(colon + 1);
  char* end = nullptr;
  s.factor = std::strtod(factor.c_str(), &end);
  TSTL_CHECK(!factor.empty() && end && *end == '\0' && std::isfinite(s.factor) && s.factor >= 1, "--scaling '", spec,
             "': the factor must be a number >= 1, got '", factor, "'");
  return s;
}

std::string scaling_label(const InferenceScaling& scaling) {
  std::string label = scaling.method;
  if (scaling.method != "none") {
    char buf[32];
    std::snprintf(buf, sizeof buf, ":%g", scaling.factor);
    label += buf;
  }
  if (scaling.logn) label += "+logn";
  return label;
}

ForwardOptions forward_options_for(const ModelConfig& model, const InferenceScaling& scaling) {
  ForwardOptions options;
  const bool rope_family = variant_uses_rope(model.variant);
  if (scaling.method != "none") {
    const MethodInfo* m = find_method(scaling.method);
    TSTL_CHECK(m, "unknown scaling method '", scaling.method, "' (expected ", kMethodList, ")");
    TSTL_CHECK(m->rope_family == rope_family, "scaling method '", scaling.method, "' applies to ",
               m->rope_family ? "the RoPE-based variants (rope, keynorm, coca, coca-strict)" : "alibi",
               ", but the checkpoint's variant is ", variant_name(model.variant));
    options.rope.scaling = m->rope;
    options.rope.factor = scaling.factor;
    options.rope.train_len = model.train_len;
    options.alibi.scaling = m->alibi;
    options.alibi.factor = scaling.factor;
    options.alibi.train_len = model.train_len;
  }
  if (scaling.logn) {
    TSTL_CHECK(rope_family, "--logn applies to the RoPE-based variants, but the checkpoint's variant is ",
               variant_name(model.variant));
    options.logn_inference = true;
  }
  return options;
}

std::unique_ptr<Tokenizer> tokenizer_for(const LoadedModel& loaded, const std::string& checkpoint_path) {
  const std::string spec = loaded.config.get<std::string>("data.tokenizer");
  auto tokenizer = make_tokenizer(spec == "byte" || spec.rfind("spm:", 0) == 0 ? spec : "spm:" + spec);
  TSTL_CHECK(loaded.tokenizer.empty() || loaded.tokenizer == tokenizer->identity(), checkpoint_path,
             ": the checkpoint was trained with tokenizer ", loaded.tokenizer, ", but data.tokenizer '", spec,
             "' now gives ", tokenizer->identity());
  return tokenizer;
}

int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t index) {
  TSTL_CHECK(vocab >= 1, "sample_token: empty vocabulary");
  if (options.temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  // Candidates: the top_k largest logits (all when top_k is 0 or >= vocab), by value then id.
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  const int64_t k = options.top_k > 0 && options.top_k < vocab ? options.top_k : vocab;
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  ids.resize(static_cast<size_t>(k));
  std::vector<double> weights(ids.size());  // exp((l - l_max) / T), in sorted order
  double total = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    weights[i] = std::exp((static_cast<double>(logits[ids[i]]) - logits[ids[0]]) / options.temperature);
    total += weights[i];
  }
  const double u = uniform_at(options.seed, index) * total;  // in (0, total]
  double cumulative = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += weights[i];
    if (u <= cumulative) return ids[i];
  }
  return ids.back();  // rounding left u a hair above the sum
}

std::vector<int32_t> generate(const Decoder& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const ForwardOptions& base, const StopPredicate& stop) {
  TSTL_CHECK(!prompt.empty(), "generate: the prompt is empty (it needs at least one token)");
  NoGradGuard no_grad;
  KVCache cache;
  ForwardOptions forward = base;
  forward.cache = &cache;
  if (forward.total_len == 0) forward.total_len = static_cast<int64_t>(prompt.size()) + options.max_tokens;
  const int64_t vocab = model.config().vocab_size;
  auto last_row = [&](const Tensor& logits) {  // logits (1, N, V) -> the last row (V)
    return narrow(logits, 1, logits.size(1) - 1, 1).to_vector<float>();
  };
  std::vector<float> row =
      last_row(model.forward(Tensor::from_vector(prompt, {1, static_cast<int64_t>(prompt.size())}), forward));
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int32_t token = sample_token(row.data(), vocab, options, static_cast<uint64_t>(i));
    generated.push_back(token);
    if (token == options.stop_token || (stop && stop(generated)) || i + 1 == options.max_tokens) break;
    row = last_row(model.forward(Tensor::from_vector(std::vector<int32_t>{token}, {1, 1}), forward));
  }
  return generated;
}

int command_generate(const Args& args) {
  std::string checkpoint, prompt;
  ScalingArguments scaling_args;
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
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl generate --checkpoint PATH --prompt TEXT [--max-tokens N --temperature T "
                          "--top-k K --seed S --scaling METHOD:FACTOR --logn]"))
    return 0;
  TSTL_CHECK(sampling.max_tokens >= 1, "--max-tokens must be >= 1, got ", sampling.max_tokens);
  TSTL_CHECK(sampling.temperature >= 0, "--temperature must be >= 0, got ", sampling.temperature);
  TSTL_CHECK(sampling.top_k >= 0, "--top-k must be >= 0, got ", sampling.top_k);
  const InferenceModel model = load_for_inference(checkpoint, scaling_args);
  const Tokenizer& tokenizer = *model.tokenizer;
  const std::vector<int32_t> ids = tokenizer.encode(prompt);
  TSTL_CHECK(!ids.empty(), "--prompt encodes to no tokens");
  sampling.stop_token = tokenizer.eos_id();
  const std::vector<int32_t> out = generate(*model.loaded.model, ids, sampling, model.forward);
  std::vector<int32_t> text_ids = out;
  if (!text_ids.empty() && text_ids.back() == sampling.stop_token) text_ids.pop_back();
  std::printf("%s%s\n", prompt.c_str(), tokenizer.decode(text_ids).c_str());
  return 0;
}

}  // namespace tstl
