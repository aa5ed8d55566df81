// Data-parallel training end to end: `mpirun -np N tstl train` (oversubscribed, one thread per
// rank) against one process with gradient accumulation, ZeRO-1 against plain data parallel,
// resume at other world sizes, a killed rank, a hung rank and SIGTERM to one rank.
//
// Tolerance: DP = N with micro-batch b sums the same per-sample gradients as DP = 1 with
// grad_accum N, in another fp32 order. Losses (training, validation) must agree to a relative
// kLossTol; parameters and AdamW moments to kStateTol times their tensor's largest magnitude
// (Adam divides by sqrt(v), which magnifies rounding differences in elements whose gradients are
// near zero). Measured on the CPU with OpenMPI 4.1 (docs/distributed.md): training losses bit for
// bit at 2 and 3 ranks, the validation loss (split over the ranks) within 4e-8, losses after a
// resume at another world size within 2e-8, state within 1.3e-5. A fixed world size and a resume
// at the same world size are compared bit for bit.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "common/cli_test_util.h"
#include "train/checkpoint.h"

namespace tstl {
namespace {

namespace fs = std::filesystem;
using test::RunResult;
using test::ScratchDir;

const std::string kSource = TSTL_SOURCE_DIR;
constexpr double kLossTol = 1e-5, kStateTol = 1e-4;
const std::string kMpirun =
    "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 mpirun --oversubscribe";

const std::string& corpus_file() {
  static ScratchDir dir;
  static const std::string path = [] {
    const std::string out = dir / "sotu.h5";
    const RunResult r = test::run_tstl("prepare --input " + kSource + "/data/corpus/sotu --max-documents 24 --tokenizer byte"
                                       " --val-fraction 0.1 --output " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }();
  return path;
}

// The tiny config: 20 steps of a global batch of 24 windows, one thread per rank.
std::string train_args(const std::string& out_dir, int64_t grad_accum, const std::string& extra = "") {
  return "train --config " + kSource + "/configs/tiny.cfg --data.path " + corpus_file() + " --train.out_dir " + out_dir +
         " --train.max_steps 20 --train.batch_size 4 --train.grad_accum " + std::to_string(grad_accum) +
         " --train.threads 1 --train.eval_every 10 --train.save_every 10 --train.keep_last 0"
         " --train.peak_flops 1e11 --train.comm_timeout_s 60 " + extra;
}

RunResult run_ranks(int ranks, const std::string& args) {
  if (ranks == 1) return test::run_tstl(args);
  return test::run_shell(kMpirun + " -np " + std::to_string(ranks) + " " + TSTL_BINARY + " " + args);
}

std::vector<std::map<std::string, double>> metrics(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<std::map<std::string, double>> rows;
  for (std::string line; std::getline(in, line);) {
    std::map<std::string, double> row;
    for (const char* key : {"step", "tokens", "loss", "grad_norm", "val_loss"}) {
      const std::string quoted = std::string("\"") + key + "\":";
      const size_t at = line.find(quoted);
      if (at != std::string::npos) row[key] = std::stod(line.substr(at + quoted.size()));
    }
    rows.push_back(row);
  }
  return rows;
}

std::string latest_checkpoint(const std::string& run_dir) {
  const auto latest = CheckpointDir(run_dir + "/checkpoints").latest();
  return latest ? latest->path : "";
}

void expect_same_metrics(const std::string& a, const std::string& b, double rel_tol, size_t from = 0) {
  const auto x = metrics(a), y = metrics(b);
  ASSERT_EQ(x.size(), y.size()) << a << " vs " << b;
  for (size_t i = from; i < x.size(); ++i) {
    for (const auto& [key, value] : x[i]) {
      ASSERT_TRUE(y[i].count(key)) << key << " at line " << i + 1 << " of " << b;
      if (rel_tol == 0) {
        EXPECT_EQ(value, y[i].at(key)) << key << " at step " << x[i].at("step");
      } else {
        EXPECT_NEAR(value, y[i].at(key), rel_tol * std::fabs(value)) << key << " at step " << x[i].at("step");
      }
    }
  }
}

// Parameters and AdamW moments of two checkpoints: bitwise (rel_tol 0), or no element further
// apart than rel_tol times its tensor's largest magnitude.
void expect_same_state(const std::string& a, const std::string& b, double rel_tol) {
  const CheckpointState x = load_checkpoint(a), y = load_checkpoint(b);
  EXPECT_EQ(x.step, y.step);
  EXPECT_EQ(x.data_cursor, y.data_cursor);
  double worst = 0;
  std::string where;
  auto compare = [&](const NamedTensors& p, const NamedTensors& q) {
    ASSERT_EQ(p.size(), q.size());
    for (size_t i = 0; i < p.size(); ++i) {
      ASSERT_EQ(p[i].first, q[i].first);
      const std::vector<float> u = p[i].second.to_vector<float>(), v = q[i].second.to_vector<float>();
      ASSERT_EQ(u.size(), v.size());
      if (rel_tol == 0) {
        ASSERT_EQ(u, v) << p[i].first << " differs between " << a << " and " << b;
        continue;
      }
      float scale = 0;
      for (float e : u) scale = std::max(scale, std::fabs(e));
      for (size_t e = 0; e < u.size(); ++e) {
        const double d = std::fabs(static_cast<double>(u[e]) - v[e]) / (scale > 0 ? scale : 1.0f);
        if (d > worst) {
          worst = d;
          where = p[i].first + "[" + std::to_string(e) + "]";
        }
      }
    }
  };
  compare(x.parameters, y.parameters);
  compare(x.optimizer, y.optimizer);
  EXPECT_LE(worst, rel_tol) << "largest difference at " << where << " between " << a << " and " << b;
  std::printf("state of %s vs %s: largest relative difference %.3g %s\n", a.c_str(), b.c_str(), worst,
              where.c_str());
}

TEST(DataParallel, TwoAndThreeRanksMatchOneRankWithAccumulation) {
  ScratchDir dir;
  for (int ranks : {2, 3}) {
    const std::string single = dir / ("accum" + std::to_string(ranks)), multi = dir / ("ranks" + std::to_string(ranks));
    RunResult r = run_ranks(1, train_args(single, ranks));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_ranks(ranks, train_args(multi, 1));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("ranks: rank 0/" + std::to_string(ranks) + " (local 0, mpirun)"), std::string::npos)
        << r.output;
    // One writer: one log line per step, printed once; only rank 0's files.
    EXPECT_EQ(metrics(multi).size(), 20u);
    size_t printed = 0;
    for (size_t at = 0; (at = r.output.find("step 20/20", at)) != std::string::npos; ++at) ++printed;
    EXPECT_EQ(printed, 1u) << r.output;
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(multi)) files.push_back(fs::relative(e.path(), multi).string());
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files, (std::vector<std::string>{"checkpoints", "checkpoints/step_00000010.h5",
                                                "checkpoints/step_00000020.h5", "config.cfg", "metrics.jsonl"}));
    expect_same_metrics(single, multi, kLossTol);
    expect_same_state(latest_checkpoint(single), latest_checkpoint(multi), kStateTol);
  }
}

