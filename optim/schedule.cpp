#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tstl {

DecayShape parse_decay_shape(const std::string& name) {
  if (name == "cosine") return DecayShape::Cosine;
  if (name == "linear") return DecayShape::Linear;
  TSTL_FAIL("unknown lr decay '", name, "' (expected cosine or linear)");
}

double learning_rate(int64_t step, const ScheduleOptions& o) {
  TSTL_CHECK(step >= 0, "learning_rate: negative step ", step);
  TSTL_CHECK(o.warmup_steps >= 0, "learning_rate: negative warmup_steps ", o.warmup_steps);
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  if (step >= o.max_steps) return o.min_lr;
  const double span = static_cast<double>(std::max<int64_t>(o.max_steps - o.warmup_steps, 1));
  const double progress = static_cast<double>(step - o.warmup_steps) / span;
  if (o.decay == DecayShape::Cosine) return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr - (o.lr - o.min_lr) * progress;
}

}  // namespace tstl
