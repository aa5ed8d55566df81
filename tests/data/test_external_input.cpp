// `tstl prepare --format megatron|tokens`: Megatron/GPT-NeoX indexed datasets and flat token
// streams written by numpy (an independent writer following the published layouts) come out as
// the same documents in the token file; malformed inputs are refused with the reason.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "data/megatron_input.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "common/cli_test_util.h"
#include "common/megatron_writer.h"

namespace tstl {
namespace {

using test::ScratchDir;
using test::write_file;
using test::Doc;
using test::have_numpy;

void write_megatron(const ScratchDir& dir, const std::string& prefix, int code, const std::vector<Doc>& docs,
                    bool modes = false) {
  const auto r = test::write_megatron_dataset(dir / prefix, code, docs, modes);
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

// Every document of the file, train and val interleaved back into input order by name.
std::vector<std::vector<int32_t>> documents_of(const std::string& path, const std::vector<std::string>& order) {
  const TokenFile file = TokenFile::open_file(path);
  std::vector<std::vector<int32_t>> out(order.size());
  for (const char* split_name : {"train", "val"}) {
    const TokenSplit s = file.split(split_name);
    for (int64_t d = 0; d < s.n_documents(); ++d) {
      const auto it = std::find(order.begin(), order.end(), s.doc_names[d]);
      EXPECT_NE(it, order.end()) << s.doc_names[d];
      if (it == order.end()) continue;
      out[it - order.begin()].assign(s.tokens.begin() + s.doc_offsets[d], s.tokens.begin() + s.doc_offsets[d + 1]);
    }
  }
  return out;
}

ExternalPrepareOptions megatron_options(const ScratchDir& dir, const std::string& prefix) {
  ExternalPrepareOptions o;
  o.format = "megatron";
  o.input = dir / prefix;
  o.output = dir / (prefix + ".h5");
  o.val_fraction = 0.25;
  return o;
}

TEST(MegatronInput, DocumentsOfSeveralSequencesAndTheirEosComeThrough) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test dataset";
  ScratchDir dir;
  // eos = 0 as in GPT-NeoX's tokenizer. Document 1 has no trailing EOS, document 2 is only an
  // EOS (skipped), document 3 spans three sequences (GPT-NeoX's sentence splitting).
  const std::vector<Doc> docs = {{{5, 6, 7, 0}}, {{9, 50276}}, {{0}}, {{11, 12}, {13}, {14, 15, 0}}, {{3, 0}}, {{4, 4, 0}}};
  write_megatron(dir, "pile_text_document", 8, docs);
  const auto tok = make_external_tokenizer("gpt-neox-20b", 50277, 0);
  const PrepareSummary s = prepare_external_tokens(megatron_options(dir, "pile_text_document"), *tok, nullptr);
  EXPECT_EQ(s.skipped_empty, 1);
  EXPECT_EQ(s.train.documents + s.val.documents, 5);
  EXPECT_EQ(s.val.documents, 1);  // floor(5 x 0.25): document index 3
  EXPECT_EQ(s.token_dtype, "uint16");
  const TokenFile file = TokenFile::open_file(dir / "pile_text_document.h5");
  EXPECT_EQ(file.tokenizer_identity(), "external:gpt-neox-20b");
  EXPECT_EQ(file.vocab_size(), 50277);
  EXPECT_EQ(file.eos_id(), 0);
  const std::vector<std::string> names = {"pile_text_document:0", "pile_text_document:1", "pile_text_document:3",
                                          "pile_text_document:4", "pile_text_document:5"};
  const std::vector<std::vector<int32_t>> expected = {{5, 6, 7, 0}, {9, 50276, 0}, {11, 12, 13, 14, 15, 0}, {3, 0}, {4, 4, 0}};
  EXPECT_EQ(documents_of(dir / "pile_text_document.h5", names), expected);
  EXPECT_EQ(file.split("val").doc_names, std::vector<std::string>{"pile_text_document:4"});
}

// Every integer dtype code of the format, signed ones included; ids above 65535 give uint32 tokens.
TEST(MegatronInput, EveryIntegerDtypeCode) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test dataset";
  for (int code : {1, 2, 3, 4, 5, 8}) {
    ScratchDir dir;
    const bool wide = code == 4 || code == 5;
    const int64_t big = wide ? 99999 : code == 1 ? 255 : code == 2 ? 127 : code == 3 ? 32767 : 65535;
    write_megatron(dir, "d", code, {{{1, big, 2}}, {{3, 2}, {big - 1}}}, /*modes=*/code == 5);
    auto options = megatron_options(dir, "d");
    options.val_fraction = 0;
    const auto tok = make_external_tokenizer("t", wide ? 100000 : big + 1, 2);
    const PrepareSummary s = prepare_external_tokens(options, *tok, nullptr);
    EXPECT_EQ(s.token_dtype, wide ? "uint32" : "uint16") << code;
    const std::vector<std::vector<int32_t>> expected = {{1, static_cast<int32_t>(big), 2}, {3, 2, static_cast<int32_t>(big - 1), 2}};  // an EOS inside a document stays
    EXPECT_EQ(documents_of(dir / "d.h5", {"d:0", "d:1"}), expected) << "dtype code " << code;
  }
}

void expect_error(const ExternalPrepareOptions& options, const Tokenizer& tok, const std::string& needle) {
  try {
    prepare_external_tokens(options, tok, nullptr);
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(options.output)) << "a failed conversion leaves no token file";
  EXPECT_FALSE(std::filesystem::exists(options.output + ".tmp"));
}

TEST(MegatronInput, MalformedIndexesAreRefusedWithTheReason) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test dataset";
  ScratchDir dir;
  const auto tok = make_external_tokenizer("t", 1000, 0);
  write_megatron(dir, "ok", 8, {{{1, 2, 0}}, {{3, 0}}});
  expect_error(megatron_options(dir, "missing"), *tok, "missing.idx' does not exist");
  // A token outside the vocabulary names its byte offset.
  expect_error(megatron_options(dir, "ok"), *make_external_tokenizer("t", 3, 0), "token id 3 at byte 6 is outside the vocabulary of 3");
  // A float dtype code.
  write_megatron(dir, "float", 7, {{{1, 2}}});
  expect_error(megatron_options(dir, "float"), *tok, "dtype code 7 is a floating-point type");
  // Wrong magic, wrong version, truncated arrays, a .bin shorter than the pointers say.
  std::ifstream in(dir / "ok.idx", std::ios::binary);
  const std::string idx((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::copy_file(dir / "ok.bin", dir / "bad.bin");
  write_file(dir / "bad.idx", "TNTIDX\0\0" + idx.substr(8));
  expect_error(megatron_options(dir, "bad"), *tok, "MMIDIDX magic");
  std::string v2 = idx;
  v2[9] = 2;
  write_file(dir / "bad.idx", v2);
  expect_error(megatron_options(dir, "bad"), *tok, "index version 2");
  write_file(dir / "bad.idx", idx.substr(0, idx.size() - 8));
  expect_error(megatron_options(dir, "bad"), *tok, "the index is truncated or corrupt");
  write_file(dir / "bad.idx", idx);
  write_file(dir / "bad.bin", "\x01\x00\x02\x00");
  expect_error(megatron_options(dir, "bad"), *tok, "runs past the end of the file");
}

ExternalPrepareOptions tokens_options(const ScratchDir& dir, const std::string& file) {
  ExternalPrepareOptions o;
  o.format = "tokens";
  o.input = dir / file;
  o.output = dir / (file + ".h5");
  o.val_fraction = 0;
  return o;
}

// A flat stream cut at EOS: .npy (np.save) of several dtypes, and raw uint16/uint32 (tofile).
TEST(FlatTokenInput, NpyAndRawStreamsSplitAtEos) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test stream";
  ScratchDir dir;
  write_file(dir / "writer.py", R"(import sys
import numpy as np
stream = [7, 8, 1, 1, 9, 1, 70000, 4, 5]
out = sys.argv[1]
for dt in ("<u2", "<u4", "<i4", "<i8", "|u1"):
    s = [t if t < 60000 or dt[1:] in ("u4", "i4", "i8") else 60000 for t in stream]
    np.save(out + "/s_" + dt[1:] + ".npy", np.array(s, dtype=np.dtype(dt)) if dt != "|u1" else np.array([t % 256 for t in s], dtype=np.uint8))
np.array([t if t < 60000 else 60000 for t in stream], dtype="<u2").tofile(out + "/s.u16")
np.array(stream, dtype="<u4").tofile(out + "/s.u32")
np.save(out + "/two_d.npy", np.zeros((2, 3), dtype=np.uint16))
np.save(out + "/f32.npy", np.zeros(3, dtype=np.float32))
)");
  const auto r = test::run_shell("/usr/bin/python3 " + (dir / "writer.py") + " " + dir.path.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto tok = make_external_tokenizer("t", 80000, 1);
  const std::vector<std::string> names = {"F:0", "F:2", "F:3"};
  auto expected = [](int32_t big) { return std::vector<std::vector<int32_t>>{{7, 8, 1}, {9, 1}, {big, 4, 5, 1}}; };
  auto named = [&](const std::string& file) {
    std::vector<std::string> n;
    for (const std::string& x : names) n.push_back(file + x.substr(1));
    return n;
  };
  for (const char* file : {"s_u2.npy", "s_u4.npy", "s_i4.npy", "s_i8.npy"}) {
    const int32_t big = std::string(file) == "s_u2.npy" ? 60000 : 70000;
    const PrepareSummary s = prepare_external_tokens(tokens_options(dir, file), *tok, nullptr);
    EXPECT_EQ(s.skipped_empty, 1) << file;  // the second EOS of "1, 1"
    EXPECT_EQ(documents_of(dir / (std::string(file) + ".h5"), named(file)), expected(big)) << file;
  }
  {
    const PrepareSummary s = prepare_external_tokens(tokens_options(dir, "s_u1.npy"), *tok, nullptr);
    EXPECT_EQ(documents_of(dir / "s_u1.npy.h5", named("s_u1.npy")), expected(60000 % 256));
    EXPECT_EQ(s.train.tokens, 9 + 1 - 1);  // the empty document dropped, the unterminated last one ended
  }
  auto raw = tokens_options(dir, "s.u32");
  raw.raw_dtype = "uint32";
  prepare_external_tokens(raw, *tok, nullptr);
  EXPECT_EQ(documents_of(dir / "s.u32.h5", named("s.u32")), expected(70000));
  raw = tokens_options(dir, "s.u16");
  prepare_external_tokens(raw, *tok, nullptr);
  EXPECT_EQ(documents_of(dir / "s.u16.h5", named("s.u16")), expected(60000));
  raw.max_documents = 2;
  raw.output = dir / "two.h5";
  prepare_external_tokens(raw, *tok, nullptr);
  EXPECT_EQ(TokenFile::open_file(dir / "two.h5").split("train").doc_names, (std::vector<std::string>{"s.u16:0", "s.u16:2"}));

  expect_error(tokens_options(dir, "two_d.npy"), *tok, "a token stream is 1-dimensional");
  expect_error(tokens_options(dir, "f32.npy"), *tok, "is not a little-endian integer type");
  write_file(dir / "odd.u16", "abc");
  expect_error(tokens_options(dir, "odd.u16"), *tok, "not a whole number of uint16 tokens");
  raw = tokens_options(dir, "s.u32");
  raw.raw_dtype = "uint32";
  raw.output = dir / "small_vocab.h5";
  expect_error(raw, *make_external_tokenizer("t", 100, 1), "token id 70000 at byte 24 is outside the vocabulary of 100");
}

TEST(ExternalTokenizer, KnowsItsIdsAndRefusesText) {
  const auto tok = make_external_tokenizer("gpt-neox-20b", 50277, 0);
  EXPECT_EQ(tok->identity(), "external:gpt-neox-20b");
  EXPECT_EQ(tok->vocab_size(), 50277);
  EXPECT_EQ(tok->eos_id(), 0);
  EXPECT_TRUE(is_external_tokenizer(tok->identity()));
  EXPECT_FALSE(is_external_tokenizer("byte:259"));
  try {
    tok->encode("hello");
    ADD_FAILURE() << "encode of an external tokenizer must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no text form"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hf:tokenizer.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok->decode({1, 2}), Error);
  EXPECT_THROW(make_external_tokenizer("", 10, 0), Error);
  EXPECT_THROW(make_external_tokenizer("x", 10, 10), Error);
  EXPECT_THROW(make_tokenizer("external:gpt-neox-20b"), Error);
}

}  // namespace
}  // namespace tstl
