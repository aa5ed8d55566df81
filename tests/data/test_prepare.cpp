// `tstl prepare` and the token file: documents, splits, EOS placement, dtypes, the schema as
// h5py sees it, and the errors on bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/hdf5.h"
#include "data/prepare.h"
#include "data/text_input.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "common/cli_test_util.h"

namespace tstl {
namespace {

using test::run_tstl;
using test::ScratchDir;
using test::write_file;

// corpus/ holds a.txt, b.txt, empty.txt (skipped), notes.md (ignored), sub/c.txt.gz; docs.jsonl
// holds two documents, a blank line and an empty text (skipped).
void make_corpus(const ScratchDir& dir) {
  write_file(dir / "corpus/b.txt", "Beta document.");
  write_file(dir / "corpus/a.txt", "Alpha document text.\n");
  write_file(dir / "corpus/empty.txt", "");
  write_file(dir / "corpus/notes.md", "not a text input");
  std::filesystem::create_directories(dir / "corpus/sub");
  test::write_gz(dir / "corpus/sub/c.txt.gz", "Gamma \xC3\xA9");
  write_file(dir / "docs.jsonl", "{\"text\": \"first\"}\n\n{\"id\": 2, \"text\": \"sec\\u00f6nd\\n\"}\n{\"text\": \"\"}\n");
}

std::vector<int32_t> bytes_then_eos(const std::string& s) {
  std::vector<int32_t> ids(s.begin(), s.end());
  for (int32_t& id : ids) id &= 0xFF;
  ids.push_back(257);
  return ids;
}

std::vector<int32_t> doc_tokens(const TokenSplit& split, size_t d) {
  return std::vector<int32_t>(split.tokens.begin() + static_cast<int64_t>(split.doc_offsets[d]),
                              split.tokens.begin() + static_cast<int64_t>(split.doc_offsets[d + 1]));
}

TEST(Prepare, DocumentsSplitsAndEosPlacement) {
  ScratchDir dir;
  make_corpus(dir);
  PrepareOptions options;
  options.inputs = {dir / "corpus", dir / "docs.jsonl"};
  options.output = dir / "out.h5";
  options.val_documents = {"b", "docs.jsonl:3"};
  const auto tok = make_tokenizer("byte");
  const PrepareSummary s = prepare_token_file(options, *tok, nullptr);
  EXPECT_EQ(s.skipped_empty, 2);
  EXPECT_EQ(s.token_dtype, "uint16");
  EXPECT_FALSE(std::filesystem::exists(dir / "out.h5.tmp"));

  const TokenFile file = TokenFile::open_file(dir / "out.h5");
  EXPECT_EQ(file.vocab_size(), 259);
  EXPECT_EQ(file.tokenizer_identity(), "byte:259");
  EXPECT_EQ(file.eos_id(), 257);
  const TokenSplit train = file.split("train"), val = file.split("val");
  EXPECT_EQ(train.doc_names, (std::vector<std::string>{"a.txt", "sub/c.txt", "docs.jsonl:1"}));
  EXPECT_EQ(val.doc_names, (std::vector<std::string>{"b.txt", "docs.jsonl:3"}));
  EXPECT_EQ(doc_tokens(train, 0), bytes_then_eos("Alpha document text.\n"));
  EXPECT_EQ(doc_tokens(train, 1), bytes_then_eos("Gamma \xC3\xA9"));
  EXPECT_EQ(doc_tokens(train, 2), bytes_then_eos("first"));
  EXPECT_EQ(doc_tokens(val, 0), bytes_then_eos("Beta document."));
  EXPECT_EQ(doc_tokens(val, 1), bytes_then_eos("sec\xC3\xB6nd\n"));
  EXPECT_EQ(train.doc_offsets, (std::vector<uint64_t>{0, 22, 31, 37}));
  EXPECT_EQ(train.text_bytes, 21 + 8 + 5);
  EXPECT_EQ(s.train.tokens, 37);
  EXPECT_EQ(s.val.documents, 2);
}

TEST(Prepare, ValFractionIsEveryKthDocumentAndMaxDocumentsStops) {
  // floor((i+1) F) > floor(i F): F = 0.3 puts documents 3, 6, 9 of 0..9 in val.
  std::vector<int> val;
  for (int i = 0; i < 10; ++i)
    if (is_val_by_fraction(static_cast<uint64_t>(i), 0.3)) val.push_back(i);
  EXPECT_EQ(val, (std::vector<int>{3, 6, 9}));
  for (double f : {0.05, 0.1, 0.29, 0.5}) {
    int n = 0;
    for (int i = 0; i < 1000; ++i) n += is_val_by_fraction(static_cast<uint64_t>(i), f);
    EXPECT_EQ(n, static_cast<int>(std::llround(1000 * f))) << f;
  }
  EXPECT_EQ(is_val_by_fraction(0, 0.0) + is_val_by_fraction(5, 0.0), 0);

  ScratchDir dir;
  for (int i = 0; i < 10; ++i) write_file(dir / ("d/doc" + std::to_string(i) + ".txt"), "text " + std::to_string(i));
  PrepareOptions options;
  options.inputs = {dir / "d"};
  options.output = dir / "f.h5";
  options.val_fraction = 0.3;
  const auto tok = make_tokenizer("byte");
  prepare_token_file(options, *tok, nullptr);
  const TokenFile file = TokenFile::open_file(dir / "f.h5");
  EXPECT_EQ(file.split("val").doc_names, (std::vector<std::string>{"doc3.txt", "doc6.txt", "doc9.txt"}));
  EXPECT_EQ(file.split("train").n_documents(), 7);

  options.max_documents = 4;
  options.output = dir / "g.h5";
  prepare_token_file(options, *tok, nullptr);
  const TokenFile small = TokenFile::open_file(dir / "g.h5");
  EXPECT_EQ(small.split("train").doc_names, (std::vector<std::string>{"doc0.txt", "doc1.txt", "doc2.txt"}));
  EXPECT_EQ(small.split("val").doc_names, (std::vector<std::string>{"doc3.txt"}));
}

// The schema as an independent reader sees it.
TEST(Prepare, FileIsReadableByH5py) {
  if (test::run_shell("/usr/bin/python3 -c 'import h5py, numpy'").exit_code != 0) GTEST_SKIP() << "h5py is not installed";
  ScratchDir dir;
  make_corpus(dir);
  const auto r = run_tstl("prepare --input " + (dir / "corpus") + " " + (dir / "docs.jsonl") +
                          " --tokenizer byte --val-documents a docs.jsonl:1 --output " + (dir / "out.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("bytes/token"), std::string::npos) << r.output;
  write_file(dir / "check.py", R"(import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
a = f.attrs
assert a["format"] == "tstl-tokens", a["format"]
assert a["format_version"] == 1
assert a["vocab_size"] == 259 and a["eos_id"] == 257 and a["tokenizer"] == "byte:259"
assert sorted(f.keys()) == ["train", "val"], list(f.keys())
names = {}
for split in ("train", "val"):
    g = f[split]
    t, off = g["tokens"], g["doc_offsets"][:]
    assert t.dtype == np.uint16, t.dtype
    assert off.dtype == np.uint64, off.dtype
    assert g.attrs["tokenizer"] == "byte:259" and g.attrs["vocab_size"] == 259 and g.attrs["eos_id"] == 257
    t = t[:]
    assert off[0] == 0 and off[-1] == len(t) and len(off) == g.attrs["n_documents"] + 1
    assert all(t[off[1:] - 1] == 257), "every document ends with EOS"
    assert (t == 257).sum() == len(off) - 1, "EOS only at document ends"
    names[split] = [n.decode() if isinstance(n, bytes) else n for n in g["doc_names"][:]]
    if split == "val":
        assert bytes(t[int(off[0]):int(off[1]) - 1].astype(np.uint8)) == b"Alpha document text.\n"
assert names["val"] == ["a.txt", "docs.jsonl:1"], names
assert names["train"] == ["b.txt", "sub/c.txt", "docs.jsonl:3"], names
print("SCHEMA OK")
)");
  const auto py = test::run_shell("/usr/bin/python3 " + (dir / "check.py") + " " + (dir / "out.h5"));
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("SCHEMA OK"), std::string::npos) << py.output;
}

// A SentencePiece model with more than 65536 pieces: a small trained model plus extra pieces
// appended as further `pieces` (field 1) entries of the ModelProto, which protobuf concatenates.
std::string make_wide_spm_model(const ScratchDir& dir, int64_t total_pieces) {
  test::write_file(dir / "spm_text.txt", test::sample_english());
  SpmTrainOptions options;
  options.inputs = {dir / "spm_text.txt"};
  options.vocab_size = 400;
  train_spm(options, dir / "base.model");
  std::ifstream in(dir / "base.model", std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::string model = bytes.str();
  auto varint = [](uint64_t v) {
    std::string out;
    for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7F) | 0x80);
    return out + static_cast<char>(v);
  };
  for (int64_t i = 400; i < total_pieces; ++i) {
    const std::string piece = "\xC2\xA7" + std::to_string(i);  // "§N": never in the text
    std::string msg = "\x0A" + varint(piece.size()) + piece;   // SentencePiece.piece = 1
    msg += std::string("\x15") + std::string("\x00\x00\x20\xC1", 4);  // score = 2 (float -10)
    model += "\x0A" + varint(msg.size()) + msg;                 // ModelProto.pieces = 1
  }
  const std::string path = dir / "wide.model";
  std::ofstream(path, std::ios::binary) << model;
  return path;
}

TEST(Prepare, Uint32TokensForLargeVocabulariesAndUint16TooSmallIsAnError) {
  ScratchDir dir;
  make_corpus(dir);
  const std::string model = make_wide_spm_model(dir, 70001);
  const auto tok = make_tokenizer("spm:" + model);
  ASSERT_EQ(tok->vocab_size(), 70001);
  const auto r = run_tstl("prepare --input " + (dir / "corpus") + " --tokenizer spm:" + model + " --val-fraction 0 --output " + (dir / "w.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("uint32 tokens"), std::string::npos) << r.output;
  {
    h5::Handle f(H5Fopen((dir / "w.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    h5::Handle d(H5Dopen2(f, "/train/tokens", H5P_DEFAULT));
    h5::Handle t(H5Dget_type(d));
    EXPECT_EQ(H5Tget_size(t), 4u);
    EXPECT_EQ(H5Tget_sign(t), H5T_SGN_NONE);
  }
  const TokenFile file = TokenFile::open_file(dir / "w.h5");
  check_tokenizer_matches(file, *tok);
  const TokenSplit train = file.split("train");
  std::vector<int32_t> first = doc_tokens(train, 0);
  ASSERT_EQ(first.back(), tok->eos_id());
  first.pop_back();
  EXPECT_EQ(tok->decode(first), "Alpha document text.\n");

  const auto bad = run_tstl("prepare --input " + (dir / "corpus") + " --tokenizer spm:" + model +
                            " --token-dtype uint16 --output " + (dir / "x.h5"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("too large for uint16"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.h5"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.h5.tmp"));
}

// Each bad input: non-zero exit, a message naming the problem, and no output file left behind.
TEST(Prepare, BadInputsFailClearly) {
  ScratchDir dir;
  make_corpus(dir);
  write_file(dir / "empty.txt", "");
  write_file(dir / "nodocs.jsonl", "\n\n");
  write_file(dir / "notext.jsonl", "{\"body\": \"x\"}\n");
  std::filesystem::create_directories(dir / "notext_dir/deeper");
  write_file(dir / "notext_dir/deeper/readme.md", "markdown only");
  const auto ok = run_tstl("prepare --input " + (dir / "corpus") + " --output " + (dir / "byte.h5"));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  const std::string out = " --output " + (dir / "bad.h5");
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"prepare --input " + (dir / "missing.txt") + out, "does not exist"},
      {"prepare --input " + (dir / "empty.txt") + out, "is empty"},
      {"prepare --input " + (dir / "notext_dir") + out, "holds no text"},
      {"prepare --input " + (dir / "nodocs.jsonl") + out, "holds no documents"},
      {"prepare --input " + (dir / "notext.jsonl") + out, "notext.jsonl:1"},
      {"prepare --input " + (dir / "corpus") + " --tokenizer gpt2" + out, "unknown tokenizer"},
      {"prepare --input " + (dir / "corpus") + " --val-documents zeta" + out, "'zeta'"},
      {"prepare --input " + (dir / "corpus") + " --val-fraction 1.5" + out, "--val-fraction"},
      {"prepare" + out, "--input"},
      {"tokenizer check --tokenizer spm:" + make_wide_spm_model(dir, 500) + " --tokens " + (dir / "byte.h5"),
       "written with tokenizer 'byte:259'"},
      {"tokenizer check --tokenizer byte --tokens " + (dir / "corpus/a.txt"), "not an HDF5 file"},
  };
  for (const Case& c : cases) {
    const auto r = run_tstl(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.h5")) << c.args;
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.h5.tmp")) << c.args;
  }
  const auto good = run_tstl("tokenizer check --tokenizer byte --tokens " + (dir / "byte.h5"));
  EXPECT_EQ(good.exit_code, 0) << good.output;
}

TEST(TokenFile, RejectsFilesThatAreNotTokenFiles) {
  ScratchDir dir;
  h5::quiet();
  {  // an HDF5 file with a different format, and one with the right format but no /val
    h5::Handle f(H5Fcreate((dir / "other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    h5::Handle g(H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  }
  auto expect_error = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { TokenFile::open_file(dir / "nope.h5"); }, "does not exist");
  expect_error([&] { TokenFile::open_file(dir / "other.h5"); }, "not a tstl token file");
  write_file(dir / "a.txt", "Alpha");
  PrepareOptions options;
  options.inputs = {dir / "a.txt"};
  options.output = dir / "t.h5";
  options.val_fraction = 0;
  const auto tok = make_tokenizer("byte");
  prepare_token_file(options, *tok, nullptr);
  const TokenFile file = TokenFile::open_file(dir / "t.h5");
  EXPECT_EQ(file.split("val").n_documents(), 0);
  EXPECT_EQ(file.split("val").doc_offsets, (std::vector<uint64_t>{0}));
  expect_error([&] { file.split("test"); }, "has no group '/test'");
}

// Past the writer's buffers (1 Mi tokens, 1024 names per split): appends across several flushes.
TEST(Prepare, StreamsAcrossManyFlushes) {
  ScratchDir dir;
  std::string big(450000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7919) % 26);
  for (int d = 0; d < 3; ++d) write_file(dir / ("big/d" + std::to_string(d) + ".txt"), big.substr(static_cast<size_t>(d)));
  std::string lines;
  for (int i = 0; i < 2100; ++i) lines += "{\"text\": \"line " + std::to_string(i) + "\"}\n";
  write_file(dir / "many.jsonl", lines);
  PrepareOptions options;
  options.inputs = {dir / "big", dir / "many.jsonl"};
  options.output = dir / "s.h5";
  options.val_fraction = 0.5;
  const auto tok = make_tokenizer("byte");
  prepare_token_file(options, *tok, nullptr);
  const TokenFile file = TokenFile::open_file(dir / "s.h5");
  const TokenSplit train = file.split("train"), val = file.split("val");
  ASSERT_EQ(train.n_documents() + val.n_documents(), 2103);
  EXPECT_EQ(train.doc_names[0], "d0.txt");
  EXPECT_EQ(val.doc_names[0], "d1.txt");
  EXPECT_EQ(doc_tokens(train, 0), bytes_then_eos(big));
  EXPECT_EQ(doc_tokens(train, 1), bytes_then_eos(big.substr(2)));
  EXPECT_EQ(doc_tokens(val, 0), bytes_then_eos(big.substr(1)));
  // Document i >= 3 is jsonl line i - 2 (text "line i-3"); odd i go to val (F = 0.5).
  EXPECT_EQ(train.doc_names.back(), "many.jsonl:2100");
  EXPECT_EQ(doc_tokens(train, train.doc_offsets.size() - 2), bytes_then_eos("line 2099"));
  EXPECT_EQ(val.doc_names.back(), "many.jsonl:2099");
  EXPECT_EQ(doc_tokens(val, val.doc_offsets.size() - 2), bytes_then_eos("line 2098"));
  EXPECT_EQ(train.n_documents(), 1052);
}

TEST(Prepare, ReadsTheBundledCorpus) {
  const std::string corpus = std::string(TSTL_SOURCE_DIR) + "/data/corpus";
  const auto files = expand_inputs({corpus + "/sotu", corpus + "/moby-dick.txt.gz"});
  ASSERT_EQ(files.size(), 234u);
  EXPECT_EQ(files.front().name, "1790_george_washington_n.txt");
  EXPECT_EQ(files.back().name, "moby-dick.txt");
  EXPECT_GT(read_file_text(files.back().path).size(), 1000000u);
  ScratchDir dir;
  const auto r = run_tstl("prepare --input " + corpus + "/sotu --max-documents 3 --val-documents 1791_george_washington_n --output " +
                          (dir / "sotu.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const TokenFile file = TokenFile::open_file(dir / "sotu.h5");
  EXPECT_EQ(file.split("train").doc_names,
            (std::vector<std::string>{"1790_george_washington_n.txt", "1792_george_washington_n.txt"}));
  EXPECT_EQ(file.split("val").doc_names, (std::vector<std::string>{"1791_george_washington_n.txt"}));
}

}  // namespace
}  // namespace tstl
