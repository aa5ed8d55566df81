// Passkey retrieval accuracy.
#include "eval/passkey.h"

#include <cctype>
#include <cstdio>

#include "core/json.h"
#include "data/passkey.h"

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

void write_passkey_json(const std::string& path, const InferenceModel& model, const PasskeyOptions& options,
                        const std::vector<PasskeyResult>& results) {
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
  write_text_file(path, json.str() + "\n");
}

}  // namespace tstl
