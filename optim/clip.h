// Global-norm gradient clipping and the non-finite gradient check. The norm is the L2 norm over
// the gradients of all parameters together, accumulated in double in a fixed order (fixed-size
// blocks summed in order, core/reduce.h; the parameters in the given order), so it does not
// depend on the thread count and a resumed run repeats it bit for bit. Parameters without a
// .grad() contribute nothing.
#pragma once

#include <cstdint>
#include <string>

#include "optim/adamw.h"

namespace tstl {

struct GradStats {
  double sum_squares = 0;  // over finite and non-finite elements alike
  int64_t nonfinite = 0;   // elements that are NaN or +-Inf
  GradStats& operator+=(const GradStats& o) {
    sum_squares += o.sum_squares;
    nonfinite += o.nonfinite;
    return *this;
  }
};

namespace kernels {
GradStats grad_stats_cpu(const Tensor& g);
GradStats grad_stats_cuda(const Tensor& g);
void scale_inplace_cpu(Tensor& g, double factor);
void scale_inplace_cuda(Tensor& g, double factor);
}  // namespace kernels

// One tensor's statistics, and its in-place scaling (for gradients held outside .grad(), such as
// ZeRO-1's shards).
GradStats tensor_grad_stats(const Tensor& g);
void scale_in_place(Tensor& g, double factor);
// The gradients' statistics summed over the parameters in order (grad_norm = sqrt(sum_squares)).
GradStats grad_stats(const NamedTensors& params);
// Multiplies every gradient by `factor` in place.
void scale_gradients(const NamedTensors& params, double factor);
// The global L2 norm of the gradients.
double grad_norm(const NamedTensors& params);
// Returns the global norm before clipping. When it exceeds max_norm > 0, every gradient is
// multiplied by max_norm / norm in place. max_norm <= 0 only measures. A non-finite norm is
// returned unchanged and the gradients are left alone (the caller stops or skips the step).
double clip_grad_norm(const NamedTensors& params, double max_norm);
// The name of the first parameter (in the given order) whose gradient has a NaN or Inf; "" if none.
std::string first_nonfinite_gradient(const NamedTensors& params);

}  // namespace tstl
