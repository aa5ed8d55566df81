// The training loop end to end through the `tstl` binary: exact resume after SIGTERM (also in the
// middle of a gradient accumulation), accumulation equals the big batch, clear errors on bad
// configs and mismatched resumes, and a non-finite gradient named in the error.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/cli_test_util.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "data/sampler.h"
#include "data/tokenizer.h"
#include "data/token_file.h"
#include "layers/decoder.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace tstl {
namespace {

using test::run_tstl;
using test::RunResult;
using test::ScratchDir;

const std::string kSource = TSTL_SOURCE_DIR;

// A token file of a few addresses of the bundled corpus, made once per test binary.
const std::string& corpus_file() {
  static ScratchDir dir;
  static const std::string path = [] {
    const std::string out = dir / "sotu.h5";
    const RunResult r = run_tstl("prepare --input " + kSource + "/data/corpus/sotu --max-documents 24 --tokenizer byte"
                                 " --val-fraction 0.1 --output " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }();
  return path;
}

// The small config's architecture with shorter batches, so a 40-step run takes seconds.
std::string small_args(const std::string& out_dir) {
  return "train --config " + kSource + "/configs/small.cfg --data.path " + corpus_file() + " --train.out_dir " + out_dir +
         " --train.max_steps 40 --train.batch_size 1 --train.seq_len 32 --train.grad_accum 4 --train.log_every 1"
         " --train.eval_every 20 --train.eval_batches 2 --train.save_every 1000 --train.threads 2"
         " --train.peak_flops 1e11 --optim.warmup_steps 4";
}

std::vector<std::string> metric_lines(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The loss field of each metrics line, as its exact text (the shortest round-trip form).
std::vector<std::string> losses(const std::string& run_dir) {
  std::vector<std::string> out;
  for (const std::string& line : metric_lines(run_dir)) {
    const size_t at = line.find("\"loss\":");
    out.push_back(line.substr(at + 7, line.find(',', at) - at - 7));
  }
  return out;
}

void expect_same_parameters(const std::string& a, const std::string& b) {
  const CheckpointState x = load_checkpoint(a), y = load_checkpoint(b);
  ASSERT_EQ(x.parameters.size(), y.parameters.size());
  for (size_t i = 0; i < x.parameters.size(); ++i) {
    ASSERT_EQ(x.parameters[i].first, y.parameters[i].first);
    const Tensor& p = x.parameters[i].second;
    const Tensor& q = y.parameters[i].second;
    ASSERT_EQ(p.nbytes(), q.nbytes());
    EXPECT_EQ(0, std::memcmp(p.raw(), q.raw(), p.nbytes())) << "parameter " << x.parameters[i].first << " differs";
  }
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_EQ(0, std::memcmp(x.optimizer[i].second.raw(), y.optimizer[i].second.raw(), x.optimizer[i].second.nbytes()))
        << x.optimizer[i].first;
}

// Starts `tstl ARGS` in the background, sends SIGTERM once metrics.jsonl has `lines` lines, and
// returns the exit code and output.
RunResult run_and_terminate(const std::string& args, const std::string& run_dir, size_t lines) {
  const std::string log = run_dir + ".log";
  const std::string cmd = std::string(TSTL_BINARY) + " " + args + " > " + log + " 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (metric_lines(run_dir).size() < lines && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out.str()};
}

TEST(Trainer, ResumeAfterSigtermMatchesAnUninterruptedRunBitForBit) {
  ScratchDir dir;
  const std::string straight = dir / "straight";
  const RunResult r = run_tstl(small_args(straight));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::string> reference = losses(straight);
  ASSERT_EQ(reference.size(), 40u);

  // Interrupted runs: a SIGTERM lands in the middle of the 4-micro-batch accumulation (most of the
  // time) or during the last micro-batch (then the stop comes after the step); both must resume
  // exactly. Stops at a step boundary are also covered by StopAtSavesAndResumesExactly.
  bool saw_mid_accumulation = false;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string run = dir / ("interrupted" + std::to_string(attempt));
    const RunResult stopped = run_and_terminate(small_args(run), run, 12 + 2 * attempt);
    ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
    const bool mid = stopped.output.find("micro-batches; resume") != std::string::npos;
    saw_mid_accumulation |= mid;
    ASSERT_NE(stopped.output.find("stopped by signal 15"), std::string::npos) << stopped.output;
    const RunResult resumed = run_tstl(small_args(run));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
    EXPECT_EQ(losses(run), reference) << "attempt " << attempt << (mid ? " (mid accumulation)" : "");
    expect_same_parameters(straight + "/checkpoints/step_00000040.h5", run + "/checkpoints/step_00000040.h5");
  }
  EXPECT_TRUE(saw_mid_accumulation);
}

TEST(Trainer, StopAtSavesAndResumesExactly) {
  ScratchDir dir;
  const std::string straight = dir / "straight", split = dir / "split";
  ASSERT_EQ(run_tstl(small_args(straight) + " --train.max_steps 12").exit_code, 0);
  const RunResult first = run_tstl(small_args(split) + " --train.max_steps 12 --train.stop_at 5");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("stopped at train.stop_at = 5"), std::string::npos) << first.output;
  EXPECT_EQ(losses(split).size(), 5u);
  ASSERT_EQ(run_tstl(small_args(split) + " --train.max_steps 12").exit_code, 0);
  EXPECT_EQ(losses(split), losses(straight));
  expect_same_parameters(straight + "/checkpoints/step_00000012.h5", split + "/checkpoints/step_00000012.h5");
}

TEST(Trainer, SameConfigAndSeedGiveBitwiseIdenticalLosses) {
  ScratchDir dir;
  ASSERT_EQ(run_tstl(small_args(dir / "a") + " --train.max_steps 6").exit_code, 0);
  ASSERT_EQ(run_tstl(small_args(dir / "b") + " --train.max_steps 6").exit_code, 0);
  EXPECT_EQ(losses(dir / "a"), losses(dir / "b"));
  ASSERT_EQ(run_tstl(small_args(dir / "c") + " --train.max_steps 6 --train.seed 99").exit_code, 0);
  EXPECT_NE(losses(dir / "a"), losses(dir / "c"));
}

TEST(Trainer, AccumulationOfFourBatchesOfTwoEqualsOneBatchOfEight) {
  const TokenFile file = TokenFile::open_file(corpus_file());
  const TokenSplit split = file.split("train");
  const TrainSampler sampler(split, 33, 5);
  ModelConfig config;
  config.layers = 2, config.hidden = 16, config.heads = 2, config.ffn = 24, config.train_len = 32;
  Decoder accumulated(config, DType::F64), whole(config, DType::F64);
  accumulated.initialize(3);
  whole.initialize(3);
  const double loss4 = accumulate_gradients(accumulated, sampler, 2, 2, 4);
  const double loss1 = accumulate_gradients(whole, sampler, 2, 8, 1);
  EXPECT_NEAR(loss4, loss1, 1e-12);
  for (size_t i = 0; i < whole.named_parameters().size(); ++i) {
    const auto a = accumulated.named_parameters()[i].second.grad().to_vector<double>();
    const auto b = whole.named_parameters()[i].second.grad().to_vector<double>();
    for (size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-12 * (1 + std::fabs(b[j])));
  }
}

TEST(Trainer, BadConfigsFailNamingTheProblem) {
  ScratchDir dir;
  const std::string base = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                           " --train.out_dir " + dir / "run";
  RunResult r = run_tstl(base + " --train.max_stepz 5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("train.max_stepz"), std::string::npos) << r.output;
  r = run_tstl(base + " --train.max_steps five");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("five"), std::string::npos) << r.output;
  r = run_tstl(base + " --data.path " + dir / "missing.h5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing.h5"), std::string::npos) << r.output;
  if (!cuda_available()) {
    r = run_tstl(base + " --train.device cuda");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.output.find("train.device = cuda"), std::string::npos) << r.output;
  }
  test::write_file(dir / "typo.cfg", "[model]\nlayrs = 2\n");
  r = run_tstl("train --config " + dir / "typo.cfg");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("layrs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("typo.cfg"), std::string::npos) << r.output;
}

