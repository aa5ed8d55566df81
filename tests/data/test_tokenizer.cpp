// Tokenizers: byte and SentencePiece round trips, identities, special ids; the JSON text reader.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/text_input.h"
#include "data/tokenizer.h"
#include "common/cli_test_util.h"
#include "common/shared_fixture.h"

namespace tstl {
namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(Fnv64, KnownVectors) {
  // Published FNV-1a 64 test vectors.
  EXPECT_EQ(fnv64_hex(""), "cbf29ce484222325");
  EXPECT_EQ(fnv64_hex("a"), "af63dc4c8601ec8c");
  EXPECT_EQ(fnv64_hex("foobar"), "85944171f73967e8");
}

TEST(ByteTokenizer, RoundTripsArbitraryBytes) {
  const auto tok = make_tokenizer("byte");
  EXPECT_EQ(tok->vocab_size(), 259);
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_EQ(tok->pad_id(), 258);
  EXPECT_EQ(tok->identity(), "byte:259");
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  for (int i = 0; i < 997; ++i) all += static_cast<char>(philox_at(7, static_cast<uint64_t>(i)).v[0] & 0xFF);
  const auto ids = tok->encode(all);
  ASSERT_EQ(ids.size(), all.size());
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[static_cast<size_t>(b)], b);
  EXPECT_EQ(tok->decode(ids), all);
  EXPECT_EQ(tok->encode("héllo\n").size(), 7u);  // UTF-8 bytes, not characters
  EXPECT_EQ(tok->decode({104, 256, 105, 257, 258}), "hi");  // specials decode to nothing
  EXPECT_THROW(tok->decode({259}), Error);
  EXPECT_THROW(tok->decode({-1}), Error);
}

TEST(MakeTokenizer, RejectsUnknownSpecsAndBadModels) {
  test::ScratchDir dir;
  test::write_file(dir / "junk.model", "this is not a protobuf");
  EXPECT_THROW(make_tokenizer("bpe"), Error);
  EXPECT_THROW(make_tokenizer("spm:"), Error);
  EXPECT_THROW(make_tokenizer("spm:" + (dir / "missing.model")), Error);
  try {
    make_tokenizer("spm:" + (dir / "junk.model"));
    FAIL() << "a junk model loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model"), std::string::npos) << e.what();
  }
}

// Two small SentencePiece models, trained once for the whole suite (common/shared_fixture.h).
class SpmTokenizerTest : public ::testing::Test {
 protected:
  static std::string train(const char* name, const char* normalization, const char* model_type) {
    return test::shared_fixture(name, [&](const std::string& out) {
      test::ScratchDir text;
      test::write_file(text / "corpus/a.txt", test::sample_english());
      SpmTrainOptions options;
      options.inputs = {text / "corpus"};
      options.vocab_size = 400;
      options.normalization = normalization;
      if (model_type) options.model_type = model_type;
      train_spm(options, out);
    });
  }
  static void SetUpTestSuite() {
    identity_ = train("spm-identity-400.model", "identity", nullptr);
    nfkc_ = train("spm-nmt_nfkc-unigram-400.model", "nmt_nfkc", "unigram");
  }
  static std::string identity_, nfkc_;
};
std::string SpmTokenizerTest::identity_, SpmTokenizerTest::nfkc_;

TEST_F(SpmTokenizerTest, IdentityAndSpecialIds) {
  const std::string path = identity_;
  const auto tok = make_tokenizer("spm:" + path);
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->pad_id(), 3);
  EXPECT_EQ(tok->identity(), "spm:400:" + fnv64_hex(file_bytes(path)));
  EXPECT_NE(tok->identity(), make_tokenizer("spm:" + nfkc_)->identity());
  EXPECT_THROW(tok->decode({400}), Error);
}

// Normalisation "identity" (what `tstl tokenizer train` uses by default): no Unicode
// normalisation, whitespace kept, byte fallback for characters never seen in training, so
// decode(encode(x)) == x exactly for any valid UTF-8 text.
TEST_F(SpmTokenizerTest, IdentityNormalisationRoundTripsExactly) {
  const auto tok = make_tokenizer("spm:" + identity_);
  const std::string texts[] = {
      "The whale rose from the deep water.",
      "  two leading spaces,\ttabs,\n\nnewlines and   runs of spaces  ",
      "Unseen characters: caf\xC3\xA9, \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E, emoji \xF0\x9F\x98\x80, \xEF\xAC\x81 ligature",
      "Digits 1790 and 99999; punctuation !?\"'{}[]<>\\",
      test::sample_english().substr(0, 2000),
  };
  for (const std::string& t : texts) {
    const auto ids = tok->encode(t);
    for (int32_t id : ids) EXPECT_NE(id, 0) << "byte fallback should leave no <unk>";
    EXPECT_EQ(tok->decode(ids), t);
  }
  // Subword, not byte: common words take fewer tokens than bytes.
  EXPECT_LT(tok->encode(texts[0]).size(), std::string(texts[0]).size() / 2);
}

