// metrics.jsonl lines, the step line, progress/ETA, the GPU peak table, and the stop signals.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "train/metrics.h"
#include "train/signals.h"

namespace tstl {
namespace {

TEST(Metrics, JsonLineHasEveryFieldAndExactNumbers) {
  StepMetrics m;
  m.step = 40;
  m.tokens = 163840;
  m.loss = 3.2140000000000004;
  m.lr = 1e-4;
  m.grad_norm = 0.8125;
  m.ms = 123.5;
  m.tokens_per_s = 12345.5;
  m.mfu = 0.125;
  EXPECT_EQ(metrics_json(m), "{\"step\":40,\"tokens\":163840,\"loss\":3.2140000000000004,\"lr\":0.0001,"
                             "\"grad_norm\":0.8125,\"ms\":123.5,\"tokens_per_s\":12345.5,\"mfu\":0.125}");
  m.val_loss = 2.5;
  m.skipped_steps = 2;
  m.grad_norm = NAN;
  const std::string j = metrics_json(m);
  EXPECT_NE(j.find(",\"val_loss\":2.5,\"skipped_steps\":2}"), std::string::npos) << j;
  EXPECT_NE(j.find("\"grad_norm\":null"), std::string::npos) << j;
}

TEST(Metrics, LogAppendsFlushedLinesAndTrimsOnResume) {
  const std::string path = ::testing::TempDir() + "tstl_metrics_" + std::to_string(getpid()) + ".jsonl";
  std::remove(path.c_str());
  auto read_lines = [&] {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  };
  {
    MetricsLog log(path);
    for (int64_t s = 1; s <= 5; ++s) {
      StepMetrics m;
      m.step = s;
      log.write(m);
      EXPECT_EQ(read_lines().size(), static_cast<size_t>(s));  // flushed at once
    }
  }
  {
    MetricsLog log(path, /*keep_until_step=*/3);  // resumed from the step-3 checkpoint
    EXPECT_EQ(read_lines().size(), 3u);
    StepMetrics m;
    m.step = 4;
    log.write(m);
  }
  const auto lines = read_lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3].rfind("{\"step\":4,", 0), 0u);
  std::remove(path.c_str());
}

TEST(Metrics, StepLineAndDurations) {
  StepMetrics m;
  m.step = 40;
  m.loss = 3.21412;
  m.lr = 1e-4;
  m.grad_norm = 0.8123;
  m.ms = 123.44;
  m.tokens_per_s = 12345.4;
  m.mfu = 0.1234;
  EXPECT_EQ(format_step_line(m, 1000),
            "step   40/1000 | loss 3.2141 | lr 1.00e-04 | norm 0.812 | 123.4 ms | 12345 tok/s | MFU 12.3%");
  m.val_loss = 3.1;
  EXPECT_NE(format_step_line(m, 1000).find("| val 3.1000"), std::string::npos);
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(7380), "2h03m");
  EXPECT_EQ(format_duration(-1), "?");
}

TEST(Metrics, ProgressEtaExcludesTheFirstStep) {
  Progress p(10, 110);  // resumed at step 10, 100 steps to go
  p.update(10, 0.0);
  EXPECT_LT(p.eta_seconds(), 0);
  p.update(11, 5.0);  // the first step is slow (allocations)
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 5.0 * 99);
  p.update(21, 15.0);  // then 1 s per step: 89 steps left
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 89.0);
  EXPECT_EQ(p.str(), "[###-----------------]  19.1% ETA 1m29s");
}

TEST(Metrics, GpuPeakTable) {
  EXPECT_DOUBLE_EQ(gpu_peak_flops("NVIDIA H100 80GB HBM3"), 989e12);
  EXPECT_DOUBLE_EQ(gpu_peak_flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_DOUBLE_EQ(gpu_peak_flops("NVIDIA H200"), 989e12);
  EXPECT_DOUBLE_EQ(gpu_peak_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(gpu_peak_flops("Some Other GPU"), 0);
}

TEST(Signals, FirstSignalSetsTheFlagSecondKills) {
  // In a child: the handlers are process-wide and the second signal ends the process.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    install_stop_handlers();
    if (stop_requested()) _exit(10);
    raise(SIGTERM);
    if (!stop_requested() || stop_signal() != SIGTERM) _exit(11);
    raise(SIGINT);  // a second signal: default action, the process dies here
    _exit(12);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit code " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
}

TEST(Signals, ProgrammaticStop) {
  clear_stop_request();
  EXPECT_FALSE(stop_requested());
  request_stop();
  EXPECT_TRUE(stop_requested());
  EXPECT_EQ(stop_signal(), 0);
  clear_stop_request();
  EXPECT_FALSE(stop_requested());
}

}  // namespace
}  // namespace tstl
