#include "data/passkey.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "data/tokenizer.h"

namespace tstl {

std::string passkey_sentence(int key) {
  const std::string k = std::to_string(key);
  return "The passkey is " + k + ". Remember it. " + k + " is the passkey.";
}

namespace {

struct PasskeyCase {
  int key;
  double depth;
};

PasskeyCase passkey_case(uint64_t seed, uint64_t case_index) {
  const Philox4 r = philox_at(seed ^ 0x5041535345594B59ull /* "PASSEYKY" */, case_index);
  const int key = 10000 + static_cast<int>((static_cast<uint64_t>(r.v[0]) * 90000u) >> 32);
  const double depth = (static_cast<double>(r.v[1]) + 0.5) / 4294967296.0;
  return {key, depth};
}

// The prompt text with the first c characters of the repeated filler.
std::string prompt_text(int64_t c, const PasskeyCase& pc) {
  const std::string unit = std::string(kPasskeyFiller) + " ";
  std::string filler;
  filler.reserve(static_cast<size_t>(c));
  while (static_cast<int64_t>(filler.size()) < c) filler += unit;
  filler.resize(static_cast<size_t>(c));
  // Sentence starts: 0 and every position just after ". "; the key goes at the one nearest depth * c.
  const double want = pc.depth * static_cast<double>(c);
  size_t best = 0;
  for (size_t p = 2; p <= filler.size(); ++p) {
    if (filler[p - 2] == '.' && filler[p - 1] == ' ' && std::fabs(static_cast<double>(p) - want) < std::fabs(static_cast<double>(best) - want))
      best = p;
  }
  std::string text = std::string(kPasskeyIntro) + " ";
  text.append(filler, 0, best);
  text += passkey_sentence(pc.key) + " ";
  text.append(filler, best, std::string::npos);
  if (text.back() != ' ') text += ' ';
  text += kPasskeyQuestion;
  return text;
}

}  // namespace

PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t target_tokens, uint64_t seed, uint64_t case_index) {
  const PasskeyCase pc = passkey_case(seed, case_index);
  auto length = [&](int64_t c) { return static_cast<int64_t>(tokenizer.encode(prompt_text(c, pc)).size()); };
  const int64_t minimum = length(0);
  TSTL_CHECK(minimum <= target_tokens, "a passkey prompt needs at least ", minimum, " tokens with tokenizer '",
             tokenizer.identity(), "', but the target length is ", target_tokens);
  // Largest c with length(c) <= target: exponential then binary search (length grows with c,
  // though not strictly for subword tokenizers), then a short scan past the boundary.
  int64_t lo = 0, hi = std::max<int64_t>(1, target_tokens);
  while (length(hi) <= target_tokens) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (length(mid) <= target_tokens ? lo : hi) = mid;
  }
  int64_t best = lo, best_len = length(lo);
  for (int64_t c = lo + 1; c <= lo + 16 && best_len < target_tokens; ++c) {
    const int64_t n = length(c);
    if (n <= target_tokens && n > best_len) best = c, best_len = n;
  }
  PasskeyPrompt out;
  out.key = pc.key;
  out.depth = pc.depth;
  out.text = prompt_text(best, pc);
  out.prompt = tokenizer.encode(out.text);
  out.answer = tokenizer.encode(" " + std::to_string(pc.key));
  TSTL_CHECK(static_cast<int64_t>(out.prompt.size()) <= target_tokens, "passkey prompt overshoots its target");
  return out;
}

std::vector<int32_t> make_passkey_window(const Tokenizer& tokenizer, int64_t window, uint64_t seed, uint64_t case_index) {
  const PasskeyCase pc = passkey_case(seed, case_index);
  const int64_t answer_len = static_cast<int64_t>(tokenizer.encode(" " + std::to_string(pc.key)).size());
  PasskeyPrompt p = make_passkey_prompt(tokenizer, window - answer_len, seed, case_index);
  std::vector<int32_t> ids = std::move(p.prompt);
  ids.insert(ids.end(), p.answer.begin(), p.answer.end());
  const std::vector<int32_t> filler = tokenizer.encode(std::string(". ") + kPasskeyFiller);
  TSTL_CHECK(!filler.empty(), "tokenizer '", tokenizer.identity(), "' encodes the filler to nothing");
  for (size_t i = 0; static_cast<int64_t>(ids.size()) < window; ++i) ids.push_back(filler[i % filler.size()]);
  return ids;
}

}  // namespace tstl
