// Inference-time scalings, checkpoint tokenizers and models loaded for inference.
#include "eval/inference_model.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "train/model_cost.h"

namespace tstl {

namespace {

// The one table of the inference-time scalings: the name on the command line and in results,
// the variants a method applies to, and what it sets in the decoder's forward options.
struct MethodInfo {
  ScalingMethod method;
  const char* name;
  bool rope_family;  // applies to rope, keynorm, coca, coca-strict; else to alibi
  RopeScaling rope;
  AlibiScaling alibi;
};

const MethodInfo kMethods[] = {
    {ScalingMethod::None, "none", true, RopeScaling::None, AlibiScaling::None},
    {ScalingMethod::PI, "pi", true, RopeScaling::PI, AlibiScaling::None},
    {ScalingMethod::NTK, "ntk", true, RopeScaling::NTK, AlibiScaling::None},
    {ScalingMethod::DynamicNTK, "dynamic-ntk", true, RopeScaling::DynamicNTK, AlibiScaling::None},
    {ScalingMethod::YaRN, "yarn", true, RopeScaling::YaRN, AlibiScaling::None},
    {ScalingMethod::AlibiInterp, "alibi-interp", false, RopeScaling::None, AlibiScaling::Interp},
    {ScalingMethod::NTKAlibi, "ntk-alibi", false, RopeScaling::None, AlibiScaling::NTK},
    {ScalingMethod::DynamicNTKAlibi, "dynamic-ntk-alibi", false, RopeScaling::None, AlibiScaling::DynamicNTK},
};

const char* kMethodList = "none, pi, ntk, dynamic-ntk, yarn (rope, keynorm, coca, coca-strict) or alibi-interp, "
                          "ntk-alibi, dynamic-ntk-alibi (alibi)";

const MethodInfo& info(ScalingMethod method) {
  for (const MethodInfo& m : kMethods)
    if (m.method == method) return m;
  TSTL_FAIL("unknown scaling method ", static_cast<int>(method));
}

}  // namespace

const char* scaling_method_name(ScalingMethod method) { return info(method).name; }

InferenceScaling parse_scaling(const std::string& spec) {
  InferenceScaling s;
  if (spec.empty() || spec == "none") return s;
  const size_t colon = spec.find(':');
  TSTL_CHECK(colon != std::string::npos, "--scaling '", spec, "': expected METHOD:FACTOR (e.g. dynamic-ntk:4) or none");
  const std::string name = spec.substr(0, colon);
  const MethodInfo* found = nullptr;
  for (const MethodInfo& m : kMethods)
    if (name == m.name && m.method != ScalingMethod::None) found = &m;
  TSTL_CHECK(found, "--scaling '", spec, "': unknown method '", name, "' (expected ", kMethodList, ")");
  s.method = found->method;
  const std::string factor = spec.substr(colon + 1);
  char* end = nullptr;
  s.factor = std::strtod(factor.c_str(), &end);
  TSTL_CHECK(!factor.empty() && end && *end == '\0' && std::isfinite(s.factor) && s.factor >= 1, "--scaling '", spec,
             "': the factor must be a number >= 1, got '", factor, "'");
  return s;
}

std::string scaling_label(const InferenceScaling& scaling) {
  std::string label = scaling_method_name(scaling.method);
  if (scaling.method != ScalingMethod::None) {
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
  if (scaling.method != ScalingMethod::None) {
    const MethodInfo& m = info(scaling.method);
    TSTL_CHECK(m.rope_family == rope_family, "scaling method '", m.name, "' applies to ",
               m.rope_family ? "the RoPE-based variants (rope, keynorm, coca, coca-strict)" : "alibi",
               ", but the checkpoint's variant is ", variant_name(model.variant));
    options.rope.scaling = m.rope;
    options.rope.factor = scaling.factor;
    options.rope.train_len = model.train_len;
    options.alibi.scaling = m.alibi;
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

std::unique_ptr<Tokenizer> tokenizer_for(const LoadedModel& loaded, const std::string& checkpoint_path,
                                         const std::string& tokenizer_spec) {
  const int64_t model_vocab = loaded.model->config().vocab_size;
  if (!tokenizer_spec.empty()) {
    auto tokenizer = make_tokenizer_for_config(tokenizer_spec);
    if (is_external_tokenizer(loaded.tokenizer))
      TSTL_CHECK(tokenizer->vocab_size() <= model_vocab, "--tokenizer ", tokenizer_spec, " has ", tokenizer->vocab_size(),
                 " ids, more than the vocabulary of ", model_vocab, " that ", checkpoint_path, " was trained on (",
                 loaded.tokenizer, ")");
    else
      TSTL_CHECK(loaded.tokenizer.empty() || loaded.tokenizer == tokenizer->identity(), checkpoint_path,
                 ": the checkpoint was trained with tokenizer ", loaded.tokenizer, ", but --tokenizer '", tokenizer_spec,
                 "' is ", tokenizer->identity());
    return tokenizer;
  }
  const std::string spec = loaded.config.get<std::string>("data.tokenizer");
  if (is_external_tokenizer(spec))
    return make_external_tokenizer(spec.substr(std::string(kExternalTokenizerPrefix).size()), model_vocab, -1);
  auto tokenizer = make_tokenizer_for_config(spec);
  TSTL_CHECK(loaded.tokenizer.empty() || loaded.tokenizer == tokenizer->identity(), checkpoint_path,
             ": the checkpoint was trained with tokenizer ", loaded.tokenizer, ", but data.tokenizer '", spec,
             "' now gives ", tokenizer->identity());
  return tokenizer;
}

InferencePlacement parse_placement(const std::string& device, const std::string& dtype) {
  InferencePlacement p;
  if (device == "cuda") {
    p.device = Device::CUDA;
    TSTL_CHECK(cuda_compiled(), "--device cuda: this tstl was built without the CUDA backend (configure with "
               "-DTSTL_CUDA=ON where nvcc exists), use --device cpu");
    TSTL_CHECK(cuda_available(), "--device cuda: no CUDA device is present on this machine, use --device cpu");
  } else {
    TSTL_CHECK(device == "cpu", "--device '", device, "': expected cpu or cuda");
  }
  if (dtype.empty())
    p.dtype = p.device == Device::CUDA ? DType::BF16 : DType::F32;
  else if (dtype == "bf16")
    p.dtype = DType::BF16;
  else
    TSTL_CHECK(dtype == "f32", "--dtype '", dtype, "': expected f32 or bf16");
  TSTL_CHECK(p.device == Device::CUDA || p.dtype == DType::F32,
             "--dtype bf16 needs --device cuda: the CPU backend's ops compute in f32 (give --dtype f32 or leave it out)");
  return p;
}

std::string placement_label(const InferencePlacement& placement) {
  return std::string(device_name(placement.device)) + " " + dtype_name(placement.dtype);
}

std::unique_ptr<Decoder> place_model(const Decoder& model, const InferencePlacement& placement) {
  auto placed = std::make_unique<Decoder>(model.config(), placement.dtype, placement.device);
  const auto& from = model.named_parameters();
  const auto& to = placed->named_parameters();
  TSTL_CHECK(from.size() == to.size(), "place_model: ", from.size(), " parameters, the placed model has ", to.size());
  for (size_t i = 0; i < from.size(); ++i) {
    Tensor target = to[i].second;
    target.copy_(from[i].second);  // converts the device and the dtype
  }
  return placed;
}

InferenceModel load_for_inference(const std::string& checkpoint, const InferenceScaling& scaling,
                                  const std::string& tokenizer_spec, const InferencePlacement& placement) {
  InferenceModel m;
  m.checkpoint = checkpoint;
  m.loaded = load_model(checkpoint);
  m.placement = placement;
  // The checkpoint is read on the host in f32; the host copy is dropped once placed.
  if (placement.device != Device::CPU || placement.dtype != DType::F32)
    m.loaded.model = place_model(*m.loaded.model, placement);
  m.scaling = scaling;
  m.forward = forward_options_for(m.config(), m.scaling);
  m.tokenizer = tokenizer_for(m.loaded, checkpoint, tokenizer_spec);
  return m;
}

double inference_bytes_per_token(const ModelConfig& m) {
  return 4.0 * static_cast<double>(m.vocab_size + m.ffn + 8 * m.hidden + 2 * m.layers * m.hidden);
}

double inference_memory_bytes(const ModelConfig& m, int64_t tokens) {
  return model_cost(m, 1, 1).weight_bytes + inference_bytes_per_token(m) * static_cast<double>(tokens);
}

std::string describe(const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  const bool default_placement = m.placement.device == Device::CPU && m.placement.dtype == DType::F32;
  return m.checkpoint + " (" + variant_name(mc.variant) + ", train_len " + std::to_string(mc.train_len) + ", step " +
         std::to_string(m.loaded.step) + "), " + scaling_label(m.scaling) +
         (default_placement ? "" : ", " + placement_label(m.placement));
}

void write_model_fields(JsonWriter& json, const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  json.field("checkpoint", m.checkpoint);
  json.field("step", static_cast<double>(m.loaded.step));
  json.field("variant", variant_name(mc.variant));
  json.field("train_len", static_cast<double>(mc.train_len));
  json.field("method", scaling_label(m.scaling));
  json.field("scaling_method", scaling_method_name(m.scaling.method));
  json.field("scaling_factor", m.scaling.factor);
  json.field("logn", m.scaling.logn);
  json.field("device", device_name(m.placement.device));
  json.field("dtype", dtype_name(m.placement.dtype));
}

}  // namespace tstl
