// The training loop end to end through the `tstl` binary: exact resume after SIGTERM (also in the
// middle of a gradient accumulation and during an evaluation) and after Ctrl-C before the first
// checkpoint, the same bits at 1, 2 and 3 threads, accumulation equals the big batch, clear
// errors on bad configs and mismatched resumes, a non-finite gradient named in the error, and
// init_from's weights with fresh moments.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/cli_test_util.h"
#include "common/sotu_fixture.h"
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
using test::metric_field;
using test::metric_lines;

const std::string kSource = TSTL_SOURCE_DIR;

const std::string& corpus_file() { return test::sotu_24_byte_file(); }  // common/sotu_fixture.h

// The small config's architecture with shorter batches, so a 40-step run takes seconds.
std::string small_args(const std::string& out_dir) {
  return "train --config " + kSource + "/configs/small.cfg --data.path " + corpus_file() + " --train.out_dir " + out_dir +
         " --train.max_steps 40 --train.batch_size 1 --train.seq_len 32 --train.grad_accum 4 --train.log_every 1"
         " --train.eval_every 20 --train.eval_batches 2 --train.save_every 1000 --train.threads 2"
         " --train.peak_flops 1e11 --optim.warmup_steps 4";
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

// Starts `tstl ARGS` in the background, sends `signal` once metrics.jsonl has `lines` lines, and
// returns the exit code and output.
RunResult run_and_terminate(const std::string& args, const std::string& run_dir, size_t lines, int signal = SIGTERM) {
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
  kill(pid, signal);
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

// Ctrl-C (SIGINT), as the README says, right after the first step: no checkpoint exists yet
// (save_every 1000), so the stop writes the first one, and the same command resumes from it to
// the losses and weights of an uninterrupted run.
TEST(Trainer, CtrlCBeforeTheFirstCheckpointSavesOneAndResumesExactly) {
  ScratchDir dir;
  const std::string straight = dir / "straight", run = dir / "interrupted";
  ASSERT_EQ(run_tstl(small_args(straight) + " --train.max_steps 4").exit_code, 0);
  const RunResult stopped = run_and_terminate(small_args(run) + " --train.max_steps 4", run, 1, SIGINT);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.output;
  EXPECT_NE(stopped.output.find("stopped by signal 2"), std::string::npos) << stopped.output;
  const auto saved = CheckpointDir(run + "/checkpoints").list();
  ASSERT_EQ(saved.size(), 1u) << stopped.output;
  EXPECT_LT(saved[0], 4) << "the stop came after the run had finished";
  const RunResult resumed = run_tstl(small_args(run) + " --train.max_steps 4");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  EXPECT_EQ(losses(run), losses(straight));
  expect_same_parameters(straight + "/checkpoints/step_00000004.h5", run + "/checkpoints/step_00000004.h5");
}

// A stop request that arrives while the validation loss is being computed: the evaluation
// finishes, the step is logged with its validation loss, the checkpoint is written, and the
// same command resumes to exactly the losses and validation losses of an uninterrupted run. The
// trainer announces each evaluation on stdout before starting it; SIGTERM is sent when that
// announcement is the log's last line (the step's own line, printed after the evaluation, not
// yet there). A 200-window evaluation after every step leaves time for it; when an evaluation
// ends before the signal could be sent, the next step's is used.
TEST(Trainer, SignalDuringEvaluationFinishesItSavesAndResumesExactly) {
  ScratchDir dir;
  const std::string args = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                           " --train.max_steps 6 --train.batch_size 1 --train.eval_every 1 --train.eval_batches 200"
                           " --train.save_every 1000 --train.threads 1 --train.peak_flops 1e11";
  const std::string straight = dir / "straight", run = dir / "interrupted", log = dir / "interrupted.log";
  ASSERT_EQ(run_tstl(args + " --train.out_dir " + straight).exit_code, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + std::string(TSTL_BINARY) + " " + args + " --train.out_dir " + run + " > " + log + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // The last complete line of the log, and whether it announces an evaluation.
  auto last_line = [&] {
    std::ifstream in(log);
    std::string line, last;
    while (std::getline(in, line))
      if (!in.eof()) last = line;  // a line without its newline yet is not complete
    return last;
  };
  std::string announced;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string line = last_line();
    if (line.find(": validation loss over") != std::string::npos) {
      ASSERT_EQ(kill(pid, SIGTERM), 0);
      announced = line;
      break;
    }
    if (waitpid(pid, nullptr, WNOHANG) == pid) break;  // finished without a chance
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream in(log);
  std::stringstream output;
  output << in.rdbuf();
  ASSERT_FALSE(announced.empty()) << "no evaluation was caught in progress:\n" << output.str();
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output.str();
  const std::string step = announced.substr(5, announced.find(':') - 5);  // "step 3: validation ..."
  EXPECT_NE(output.str().find("stopped by signal 15 after step " + step + ";"), std::string::npos) << output.str();
  const std::vector<std::string> val = metric_field(run, "val_loss");
  ASSERT_EQ(std::to_string(val.size()), step) << output.str();
  for (size_t i = 0; i < val.size(); ++i) EXPECT_FALSE(val[i].empty()) << "step " << i + 1 << " logged no validation loss";
  EXPECT_EQ(CheckpointDir(run + "/checkpoints").list(), std::vector<int64_t>{static_cast<int64_t>(val.size())});
  const RunResult resumed = run_tstl(args + " --train.out_dir " + run);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(metric_field(run, "loss"), metric_field(straight, "loss"));
  EXPECT_EQ(metric_field(run, "val_loss"), metric_field(straight, "val_loss"));
}

// A run saved by the tstl of commit 842439a in checkpoint format version 1, in the middle of an
// accumulation (tests/train/fixtures/make_checkpoint_v1.sh, on the same token file as
// corpus_file()), resumes with the same command: step 4 adds the 47 remaining micro-batches to
// the 17 saved ones and logs the loss and gradient norm that tstl logged then (its log is in the
// script). Dropping the saved gradients or the saved loss would log about 47/64 of them.
TEST(Trainer, ResumesTheCommittedVersion1CheckpointMidAccumulation) {
  ScratchDir dir;
  const std::string run = dir / "run";
  std::filesystem::create_directories(run + "/checkpoints");
  std::filesystem::copy_file(kSource + "/tests/train/fixtures/checkpoint_v1.h5", run + "/checkpoints/step_00000003.h5");
  const RunResult r = run_tstl("train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                               " --train.out_dir " + run + " --model.layers 1 --model.hidden 16 --model.heads 2"
                               " --model.ffn 32 --train.batch_size 1 --train.grad_accum 64 --train.max_steps 5"
                               " --train.save_every 0 --train.eval_every 0 --train.threads 1 --train.seed 17"
                               " --train.peak_flops 1e11");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from " + run + "/checkpoints/step_00000003.h5: step 3 (+17 micro-batches)"),
            std::string::npos) << r.output;
  ASSERT_EQ(metric_field(run, "step"), (std::vector<std::string>{"4", "5"}));
  EXPECT_NEAR(std::stod(metric_field(run, "loss")[0]), 5.454525426030159, 1e-6);
  EXPECT_NEAR(std::stod(metric_field(run, "grad_norm")[0]), 1.525058056776339, 1e-6);
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

// The same config and seed give the same bits, and every CPU reduction has a fixed order
// (core/reduce.h, docs/training.md), so not even the thread count changes a bit: 20 steps of the
// small config's model (in short batches, so that the test takes seconds) at 1, 2 and 3 threads
// log the same losses, gradient norms and validation losses, and end with the same weights and
// AdamW moments. A second run puts 66,560 tokens in one step of the tiny config, so that the
// loss's sum over the tokens takes its threaded path too. Another seed gives another first loss.
TEST(Trainer, OneTwoAndThreeThreadsGiveTheSameLossesAndWeights) {
  ScratchDir dir;
  const std::string small = "train --config " + kSource + "/configs/small.cfg --data.path " + corpus_file() +
                            " --train.max_steps 20 --train.batch_size 2 --train.seq_len 32 --train.grad_accum 2"
                            " --train.log_every 1 --train.eval_every 10 --train.eval_batches 2 --train.save_every 1000"
                            " --train.peak_flops 1e11 --optim.warmup_steps 4";
  const std::string wide = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() +
                           " --train.max_steps 1 --train.batch_size 2080 --train.eval_every 0 --train.eval_batches 0 --train.save_every 1000"
                           " --train.peak_flops 1e11";
  for (const auto& [name, args, last] : {std::tuple<std::string, std::string, std::string>{"small", small, "step_00000020.h5"},
                                         {"wide", wide, "step_00000001.h5"}}) {
    auto run_dir = [&](int threads) { return dir / (name + std::to_string(threads)); };
    for (int threads : {1, 2, 3}) {
      const RunResult r = run_tstl(args + " --train.threads " + std::to_string(threads) + " --train.out_dir " + run_dir(threads));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      ASSERT_NE(r.output.find(std::to_string(threads) + " threads"), std::string::npos) << r.output;
    }
    ASSERT_EQ(losses(run_dir(1)).size(), name == "small" ? 20u : 1u);
    if (name == "small") {  // the seed matters: another one starts from other weights
      const RunResult other = run_tstl(args + " --train.max_steps 1 --train.seed 99 --train.out_dir " + dir / "seed99");
      ASSERT_EQ(other.exit_code, 0) << other.output;
      EXPECT_NE(losses(dir / "seed99")[0], losses(run_dir(1))[0]);  // the first loss is before any update
    }
    for (int threads : {2, 3}) {
      for (const char* key : {"loss", "grad_norm", "val_loss"})
        EXPECT_EQ(metric_field(run_dir(threads), key), metric_field(run_dir(1), key)) << name << ", " << key << ", " << threads << " threads";
      expect_same_parameters(run_dir(1) + "/checkpoints/" + last, run_dir(threads) + "/checkpoints/" + last);
    }
  }
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

// init_from starts a new run (step 0) from the file's weights with fresh AdamW moments. One step
// at a learning rate of 1e-30 leaves the weights where they were loaded (so they must equal the
// file's), and fresh moments after one step are m = (1 - beta1) g and v = (1 - beta2) g^2, so
// m^2 / v = (1 - beta1)^2 / (1 - beta2) = 0.2 in every element whatever g is; moments carried
// over from the file (m0, v0 nonzero) would break that ratio.
TEST(Trainer, InitFromStartsANewRunFromWeightsOnly) {
  ScratchDir dir;
  const std::string base = "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file();
  ASSERT_EQ(run_tstl(base + " --train.out_dir " + dir / "a" + " --train.max_steps 4").exit_code, 0);
  const std::string source = dir / "a/checkpoints/step_00000004.h5";
  const RunResult r = run_tstl(base + " --train.out_dir " + dir / "b" + " --train.max_steps 1 --train.init_from " + source +
                               " --optim.lr 1e-30 --optim.min_lr 1e-30 --optim.warmup_steps 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("init_from"), std::string::npos);
  EXPECT_EQ(losses(dir / "b").size(), 1u);
  const CheckpointState file = load_checkpoint(source), after = load_checkpoint(dir / "b/checkpoints/step_00000001.h5");
  EXPECT_EQ(after.step, 1);
  EXPECT_EQ(after.optimizer_step, 1);
  ASSERT_EQ(after.parameters.size(), file.parameters.size());
  size_t checked = 0;
  for (size_t i = 0; i < file.parameters.size(); ++i) {
    const std::string& name = file.parameters[i].first;
    ASSERT_EQ(after.parameters[i].first, name);
    const std::vector<float> want = file.parameters[i].second.to_vector<float>();
    const std::vector<float> got = after.parameters[i].second.to_vector<float>();
    for (size_t j = 0; j < want.size(); ++j) ASSERT_NEAR(got[j], want[j], 1e-20) << name << "[" << j << "]";
    std::vector<float> m, v;
    for (const auto& [moment, t] : after.optimizer) {
      if (moment == "exp_avg." + name) m = t.to_vector<float>();
      if (moment == "exp_avg_sq." + name) v = t.to_vector<float>();
    }
    ASSERT_EQ(m.size(), want.size()) << name;
    ASSERT_EQ(v.size(), want.size()) << name;
    for (size_t j = 0; j < m.size(); ++j) {
      if (v[j] < 1e-30f) continue;  // g ~ 0: the ratio is not measurable
      ASSERT_NEAR(static_cast<double>(m[j]) * m[j] / v[j], 0.2, 1e-4) << name << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 1000u);
}

}  // namespace
}  // namespace tstl
