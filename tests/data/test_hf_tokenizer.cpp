// Hugging Face byte-level BPE tokenizer.json: a hand-computed encoding of a tiny file, and
// agreement with the `tokenizers` library itself (which trains and saves the file in the test)
// on texts with contractions, digits, whitespace runs, added tokens and non-ASCII text.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/cli_test_util.h"
#include "common/python_readers.h"
#include "core/error.h"
#include "core/json.h"
#include "data/tokenizer.h"

namespace tstl {
namespace {

using test::ScratchDir;
using test::write_file;

// U+0120 'Ġ' stands for the space byte in GPT-2's byte-to-character table.
constexpr const char* kTinyTokenizer = R"({"version": "1.0", "added_tokens": [
  {"id": 6, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null,
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
 "post_processor": null, "decoder": {"type": "ByteLevel"},
 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
           "end_of_word_suffix": null, "fuse_unk": false,
           "vocab": {"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "\u0120ab": 5},
           "merges": ["a b", "\u0120 ab"]}})";

TEST(HfTokenizer, TinyFileHandComputed) {
  ScratchDir dir;
  write_file(dir / "tokenizer.json", kTinyTokenizer);
  const auto tok = make_tokenizer("hf:" + (dir / "tokenizer.json"));
  // "ab abc": pieces "ab" and " abc"; " abc" = Ġ a b c -> Ġ ab c (rank 0) -> Ġab c (rank 1).
  EXPECT_EQ(tok->encode("ab abc<|endoftext|>c"), (std::vector<int32_t>{4, 5, 2, 6, 2}));
  EXPECT_EQ(tok->encode(" "), (std::vector<int32_t>{3}));
  EXPECT_EQ(tok->decode({4, 5, 2, 6, 3}), "ab abc ");  // the special token decodes to nothing
  EXPECT_EQ(tok->vocab_size(), 7);
  EXPECT_EQ(tok->eos_id(), 6);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->identity().rfind("hf:7:", 0), 0u) << tok->identity();
  // A byte the vocabulary lacks is an error naming the piece.
  try {
    tok->encode("d");
    ADD_FAILURE() << "encoded a byte missing from the vocabulary";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the piece 'd' is not in the vocabulary"), std::string::npos) << e.what();
  }
}

TEST(HfTokenizer, UnsupportedFilesAreRefusedNamingTheKey) {
  ScratchDir dir;
  auto refused = [&](std::string text, const std::string& from, const std::string& to, const std::string& needle) {
    text.replace(text.find(from), from.size(), to);
    write_file(dir / "t.json", text);
    try {
      make_tokenizer("hf:" + (dir / "t.json"));
      ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string tiny = kTinyTokenizer;
  refused(tiny, R"("type": "BPE")", R"("type": "WordPiece")", "model type 'WordPiece' is not BPE");
  refused(tiny, R"("dropout": null)", R"("dropout": 0.1)", "model.dropout is set");
  refused(tiny, R"("fuse_unk": false)", R"("fuse_unk": false, "ignore_merges": true)", "model.ignore_merges is set");
  refused(tiny, R"("lstrip": false)", R"("lstrip": true)", "added token '<|endoftext|>' has lstrip = true");
  refused(tiny, R"("normalizer": null)", R"("normalizer": {"type": "NFKC"})", "normalizer 'NFKC' is not supported");
  refused(tiny, R"({"type": "ByteLevel", "add_prefix_space")", R"({"type": "Whitespace", "add_prefix_space")",
          "the pre_tokenizer is not ByteLevel");
  refused(tiny, R"("special": true)", R"("special": false)", "has no end-of-text token");
}

// Trains byte-level BPE tokenizers with the library (NFC and add_prefix_space variants), then
// compares ids and decoded text on every test text.
constexpr const char* kLibraryReference = R"(import json, sys
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
corpus, out = sys.argv[1], sys.argv[2]
texts = [
    "The committee met on Tuesday; it didn't agree. We'll see, they've said, I'm sure you'd know.",
    "In 1790, 42 members voted 3-to-1 for $1,250.75 (about 12%).",
    "tabs\tand\nnewlines\n\n  double  spaces   triple    four     five",
    "trailing spaces   ",
    "   leading spaces",
    "caf\u00e9 na\u00efve cafe\u0301 \u00c5ngstr\u00f6m",
    "\u4e2d\u6587\u5b57\u7b26 \u65e5\u672c\u8a9e \U0001F600 emoji \u2014 dash \u00a0nbsp",
    "first<|endoftext|>second <|endoftext|> third<|padding|>",
    "mixedCASE words123 and 123words, x'y 's 't 're",
    "",
]
results = []
for variant, (nfc, prefix) in enumerate([(True, False), (False, True)]):
    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([corpus], trainer)
    tok.add_tokens(["   "])
    path = "%s/tokenizer%d.json" % (out, variant)
    tok.save(path)
    for t in texts:
        ids = tok.encode(t).ids
        results.append({"file": path, "text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
json.dump(results, open(out + "/expected.json", "w"))
)";

TEST(HfTokenizer, AgreesWithTheTokenizersLibrary) {
  TSTL_REQUIRE_PYTHON_READERS(python);
  ScratchDir dir;
  write_file(dir / "corpus.txt", test::sample_english() + "caf\xC3\xA9 na\xC3\xAFve 1790 1791 don't won't it's\n");
  write_file(dir / "reference.py", kLibraryReference);
  const auto r = test::run_shell(python + " " + (dir / "reference.py") + " " + (dir / "corpus.txt") + " " + dir.path.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir / "expected.json");
  std::stringstream text;
  text << in.rdbuf();
  const JsonValue expected = parse_json(text.str(), "expected.json");
  ASSERT_EQ(expected.array.size(), 20u);
  int64_t tokens = 0;
  for (const JsonValue& c : expected.array) {
    const auto tok = make_tokenizer("hf:" + c.get_string("file"));
    const std::string& t = c.get_string("text");
    std::vector<int32_t> want;
    for (const JsonValue& id : c.get_array("ids").array) want.push_back(static_cast<int32_t>(id.number));
    const std::vector<int32_t> got = tok->encode(t);
    EXPECT_EQ(got, want) << c.get_string("file") << ": '" << t << "'";
    EXPECT_EQ(tok->decode(got), c.get_string("decoded")) << "'" << t << "'";
    EXPECT_EQ(tok->eos_id(), 0);
    EXPECT_EQ(tok->pad_id(), 1);
    tokens += static_cast<int64_t>(got.size());
  }
  EXPECT_GT(tokens, 200);
}

}  // namespace
}  // namespace tstl
