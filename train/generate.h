// Inference shared by the evaluation commands and `tstl generate` (docs/evaluation.md):
// inference-time scalings as command-line specs, the tokenizer of a checkpoint, seeded sampling
// and incremental decoding with the KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "layers/decoder.h"
#include "train/model_io.h"

namespace tstl {

// An inference-time extrapolation method (attention-variants.md section 6) and its factor a.
// Methods: none; pi, ntk, dynamic-ntk, yarn (RoPE family: rope, keynorm, coca, coca-strict);
// alibi-interp, ntk-alibi, dynamic-ntk-alibi (alibi). logn: log-n query scaling at inference.
struct InferenceScaling {
  std::string method = "none";
  double factor = 1;
  bool logn = false;
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

struct SamplingOptions {
  int64_t max_tokens = 64;
  double temperature = 0;  // 0: greedy (argmax, lowest id on ties)
  int64_t top_k = 0;       // 0: the whole vocabulary
  uint64_t seed = 0;       // Philox stream; token i of a generation uses counter i
  int32_t stop_token = -1; // generation ends after emitting it (-1: none)
};

// The next token from one row of logits (vocab entries): argmax at temperature 0, else a draw
// from softmax(logits / T) restricted to the top_k largest logits, using uniform_at(seed, index).
int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t index);

// Called after every generated token with all tokens generated so far; true stops generation.
using StopPredicate = std::function<bool(const std::vector<int32_t>& generated)>;

// Generates up to options.max_tokens tokens after `prompt` (non-empty) with the KV cache: the
// prompt in one forward, then one token per forward. `base` carries the scaling; its total_len
// (0: prompt + max_tokens) is used for every step, so a dynamic method uses one table for the
// whole sequence and every cached key was rotated with it. No autograd.
std::vector<int32_t> generate(const Decoder& model, const std::vector<int32_t>& prompt, const SamplingOptions& options,
                              const ForwardOptions& base = {}, const StopPredicate& stop = {});

}  // namespace tstl
