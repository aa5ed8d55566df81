// A trained model ready for inference, shared by the evaluations and generation
// (docs/evaluation.md): inference-time scalings, the tokenizer of a checkpoint, and the model
// loaded from a checkpoint with both.
#pragma once

#include <memory>
#include <string>

#include "core/json.h"
#include "data/tokenizer.h"
#include "layers/decoder.h"
#include "train/model_io.h"

namespace tstl {

// The inference-time extrapolation methods (docs/variants.md), each with a factor a. RoPE family
// (rope, keynorm, coca, coca-strict): pi, ntk, dynamic-ntk, yarn; alibi: alibi-interp, ntk-alibi,
// dynamic-ntk-alibi. One table in inference_model.cpp holds their names and the RopeScaling or
// AlibiScaling each sets.
enum class ScalingMethod { None, PI, NTK, DynamicNTK, YaRN, AlibiInterp, NTKAlibi, DynamicNTKAlibi };
const char* scaling_method_name(ScalingMethod method);  // "none", "dynamic-ntk", ...

struct InferenceScaling {
  ScalingMethod method = ScalingMethod::None;
  double factor = 1;
  bool logn = false;  // log-n query scaling at inference
};

// "none" or "METHOD:FACTOR" (FACTOR >= 1). An unknown method or a bad factor is an error that
// lists the accepted forms.
InferenceScaling parse_scaling(const std::string& spec);
// "none", "dynamic-ntk:4", with "+logn" appended when logn is on: the label of reports.
std::string scaling_label(const InferenceScaling& scaling);
// The forward options of `scaling` for `model`; a method that does not apply to the model's
// variant (a RoPE method on alibi, an ALiBi method or log-n on a RoPE variant... see above) is an
// error naming both.
ForwardOptions forward_options_for(const ModelConfig& model, const InferenceScaling& scaling);

// The tokenizer named by the checkpoint's data.tokenizer ("byte" or a SentencePiece model path);
// an error when its identity differs from the one the checkpoint stores.
std::unique_ptr<Tokenizer> tokenizer_for(const LoadedModel& loaded, const std::string& checkpoint_path);

// A checkpoint ready for inference: its model, its tokenizer and the forward options of the
// inference-time scaling asked for.
struct InferenceModel {
  std::string checkpoint;  // the path it was read from
  LoadedModel loaded;
  InferenceScaling scaling;
  ForwardOptions forward;
  std::unique_ptr<Tokenizer> tokenizer;
  const ModelConfig& config() const { return loaded.model->config(); }
};
// Loads `checkpoint`, resolves `scaling` against its variant (errors as forward_options_for)
// and builds its tokenizer (errors as tokenizer_for).
InferenceModel load_for_inference(const std::string& checkpoint, const InferenceScaling& scaling);

// A lower estimate of the memory of one inference forward of `tokens` tokens (f32): the weights,
// plus per token the logits, the MLP's hidden layer, the attention's q, k, v and output, the
// residual stream and norms, and the key/value cache of every layer. For out-of-memory messages.
double inference_bytes_per_token(const ModelConfig& model);
double inference_memory_bytes(const ModelConfig& model, int64_t tokens);

// "PATH (variant, train_len N, step S), label": the first line of an evaluation's output.
std::string describe(const InferenceModel& m);

// The fields that say which model and method an evaluation result is of: checkpoint, step,
// variant, train_len, method (the label), scaling_method, scaling_factor, logn.
void write_model_fields(JsonWriter& json, const InferenceModel& m);

}  // namespace tstl