TEST(Trainer, ResumeWithAnotherModelShapeIsRefusedNamingTheKeys) {
  ScratchDir dir;
  const std::string base = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                           " --train.out_dir " + dir / "run" + " --train.max_steps 4";
  ASSERT_EQ(run_tstl(base).exit_code, 0);
  RunResult r = run_tstl(base + " --train.max_steps 8 --model.hidden 48 --model.variant alibi");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model.hidden"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model.variant"), std::string::npos) << r.output;
  r = run_tstl(base + " --train.max_steps 8 --optim.lr 1e-3");  // schedule changes are allowed and logged
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("optim.lr changed"), std::string::npos) << r.output;
  r = run_tstl(base + " --train.resume never");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("already holds checkpoints"), std::string::npos) << r.output;
  r = run_tstl(base + " --train.out_dir " + dir / "empty" + " --train.resume must");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no complete checkpoint"), std::string::npos) << r.output;
}

TEST(Trainer, NonFiniteGradientStopsNamingTheStepAndParameterOrIsSkipped) {
  ScratchDir dir;
  const std::string base = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                           " --train.out_dir " + dir / "run" + " --train.max_steps 3 --optim.lr 1e300 --optim.clip 0"
                           " --optim.warmup_steps 0";
  RunResult r = run_tstl(base);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("at step 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("first parameter with a non-finite gradient: "), std::string::npos) << r.output;
  r = run_tstl(base + " --train.out_dir " + dir / "skip" + " --train.skip_nonfinite true");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("skipping step"), std::string::npos) << r.output;
}

TEST(Trainer, InitFromStartsANewRunFromWeightsOnly) {
  ScratchDir dir;
  const std::string base = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file();
  ASSERT_EQ(run_tstl(base + " --train.out_dir " + dir / "a" + " --train.max_steps 4").exit_code, 0);
  const RunResult r = run_tstl(base + " --train.out_dir " + dir / "b" + " --train.max_steps 2 --train.init_from " +
                               dir / "a/checkpoints/step_00000004.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("init_from"), std::string::npos);
  EXPECT_EQ(losses(dir / "b").size(), 2u);
}

}  // namespace
}  // namespace tstl
