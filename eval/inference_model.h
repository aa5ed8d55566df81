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

// The tokenizer named by the checkpoint's data.tokenizer (byte, a SentencePiece model path, hf:PATH),
// or by `tokenizer_spec` when given (a moved model file); an error when its identity differs from
// the one the checkpoint stores. A checkpoint trained on external:NAME ids gets an external
// tokenizer of the model's vocabulary, whose encode/decode refuse with a message, unless
// `tokenizer_spec` gives the text form of those ids (at most the model's vocabulary).
std::unique_ptr<Tokenizer> tokenizer_for(const LoadedModel& loaded, const std::string& checkpoint_path,
                                         const std::string& tokenizer_spec = "");

// Where a model runs for inference and the dtype of its weights and activations (--device,
// --dtype). On CUDA the weights are copied to the device once, the key/value cache stays there,
// and only what the host needs is read back (per-token losses of a batch of windows, the last
// row of logits of a decoding step, the q and k of the layers `eval attention` shows).
struct InferencePlacement {
  Device device = Device::CPU;
  DType dtype = DType::F32;
};
// --device cpu|cuda and --dtype f32|bf16 ("" = f32 on the CPU, bf16 on CUDA). An unknown value
// is an error naming the flag and the accepted ones; --device cuda in a build without the CUDA
// backend, or on a machine without a device, is an error that says which; bf16 is CUDA only
// (the CPU ops take f32 and f64).
InferencePlacement parse_placement(const std::string& device, const std::string& dtype);
// "cpu f32", "cuda bf16": how results and the first line of the output name the placement.
std::string placement_label(const InferencePlacement& placement);

// A checkpoint ready for inference: its model (on the placement's device, in its dtype), its
// tokenizer and the forward options of the inference-time scaling asked for.
struct InferenceModel {
  std::string checkpoint;  // the path it was read from
  LoadedModel loaded;
  InferencePlacement placement;
  InferenceScaling scaling;
  ForwardOptions forward;
  std::unique_ptr<Tokenizer> tokenizer;
  const ModelConfig& config() const { return loaded.model->config(); }
};
// Loads `checkpoint`, resolves `scaling` against its variant (errors as forward_options_for),
// builds its tokenizer (errors as tokenizer_for) and places the model (`placement`).
InferenceModel load_for_inference(const std::string& checkpoint, const InferenceScaling& scaling,
                                  const std::string& tokenizer_spec = "", const InferencePlacement& placement = {});
// A copy of `model` (any device and dtype) on `placement`'s device in its dtype.
std::unique_ptr<Decoder> place_model(const Decoder& model, const InferencePlacement& placement);

// A lower estimate of the memory of one inference forward of `tokens` tokens (f32): the weights,
// plus per token the logits, the MLP's hidden layer, the attention's q, k, v and output, the
// residual stream and norms, and the key/value cache of every layer. For out-of-memory messages.
double inference_bytes_per_token(const ModelConfig& model);
double inference_memory_bytes(const ModelConfig& model, int64_t tokens);

// "PATH (variant, train_len N, step S), label", then ", cuda bf16" when the placement is not
// the CPU in f32: the first line of an evaluation's output.
std::string describe(const InferenceModel& m);

// The fields that say which model and method an evaluation result is of: checkpoint, step,
// variant, train_len, method (the label), scaling_method, scaling_factor, logn, device, dtype.
void write_model_fields(JsonWriter& json, const InferenceModel& m);

}  // namespace tstl
