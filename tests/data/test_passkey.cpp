// Passkey prompts: the template, exact lengths for the byte tokenizer, never longer than the
// target for SentencePiece, uniform keys and depths, determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "data/passkey.h"
#include "data/tokenizer.h"
#include "common/cli_test_util.h"

namespace tstl {
namespace {

TEST(Passkey, ByteTokenizerPromptsHaveExactlyTheTargetLength) {
  const auto tok = make_tokenizer("byte");
  for (int64_t target : {241, 257, 511, 1024, 2049}) {
    for (uint64_t c = 0; c < 5; ++c) {
      const PasskeyPrompt p = make_passkey_prompt(*tok, target, 7, c);
      EXPECT_EQ(static_cast<int64_t>(p.prompt.size()), target);
      EXPECT_EQ(tok->decode(p.prompt), p.text);
      EXPECT_GE(p.key, 10000);
      EXPECT_LE(p.key, 99999);
      EXPECT_EQ(tok->decode(p.answer), " " + std::to_string(p.key));
      // Template: intro first, question last, the key sentence once, the filler in between.
      EXPECT_EQ(p.text.rfind(std::string(kPasskeyIntro) + " ", 0), 0u);
      EXPECT_EQ(p.text.substr(p.text.size() - std::strlen(kPasskeyQuestion)), kPasskeyQuestion);
      const std::string sentence = passkey_sentence(p.key);
      EXPECT_EQ(sentence, "The passkey is " + std::to_string(p.key) + ". Remember it. " + std::to_string(p.key) + " is the passkey.");
      const size_t at = p.text.find(sentence);
      ASSERT_NE(at, std::string::npos);
      EXPECT_EQ(p.text.find(sentence, at + 1), std::string::npos);
      if (target >= 1024) {
        EXPECT_NE(p.text.find(kPasskeyFiller), std::string::npos);
      }
    }
  }
}

TEST(Passkey, DeterministicWithUniformKeysAndDepths) {
  const auto tok = make_tokenizer("byte");
  const PasskeyPrompt a = make_passkey_prompt(*tok, 600, 3, 11), b = make_passkey_prompt(*tok, 600, 3, 11);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.key, b.key);
  EXPECT_NE(make_passkey_prompt(*tok, 600, 4, 11).key, a.key);
  // 400 cases: keys and depths spread over their ranges (means within ~5 sd).
  double key_sum = 0, depth_sum = 0, pos_sum = 0;
  int low_depth = 0;
  const int cases = 400;
  for (int c = 0; c < cases; ++c) {
    const PasskeyPrompt p = make_passkey_prompt(*tok, 2000, 1, static_cast<uint64_t>(c));
    key_sum += p.key;
    depth_sum += p.depth;
    low_depth += p.depth < 0.1;
    // The key sentence's position within the filler follows the depth.
    const double begin = std::strlen(kPasskeyIntro) + 1;
    const double filler_len = static_cast<double>(p.text.size()) - begin - passkey_sentence(p.key).size() - 1 - std::strlen(kPasskeyQuestion);
    const double pos = (static_cast<double>(p.text.find(passkey_sentence(p.key))) - begin) / filler_len;
    EXPECT_NEAR(pos, p.depth, 0.03) << c;
    pos_sum += pos;
  }
  EXPECT_NEAR(key_sum / cases, 55000, 5 * 90000 / std::sqrt(12.0 * cases));
  EXPECT_NEAR(depth_sum / cases, 0.5, 5 / std::sqrt(12.0 * cases));
  EXPECT_NEAR(pos_sum / cases, 0.5, 5 / std::sqrt(12.0 * cases));
  EXPECT_NEAR(low_depth, 40, 30);
}

TEST(Passkey, TooShortTargetsFail) {
  const auto tok = make_tokenizer("byte");
  EXPECT_THROW(make_passkey_prompt(*tok, 240, 1, 0), Error);  // the template alone is 241 bytes
}

TEST(Passkey, SentencePiecePromptsNeverExceedTheTarget) {
  test::ScratchDir dir;
  test::write_file(dir / "t.txt", test::sample_english() + std::string(kPasskeyFiller) + "\n" + kPasskeyIntro + "\n");
  SpmTrainOptions options;
  options.inputs = {dir / "t.txt"};
  options.vocab_size = 420;
  train_spm(options, dir / "t.model");
  const auto tok = make_tokenizer("spm:" + (dir / "t.model"));
  for (int64_t target : {160, 333, 1000}) {
    for (uint64_t c = 0; c < 3; ++c) {
      const PasskeyPrompt p = make_passkey_prompt(*tok, target, 2, c);
      EXPECT_LE(static_cast<int64_t>(p.prompt.size()), target);
      EXPECT_GE(static_cast<int64_t>(p.prompt.size()), target - 3) << "as close as the tokenizer allows";
      EXPECT_EQ(tok->decode(p.prompt), p.text);  // identity normalisation: exact
      EXPECT_EQ(tok->decode(p.answer), " " + std::to_string(p.key));
      const auto window = make_passkey_window(*tok, target, 2, c);
      EXPECT_EQ(static_cast<int64_t>(window.size()), target);
    }
  }
}

}  // namespace
}  // namespace tstl
