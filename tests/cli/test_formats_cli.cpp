// The standard formats through the `tstl` binary: `prepare --format megatron|tokens`, training
// and evaluating on external ids (text commands refuse them without a tokenizer and work with
// one), and `export hf` (files written, other variants refused with the reason).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/cli_test_util.h"
#include "common/megatron_writer.h"
#include "data/token_file.h"

namespace tstl {
namespace {

using test::run_tstl;
using test::ScratchDir;

const std::string kSource = TSTL_SOURCE_DIR;

// Byte ids of a text with EOS 257 after it, as a Megatron document of one sequence.
test::Doc byte_document(const std::string& text) {
  std::vector<int64_t> ids(text.begin(), text.end());
  for (int64_t& id : ids) id &= 0xFF;
  ids.push_back(257);
  return {ids};
}

// Twenty short documents of English bytes in a Megatron dataset with uint16 ids.
std::string english_megatron(const ScratchDir& dir) {
  std::vector<test::Doc> docs;
  const std::string text = test::sample_english();
  for (size_t i = 0; i < 20; ++i) docs.push_back(byte_document(text.substr(i * 150, 300)));
  const auto r = test::write_megatron_dataset(dir / "corpus_text_document", 8, docs);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir / "corpus_text_document";
}

TEST(FormatsCli, MegatronDataTrainsAndTextCommandsNeedATokenizer) {
  if (!test::have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test dataset";
  ScratchDir dir;
  const std::string prefix = english_megatron(dir);
  auto r = run_tstl("prepare --format megatron --input " + prefix + " --tokenizer external:bytes --eos-id 257 --output " +
                    (dir / "d.h5"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--vocab-size"), std::string::npos) << r.output;
  r = run_tstl("prepare --format megatron --input " + prefix + " --tokenizer external:bytes --vocab-size 300 --eos-id 257"
               " --val-fraction 0.2 --output " + (dir / "d.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("tokenizer external:bytes"), std::string::npos) << r.output;
  const TokenFile file = TokenFile::open_file(dir / "d.h5");
  EXPECT_EQ(file.vocab_size(), 300);
  EXPECT_EQ(file.split("train").n_documents(), 16);
  EXPECT_EQ(file.split("val").n_documents(), 4);

  const std::string run = dir / "run";
  r = run_tstl("train --config " + kSource + "/configs/tiny.cfg --data.path " + (dir / "d.h5") +
               " --data.tokenizer external:bytes --model.vocab_size 0 --train.out_dir " + run +
               " --train.max_steps 2 --train.eval_every 0 --train.eval_batches 1 --train.threads 2 --train.peak_flops 1e11");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ckpt = run + "/checkpoints/step_00000002.h5";
  r = run_tstl("eval ppl --checkpoint " + ckpt + " --data " + (dir / "d.h5") + " --lengths 32 --json " + (dir / "ppl.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_tstl("generate --checkpoint " + ckpt + " --prompt Fellow --max-tokens 4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("tokenizer 'external:bytes' has no text form"), std::string::npos) << r.output;
  r = run_tstl("eval passkey --checkpoint " + ckpt + " --lengths 256 --cases 1 --json " + (dir / "pk.json"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("has no text form"), std::string::npos) << r.output;
  // The ids are bytes: the byte tokenizer (259 ids, within the model's 300) is their text form.
  r = run_tstl("generate --checkpoint " + ckpt + " --tokenizer byte --prompt Fellow --max-tokens 4 --temperature 0");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Fellow", 0), 0u) << r.output;
  r = run_tstl("eval passkey --checkpoint " + ckpt + " --tokenizer byte --lengths 256 --cases 1 --json " + (dir / "pk.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(FormatsCli, FlatTokensFromNpy) {
  if (!test::have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is needed to write the test stream";
  ScratchDir dir;
  auto r = test::run_shell("/usr/bin/python3 -c \"import numpy as np; np.save('" + (dir / "s.npy") +
                           "', np.array([5, 6, 0, 7, 0, 8, 9, 0, 1], dtype=np.uint32))\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_tstl("prepare --format tokens --input " + (dir / "s.npy") + " --tokenizer external:t --vocab-size 10 --eos-id 0"
               " --val-fraction 0 --output " + (dir / "s.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const TokenSplit train = TokenFile::open_file(dir / "s.h5").split("train");
  EXPECT_EQ(train.tokens, (std::vector<int32_t>{5, 6, 0, 7, 0, 8, 9, 0, 1, 0}));
  r = run_tstl("prepare --format tokens --input " + (dir / "s.npy") + " --tokenizer external:t --vocab-size 10 --eos-id 0"
               " --input-dtype uint32 --output " + (dir / "x.h5"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--input-dtype"), std::string::npos) << r.output;
  r = run_tstl("prepare --format parquet --input " + (dir / "s.npy") + " --output " + (dir / "x.h5"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--format 'parquet' is not text, megatron or tokens"), std::string::npos) << r.output;
}

TEST(FormatsCli, ExportHfWritesTheModelOrRefusesTheVariant) {
  ScratchDir dir;
  auto r = run_tstl("prepare --input " + kSource + "/data/corpus/sotu --max-documents 3 --tokenizer byte --val-fraction 0.34"
                    " --output " + (dir / "d.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string variant : {"rope", "alibi"}) {
    r = run_tstl("train --config " + kSource + "/configs/tiny.cfg --data.path " + (dir / "d.h5") + " --model.variant " +
                 variant + " --train.out_dir " + (dir / variant) + " --train.max_steps 1 --train.eval_every 0"
                 " --train.eval_batches 1 --train.threads 2 --train.peak_flops 1e11");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  r = run_tstl("export hf --checkpoint " + (dir / "rope/checkpoints/step_00000001.h5") + " --output " + (dir / "hf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "hf/config.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "hf/tokenizer.model"));  // the byte tokenizer has no file
  r = run_tstl("export hf --checkpoint " + (dir / "alibi/checkpoints/step_00000001.h5") + " --output " + (dir / "hf2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("model.variant = alibi cannot be exported"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "hf2/model.safetensors"));
  r = run_tstl("export onnx --checkpoint x --output y");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown export format 'onnx'"), std::string::npos) << r.output;
}

// A SentencePiece run: the export carries the model file (byte for byte) and its special ids;
// a --tokenizer that is not the checkpoint's is refused naming both identities.
TEST(FormatsCli, ExportHfCopiesTheSentencePieceModel) {
  ScratchDir dir;
  test::write_file(dir / "text.txt", test::sample_english());
  auto r = run_tstl("tokenizer train --input " + (dir / "text.txt") + " --vocab-size 300 --output " + (dir / "tok.model"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_tstl("prepare --input " + (dir / "text.txt") + " " + kSource + "/data/corpus/sotu/1790_george_washington_n.txt.gz"
               " --tokenizer spm:" + (dir / "tok.model") + " --val-fraction 0.5 --output " + (dir / "d.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_tstl("train --config " + kSource + "/configs/tiny.cfg --data.path " + (dir / "d.h5") + " --data.tokenizer " +
               (dir / "tok.model") + " --model.vocab_size 0 --train.out_dir " + (dir / "run") +
               " --train.max_steps 1 --train.eval_every 0 --train.eval_batches 1 --train.threads 2 --train.peak_flops 1e11");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ckpt = dir / "run/checkpoints/step_00000001.h5";
  r = run_tstl("export hf --checkpoint " + ckpt + " --output " + (dir / "hf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  EXPECT_EQ(bytes(dir / "hf/tokenizer.model"), bytes(dir / "tok.model"));
  const std::string config = bytes(dir / "hf/config.json");
  EXPECT_NE(config.find("\"eos_token_id\": 2,"), std::string::npos) << config;  // unk 0, bos 1, eos 2, pad 3
  EXPECT_NE(config.find("\"bos_token_id\": 1,"), std::string::npos) << config;
  EXPECT_NE(config.find("\"vocab_size\": 300,"), std::string::npos) << config;
  r = run_tstl("generate --checkpoint " + ckpt + " --tokenizer byte --prompt The --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("but --tokenizer 'byte' is byte:259"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tstl