TEST(DataParallel, ZeroOneMatchesPlainDataParallelAndAFixedWorldRepeatsBitwise) {
  ScratchDir dir;
  const std::string plain = dir / "plain", zero = dir / "zero", again = dir / "zero_again";
  ASSERT_EQ(run_ranks(3, train_args(plain, 1)).exit_code, 0);
  // Small buckets, so that the shards cut through parameters and several buckets overlap backward.
  const std::string zero_args = "--train.zero 1 --train.bucket_mb 0.02";
  RunResult r = run_ranks(3, train_args(zero, 1, zero_args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("AdamW with ZeRO-1"), std::string::npos) << r.output;
  expect_same_metrics(plain, zero, kLossTol);
  expect_same_state(latest_checkpoint(plain), latest_checkpoint(zero), kStateTol);
  ASSERT_EQ(run_ranks(3, train_args(again, 1, zero_args)).exit_code, 0);
  expect_same_metrics(zero, again, 0);
  expect_same_state(latest_checkpoint(zero), latest_checkpoint(again), 0);
}

TEST(DataParallel, SavedAtThreeRanksResumesAtThreeTwoAndOne) {
  ScratchDir dir;
  // A global batch of 24 windows at every world size: 3 x 2 x 4, 2 x 3 x 4, 1 x 6 x 4.
  const std::string zero = "--train.zero 1 --train.bucket_mb 0.02";
  const std::string straight = dir / "straight", stopped = dir / "stopped";
  ASSERT_EQ(run_ranks(3, train_args(straight, 2, zero)).exit_code, 0);
  RunResult r = run_ranks(3, train_args(stopped, 2, zero + " --train.stop_at 7"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(load_checkpoint(latest_checkpoint(stopped)).data_cursor, 7u * 24u);
  struct Resume {
    int ranks;
    int64_t accum;
    std::string extra;
    double tol;  // 0: bit for bit; 1: kLossTol and kStateTol
  };
  for (const Resume& resume : {Resume{3, 2, zero, 0.0}, Resume{2, 3, "", 1.0}, Resume{1, 6, "", 1.0}}) {
    const std::string run = dir / ("resumed_at_" + std::to_string(resume.ranks));
    fs::copy(stopped, run, fs::copy_options::recursive);
    r = run_ranks(resume.ranks, train_args(run, resume.accum, resume.extra));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    // The same samples: the cursor continues at 7 x 24 and ends at 20 x 24.
    EXPECT_EQ(load_checkpoint(latest_checkpoint(run)).data_cursor, 20u * 24u);
    // tol 0: bit for bit; else the tolerances above.
    expect_same_metrics(straight, run, resume.tol * kLossTol);
    expect_same_state(latest_checkpoint(straight), latest_checkpoint(run), resume.tol * kStateTol);
  }
}

// Starts `command` in the background as its own process (mpirun), with output to `log`.
pid_t spawn(const std::string& command, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command + " > " + log + " 2>&1").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// The pid of the given rank among mpirun's children (read from their environment).
pid_t rank_pid(pid_t mpirun, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string pid, comm, state;
    pid_t ppid = 0;
    if (!(stat >> pid >> comm >> state >> ppid) || ppid != mpirun) continue;
    std::ifstream environ(e.path() / "environ");
    std::stringstream all;
    all << environ.rdbuf();
    const std::string env = all.str();
    const std::string key = std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank);
    for (size_t at = 0; (at = env.find(key, at)) != std::string::npos; at += key.size())
      if ((at == 0 || env[at - 1] == '\0') && (at + key.size() == env.size() || env[at + key.size()] == '\0'))
        return static_cast<pid_t>(std::stol(name));
  }
  return 0;
}

struct Finished {
  int exit_code;
  std::string output;
};

// Waits for `pid` (a bound so that a broken failure path fails the test instead of hanging it).
Finished wait_for(pid_t pid, const std::string& log) {
  int status = 0;
  for (int i = 0; i < 3000 && waitpid(pid, &status, WNOHANG) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "the job did not end within 300 s";
  }
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out.str()};
}

