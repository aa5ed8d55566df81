// Training metrics: metrics.jsonl (one JSON object per logged step, flushed line by line), the
// human-readable step line, progress with ETA, and the peaks that MFU is measured against.
// MFU = (flops_per_token * tokens_per_s) / peak_flops, flops_per_token from the model (the
// trainer documents its formula, e.g. 6 N + attention terms); peaks below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tstl {

struct StepMetrics {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // training tokens seen so far
  double loss = 0, lr = 0, grad_norm = 0;
  double ms = 0;  // wall time of this step
  double tokens_per_s = 0, mfu = 0;
  std::optional<double> val_loss;  // written only when evaluated at this step
  int64_t skipped_steps = 0;       // non-finite steps skipped so far; written only when > 0
  std::string precision;           // train.precision as run (f32, bf16); written when set
};

// {"step":40,"tokens":...,"loss":...,"lr":...,"grad_norm":...,"ms":...,"tokens_per_s":...,
//  "mfu":...[,"val_loss":...][,"skipped_steps":...][,"precision":"bf16"]}; numbers as the shortest text that reads
// back exactly, non-finite ones as null.
std::string metrics_json(const StepMetrics& m);

class MetricsLog {
 public:
  // Opens `path` for appending (creating it). With keep_until_step >= 0 (a resume), lines of
  // steps after it (logged by the interrupted run past its last checkpoint) are dropped first.
  explicit MetricsLog(const std::string& path, int64_t keep_until_step = -1);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const StepMetrics& m);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* file_ = nullptr;  // FILE*
};

// "step    40/1000 | loss 3.2141 | lr 1.00e-04 | norm 0.812 | 123.4 ms | 12345 tok/s | MFU 12.3%"
// (+ " | val 3.1 " when evaluated).
std::string format_step_line(const StepMetrics& m, int64_t max_steps);
std::string format_duration(double seconds);  // "42s", "3m05s", "2h03m"

// Progress and ETA from the mean time per step since the first update (the first step, which
// pays for warm-up allocations, is excluded once a second one exists).
class Progress {
 public:
  Progress(int64_t first_step, int64_t max_steps);
  void update(int64_t step);                    // now, by the steady clock
  void update(int64_t step, double now_seconds);  // explicit time (tests)
  double eta_seconds() const;                   // < 0 while unknown
  std::string str() const;                      // "[#####-----]  50.0% ETA 3m05s"

 private:
  int64_t first_step_, max_steps_, step_ = 0;
  double start_ = -1, second_ = -1, now_ = 0;
  int64_t second_step_ = 0;
};

// Dense bf16 tensor-core peak in FLOP/s for a GPU by (a part of) its device name, 0 if unknown.
double gpu_peak_flops(const std::string& device_name);
// The CPU's peak: train/peak_flops.h.

}  // namespace tstl