// Normalisation "nmt_nfkc" (SentencePiece's default): text is NFKC-normalised, runs of
// whitespace collapse to one space and leading/trailing whitespace is dropped, so
// decode(encode(x)) == that normal form of x.
TEST_F(SpmTokenizerTest, NfkcNormalisationRoundTripsUpToNormalForm) {
  const auto tok = make_tokenizer("spm:" + nfkc_);
  EXPECT_EQ(tok->decode(tok->encode("The whale rose.")), "The whale rose.");
  EXPECT_EQ(tok->decode(tok->encode("  The   whale\trose.  ")), "The whale rose.");
  EXPECT_EQ(tok->decode(tok->encode("\xEF\xAC\x81ne")), "fine");                // U+FB01 ligature -> "fi"
  EXPECT_EQ(tok->decode(tok->encode("\xEF\xBC\xA1\xEF\xBC\xA2")), "AB");         // full-width letters
  EXPECT_EQ(tok->decode(tok->encode("caf\xC3\xA9")), "caf\xC3\xA9");              // already NFKC
}

TEST(JsonlText, DecodesEscapesAndSkipsOtherMembers) {
  EXPECT_EQ(jsonl_text_field(R"({"text": "plain"})", "f:1"), "plain");
  EXPECT_EQ(jsonl_text_field(R"({"id": 3, "meta": {"a": [1, 2.5e3, -4, true, false, null, "x\"}"]}, "text": "a\"b\\c\/d\n\t\r\b\f"})", "f:1"),
            "a\"b\\c/d\n\t\r\b\f");
  EXPECT_EQ(jsonl_text_field(R"({"text":"caf\u00e9 \u65e5 \ud83d\ude00 \u0041"})", "f:1"),
            "caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80 A");
  EXPECT_EQ(jsonl_text_field("  {\"text\" : \"raw \xC3\xA9 utf8\" }  ", "f:1"), "raw \xC3\xA9 utf8");
  EXPECT_EQ(jsonl_text_field(R"({"text": ""})", "f:1"), "");
}

TEST(JsonlText, RejectsMalformedLinesNamingTheLine) {
  const char* bad[] = {
      R"({"title": "no text"})", R"({"text": 5})",        R"(["text", "x"])",       R"({"text": "unterminated})",
      R"({"text": "bad \q escape"})", R"({"text": "\ud83d alone"})", R"({"text": "x"} trailing)", R"({"text": "x",})",
      "{\"text\": \"raw\ttab\"}",
  };
  for (const char* line : bad) {
    try {
      jsonl_text_field(line, "docs.jsonl:17");
      ADD_FAILURE() << "accepted: " << line;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("docs.jsonl:17"), std::string::npos) << e.what();
    }
  }
}

TEST(TokenizerCommand, TrainsInfoAndEncodes) {
  test::ScratchDir dir;
  test::write_file(dir / "a.txt", test::sample_english());
  const auto train = test::run_tstl("tokenizer train --input " + (dir / "a.txt") + " --vocab-size 380 --output " + (dir / "t.model"));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("spm:380:"), std::string::npos) << train.output;
  const auto info = test::run_tstl("tokenizer info --tokenizer spm:" + (dir / "t.model"));
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("eos_id 2"), std::string::npos) << info.output;
  const auto enc = test::run_tstl("tokenizer encode --tokenizer byte --text 'AB'");
  EXPECT_EQ(enc.exit_code, 0);
  EXPECT_EQ(enc.output, "65 66\n");
  for (const char* help : {"prepare --help", "tokenizer train --help", "tokenizer --help"}) {
    const auto h = test::run_tstl(help);
    EXPECT_EQ(h.exit_code, 0) << help << "\n" << h.output;
    EXPECT_NE(h.output.find("usage"), std::string::npos) << h.output;
  }
  const auto small = test::run_tstl("tokenizer train --input " + (dir / "a.txt") + " --vocab-size 100 --output " + (dir / "u.model"));
  EXPECT_NE(small.exit_code, 0);
  EXPECT_NE(small.output.find("too small"), std::string::npos) << small.output;
}

}  // namespace
}  // namespace tstl
