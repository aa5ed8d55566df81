// The eval commands end to end through the `tstl` binary, on a checkpoint of a zero model (all
// logits equal: NLL = log V, uniform attention) written with save_checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli_test_util.h"
#include "layers/decoder.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_config.h"
#include "eval/report.h"

namespace fs = std::filesystem;

namespace tstl {
namespace {

using test::run_tstl;

JsonValue read_json(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return parse_json(s.str(), p.string());
}

class EvalCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    char buf[] = "/tmp/tstl_eval_cmd_XXXXXX";
    dir_ = mkdtemp(buf);
    Config cfg;
    for (const auto& [k, v] : std::vector<std::pair<const char*, const char*>>{
             {"model.variant", "rope"}, {"model.layers", "1"}, {"model.hidden", "12"}, {"model.heads", "3"},
             {"model.ffn", "20"}, {"model.vocab_size", "259"}, {"model.train_len", "8"}, {"data.tokenizer", "byte"}})
      cfg.set(k, v, "test");
    Decoder model(model_config_from(cfg));  // parameters zero
    CheckpointState state;
    state.parameters = model.named_parameters();
    state.config = cfg.dump();
    state.tokenizer = "byte:259";
    state.step = 5;
    checkpoint_ = (dir_ / "run" / "checkpoints" / "step_00000005.h5").string();
    fs::create_directories(dir_ / "run" / "checkpoints");
    fs::create_directories(dir_ / "run" / "eval");
    save_checkpoint(checkpoint_, state);
    fs::create_directories(dir_ / "text");
    std::ofstream(dir_ / "text" / "a.txt") << "Call me Ishmael. Some years ago, never mind how long precisely.";  // 63 bytes
    std::ofstream(dir_ / "text" / "b.txt") << "Short.";                                                               // 6 bytes
    const auto prep = run_tstl("prepare --input " + (dir_ / "text").string() + " --output " +
                               (dir_ / "tokens.h5").string() + " --val-fraction 0");
    ASSERT_EQ(prep.exit_code, 0) << prep.output;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::string checkpoint_;
};

TEST_F(EvalCommands, PplPasskeyGenerateAttentionReport) {
  const std::string ck = " --checkpoint " + checkpoint_;
  const fs::path ppl = dir_ / "run" / "eval" / "ppl.json";
  auto r = run_tstl("eval ppl" + ck + " --data " + (dir_ / "tokens.h5").string() +
                    " --split train --lengths 8,13,100 --stride 5 --by-position --json " + ppl.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const JsonValue j = read_json(ppl);
  EXPECT_EQ(j.get_string("variant"), "rope");
  EXPECT_EQ(j.get_number("train_len"), 8);
  EXPECT_EQ(j.get_string("device"), "cpu");  // the default placement
  EXPECT_EQ(j.get_string("dtype"), "f32");
  ASSERT_EQ(j.get_array("results").array.size(), 3u);
  for (const JsonValue& res : j.get_array("results").array) {
    EXPECT_EQ(res.get_number("tokens"), (63 + 1 - 1) + (6 + 1 - 1));  // EOS included, first token unscored
    EXPECT_NEAR(res.get_number("nll"), std::log(259.0), 1e-6);
    EXPECT_EQ(res.get_array("position_loss").array.size(), static_cast<size_t>(res.get_number("length")));
  }
  // Offsets cut documents: 63 + EOS - 10 = 54 tokens of a, b dropped (7 tokens <= 10).
  r = run_tstl("eval ppl" + ck + " --data " + (dir_ / "tokens.h5").string() +
               " --split train --lengths 16 --doc-offset 10 --max-doc-tokens 30 --json " + (dir_ / "cut.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_json(dir_ / "cut.json").get_array("results").array[0].get_number("tokens"), 29);

  r = run_tstl("eval ppl" + ck + " --data " + (dir_ / "tokens.h5").string() +
               " --split train --lengths 8 --scaling ntk-alibi:2 --json " + (dir_ / "x.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("applies to alibi, but the checkpoint's variant is rope"), std::string::npos) << r.output;

  const fs::path passkey = dir_ / "run" / "eval" / "passkey.json";
  r = run_tstl("eval passkey" + ck + " --lengths 250 --cases 2 --scaling dynamic-ntk:2 --json " + passkey.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const JsonValue p = read_json(passkey);
  EXPECT_EQ(p.get_string("method"), "dynamic-ntk:2");
  EXPECT_EQ(p.get_array("results").array[0].get_number("accuracy"), 0.0);  // id 0 forever: no digits

  r = run_tstl("generate" + ck + " --prompt Hello --max-tokens 3 --temperature 0.7 --top-k 5 --seed 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Hello", 0), 0u) << r.output;

  std::ofstream(dir_ / "in.txt") << "abcdefgh";
  r = run_tstl("eval attention" + ck + " --text " + (dir_ / "in.txt").string() + " --layers 0 --max-tokens 5 --json " +
               (dir_ / "att.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const JsonValue a = read_json(dir_ / "att.json");
  EXPECT_EQ(a.get_number("step"), 5);  // the model fields of eval ppl and eval passkey
  EXPECT_EQ(a.get_string("scaling_method"), "none");
  EXPECT_EQ(a.get_string("method"), j.get_string("method"));
  const JsonValue& probs = a.get_array("layers").array[0].get_array("probabilities");
  ASSERT_EQ(probs.array.size(), 3u);               // heads
  ASSERT_EQ(probs.array[0].array.size(), 5u);      // queries
  EXPECT_NEAR(probs.array[2].array[2].array[1].number, 1.0 / 3.0, 1e-7);  // q = k = 0: uniform over 3 keys
  EXPECT_EQ(probs.array[2].array[2].array[3].number, 0.0);                 // masked
  EXPECT_EQ(a.get_array("layers").array[0].get_array("scores").array[0].array[0].array[1].type,
            JsonValue::Type::Null);  // -inf
  r = run_tstl("eval attention" + ck + " --text " + (dir_ / "in.txt").string() + " --layers 0,1 --h5 " +
               (dir_ / "att.h5").string());
  EXPECT_EQ(r.exit_code, 1);  // layer 1 does not exist
  r = run_tstl("eval attention" + ck + " --text " + (dir_ / "in.txt").string() + " --layers 0 --h5 " +
               (dir_ / "att.h5").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir_ / "att.h5"));

  r = run_tstl("report " + (dir_ / "run").string() + " --output " + (dir_ / "report").string() +
               " --python /nonexistent");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| run | rope | none | 8 | 259.00 | *259.00* | *259.00* |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| run | rope | dynamic-ntk:2 | 8 | *0.00* |"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("plots skipped"), std::string::npos);
}

// --device and --dtype on every command that runs a model: the CPU in f32 explicitly gives what
// the defaults give; a value that is not one of the accepted ones, bf16 on the CPU, and cuda
// where this build or machine has none fail naming the flag. (tests/gpu/test_gpu_eval.cpp runs
// the same commands' code on a device.)
TEST_F(EvalCommands, DeviceAndDtypeFlags) {
  const std::string ck = " --checkpoint " + checkpoint_;
  const std::string ppl = "eval ppl" + ck + " --data " + (dir_ / "tokens.h5").string() + " --split train --lengths 8";
  auto r = run_tstl(ppl + " --device cpu --dtype f32 --json " + (dir_ / "cpu.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const JsonValue j = read_json(dir_ / "cpu.json");
  EXPECT_EQ(j.get_string("device"), "cpu");
  EXPECT_EQ(j.get_string("dtype"), "f32");
  EXPECT_NEAR(j.get_array("results").array[0].get_number("nll"), std::log(259.0), 1e-6);
  r = run_tstl("generate" + ck + " --prompt Hello --max-tokens 3 --temperature 0 --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("Hello", 0), 0u) << r.output;

  const std::string out = " --json " + (dir_ / "x.json").string();
  const std::vector<std::string> commands = {
      ppl + out, "eval passkey" + ck + " --lengths 250 --cases 1" + out,
      "eval attention" + ck + " --text " + (dir_ / "text" / "a.txt").string() + " --layers 0" + out,
      "generate" + ck + " --prompt Hi --max-tokens 2"};
  for (const std::string& command : commands) {  // every command takes the flags
    r = run_tstl(command + " --device tpu");
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.output.find("--device 'tpu': expected cpu or cuda"), std::string::npos) << r.output;
  }
  for (const std::string& command : {commands[0], commands[3]}) {  // one code path behind them: two suffice
    r = run_tstl(command + " --dtype f16");
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.output.find("--dtype 'f16': expected f32 or bf16"), std::string::npos) << r.output;
    r = run_tstl(command + " --device cpu --dtype bf16");
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.output.find("--dtype bf16 needs --device cuda"), std::string::npos) << r.output;
    if (!cuda_available()) {
      r = run_tstl(command + " --device cuda");
      EXPECT_EQ(r.exit_code, 1) << command;
      EXPECT_NE(r.output.find(cuda_compiled() ? "--device cuda: no CUDA device is present"
                                              : "--device cuda: this tstl was built without the CUDA backend"),
                std::string::npos)
          << r.output;
    }
  }
}

// Inputs a new user might try that must fail with a message saying what is wrong.
TEST_F(EvalCommands, BadInputsFailClearly) {
  const std::string ck = " --checkpoint " + checkpoint_;
  const std::string data = " --data " + (dir_ / "tokens.h5").string() + " --split train";
  auto r = run_tstl("eval ppl" + ck + data + " --lengths 8 --stride 0 --json " + (dir_ / "s.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--stride must be >= 1, got 0"), std::string::npos) << r.output;

  // A length whose buffers cannot exist on any machine (10^15 tokens): the message names it.
#if defined(__SANITIZE_ADDRESS__)
  std::printf("skipping the out-of-memory case: AddressSanitizer aborts instead of throwing std::bad_alloc\n");
#else
  r = run_tstl("eval ppl" + ck + data + " --lengths 8,1000000000000000 --json " + (dir_ / "big.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("length 1000000000000000: out of memory"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("GiB"), std::string::npos) << r.output;
  r = run_tstl("eval passkey" + ck + " --lengths 250,1000000000000000 --cases 1 --json " + (dir_ / "big.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("length 1000000000000000: out of memory"), std::string::npos) << r.output;
#endif

  // Weights holding NaN (and another holding infinity): every command that loads them names the first.
  CheckpointState state = load_checkpoint(checkpoint_, /*with_optimizer=*/false);
  for (auto& [name, t] : state.parameters) {
    if (name == "gpt_neox.layers.0.mlp.dense_h_to_4h.weight") t.data<float>()[7] = NAN;
    if (name == "embed_out.weight") t.data<float>()[0] = INFINITY;
  }
  const std::string bad = (dir_ / "nan.h5").string();
  save_checkpoint(bad, state);
  for (const std::string& command :
       {"eval ppl --checkpoint " + bad + data + " --lengths 8 --json " + (dir_ / "n.json").string(),
        "eval passkey --checkpoint " + bad + " --lengths 250 --cases 1 --json " + (dir_ / "n.json").string(),
        "generate --checkpoint " + bad + " --prompt Hi --max-tokens 2"}) {
    r = run_tstl(command);
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.output.find("parameter gpt_neox.layers.0.mlp.dense_h_to_4h.weight holds a non-finite value (nan at element 7"),
              std::string::npos)
        << r.output;
  }
}

}  // namespace
}  // namespace tstl
