// Passkey retrieval accuracy (Mohtashami & Jaggi 2023) behind `tstl eval passkey`
// (docs/evaluation.md). For each length, `cases` prompts from data/passkey.h (seeded, so the set
// is reproducible); the model continues each greedily; a case passes when the first 5-digit
// number in the continuation equals the key.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "layers/decoder.h"
#include "eval/generate.h"
#include "eval/inference_model.h"

namespace tstl {

// The model under test: continues `prompt` greedily for at most max_new tokens, calling `stop`
// after each token (true ends the continuation early). A Decoder, or a constructed one in tests.
using Continuation = std::function<std::vector<int32_t>(const std::vector<int32_t>& prompt, int64_t max_new,
                                                        const StopPredicate& stop)>;

// Greedy decoding of `model` with the KV cache under `base` (the scaling).
Continuation decoder_continuation(const Decoder& model, const ForwardOptions& base = {});

// The first maximal run of exactly 5 ASCII digits in `text` that is complete (followed by a
// non-digit, or at the end when `finished`); "" when there is none yet.
std::string first_five_digit_number(const std::string& text, bool finished);

struct PasskeyOptions {
  std::vector<int64_t> lengths;  // prompt lengths in tokens
  int64_t cases = 100;
  uint64_t seed = 0;
  int64_t max_new_tokens = 8;  // " 12345." is 7 bytes
};

struct PasskeyResult {
  int64_t length = 0, cases = 0, correct = 0;
  double accuracy = 0;
  std::vector<std::string> answers;  // per case: the decoded continuation
};

// Accuracy per length. `progress` (optional) is called after each length.
std::vector<PasskeyResult> evaluate_passkey(const Tokenizer& tokenizer, const Continuation& model,
                                            const PasskeyOptions& options,
                                            const std::function<void(const PasskeyResult&)>& progress = {});

// The results file of `tstl eval passkey` (docs/evaluation.md): kind "passkey", the model fields
// (write_model_fields), the seed and one entry per length.
void write_passkey_json(const std::string& path, const InferenceModel& model, const PasskeyOptions& options,
                        const std::vector<PasskeyResult>& results);

}  // namespace tstl
