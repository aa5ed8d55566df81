// Learning-rate schedules, a pure function of the step number (so a resumed run, or one whose
// max_steps changed, recomputes the same value without saved scheduler state).
//   step < warmup_steps:             lr * (step + 1) / warmup_steps          (linear warm-up)
//   warmup_steps <= step < max_steps: progress = (step - warmup) / (max_steps - warmup) in [0, 1)
//        cosine: min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2
//        linear: lr - (lr - min_lr) * progress
//   step >= max_steps:               min_lr
// `step` counts the updates already taken: the first update uses step 0, so it has a non-zero
// rate even during warm-up, and the peak lr is reached at step warmup_steps.
#pragma once

#include <cstdint>
#include <string>

namespace tstl {

enum class DecayShape { Cosine, Linear };
DecayShape parse_decay_shape(const std::string& name);  // "cosine" | "linear"

struct ScheduleOptions {
  double lr = 1e-4;      // peak
  double min_lr = 1e-5;  // floor, reached at max_steps
  int64_t warmup_steps = 0;
  int64_t max_steps = 1;
  DecayShape decay = DecayShape::Cosine;
};

double learning_rate(int64_t step, const ScheduleOptions& options);

}  // namespace tstl
