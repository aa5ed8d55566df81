// Passkey retrieval prompts (Mohtashami & Jaggi 2023; docs/data.md, "Passkey prompts"):
//   INTRO + " " + filler[0, b) + KEY_SENTENCE + " " + filler[b, c) + QUESTION
// where the filler is "The grass is green. The sky is blue. The sun is yellow. Here we go. There
// and back again. " repeated and cut to c characters, c is the largest count whose prompt has at
// most `target_tokens` tokens, and the key sentence goes at the sentence boundary b nearest to
// depth * c, depth uniform in (0, 1). KEY is uniform in 10000..99999. Key and depth are pure
// functions of (seed, case_index) (Philox), so evaluation sets are reproducible anywhere.
// No BOS is added (token files carry none either).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tstl {

class Tokenizer;

inline constexpr const char* kPasskeyIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.";
inline constexpr const char* kPasskeyFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
inline constexpr const char* kPasskeyQuestion = "What is the passkey? The passkey is";
// "The passkey is KEY. Remember it. KEY is the passkey."
std::string passkey_sentence(int key);

struct PasskeyPrompt {
  std::vector<int32_t> prompt;  // at most target_tokens ids (exactly that many for the byte tokenizer)
  int key = 0;                  // 10000..99999
  std::vector<int32_t> answer;  // the tokens of " KEY"
  double depth = 0;             // where the key sentence sits, as a fraction of the filler
  std::string text;             // the prompt's text
};

// Throws when target_tokens cannot hold the template without filler.
PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t target_tokens, uint64_t seed, uint64_t case_index);

// A training window of exactly `window` tokens: a passkey prompt, its answer, and filler tokens
// after the answer when the tokenizer leaves the prompt a few tokens short.
std::vector<int32_t> make_passkey_window(const Tokenizer& tokenizer, int64_t window, uint64_t seed, uint64_t case_index);

}  // namespace tstl