void wait_for_lines(const std::string& run_dir, size_t lines) {
  for (int i = 0; i < 6000 && metrics(run_dir).size() < lines; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_GE(metrics(run_dir).size(), lines);
}

std::string long_run(const std::string& run, const std::string& extra) {
  return kMpirun + " -np 3 " + TSTL_BINARY + " " +
         train_args(run, 1, "--train.max_steps 100000 --train.save_every 2 " + extra);
}

TEST(DataParallel, AKilledRankEndsTheJobNamingItAndTheLatestCheckpointLoads) {
  ScratchDir dir;
  const std::string run = dir / "run", log = dir / "log";
  const pid_t mpirun = spawn(long_run(run, ""), log);
  wait_for_lines(run, 5);
  const pid_t victim = rank_pid(mpirun, 1);
  ASSERT_GT(victim, 0);
  kill(victim, SIGKILL);
  const Finished f = wait_for(mpirun, log);
  EXPECT_NE(f.exit_code, 0) << f.output;
  EXPECT_NE(f.output.find("rank 1"), std::string::npos) << f.output;
  const std::string latest = latest_checkpoint(run);
  ASSERT_FALSE(latest.empty());
  EXPECT_GE(load_checkpoint(latest).step, 2);
}

TEST(DataParallel, AHungRankIsNamedAfterTheTimeout) {
  ScratchDir dir;
  const std::string run = dir / "run", log = dir / "log";
  const pid_t mpirun = spawn(long_run(run, "--train.comm_timeout_s 5"), log);
  wait_for_lines(run, 3);
  const pid_t victim = rank_pid(mpirun, 2);
  ASSERT_GT(victim, 0);
  kill(victim, SIGSTOP);
  const Finished f = wait_for(mpirun, log);
  kill(victim, SIGKILL);  // if the launcher left it stopped
  EXPECT_NE(f.exit_code, 0) << f.output;
  EXPECT_NE(f.output.find("did not complete within train.comm_timeout_s = 5 s; no answer from rank 2 (dead or hung)"),
            std::string::npos)
      << f.output;
}

TEST(DataParallel, SigtermToOneRankStopsEveryRankAtTheSameStepAndSaves) {
  ScratchDir dir;
  const std::string run = dir / "run", log = dir / "log";
  const pid_t mpirun = spawn(long_run(run, "--train.save_every 1000"), log);
  wait_for_lines(run, 3);
  const pid_t victim = rank_pid(mpirun, 1);
  ASSERT_GT(victim, 0);
  kill(victim, SIGTERM);
  const Finished f = wait_for(mpirun, log);
  // Exit 0 means every rank left the loop together (a rank stopping alone would leave the others
  // in a collective until the timeout) and rank 0 saved.
  ASSERT_EQ(f.exit_code, 0) << f.output;
  EXPECT_NE(f.output.find("stopped by a signal to another rank after step"), std::string::npos) << f.output;
  const std::string latest = latest_checkpoint(run);
  ASSERT_FALSE(latest.empty()) << f.output;
  const auto rows = metrics(run);
  EXPECT_EQ(load_checkpoint(latest).step, static_cast<int64_t>(rows.back().at("step")));
}

}  // namespace
}  // namespace tstl
