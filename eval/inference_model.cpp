// Inference-time scalings, checkpoint tokenizers and models loaded for inference.
#include "eval/inference_model.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

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

InferenceModel load_for_inference(const std::string& checkpoint, const InferenceScaling& scaling) {
  InferenceModel m;
  m.checkpoint = checkpoint;
  m.loaded = load_model(checkpoint);
  m.scaling = scaling;
  m.forward = forward_options_for(m.config(), m.scaling);
  m.tokenizer = tokenizer_for(m.loaded, checkpoint);
  return m;
}

std::string describe(const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  return m.checkpoint + " (" + variant_name(mc.variant) + ", train_len " + std::to_string(mc.train_len) + ", step " +
         std::to_string(m.loaded.step) + "), " + scaling_label(m.scaling);
}

void write_model_fields(JsonWriter& json, const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  json.field("checkpoint", m.checkpoint);
  json.field("step", static_cast<double>(m.loaded.step));
  json.field("variant", variant_name(mc.variant));
  json.field("train_len", static_cast<double>(mc.train_len));
  json.field("method", scaling_label(m.scaling));
  json.field("scaling_method", m.scaling.method);
  json.field("scaling_factor", m.scaling.factor);
  json.field("logn", m.scaling.logn);
}

}  // namespace tstl
