// Global-norm gradient clipping and the non-finite gradient check. The norm is the L2 norm over
// the gradients of all parameters together, accumulated in double in a fixed order (fixed-size
// blocks summed in order, core/reduce.h; the parameters in the given order), so it does not
// depend on the thread count and a resumed run repeats it bit for bit. Parameters without a
// .grad() contribute nothing.
//
// On CUDA the statistics stay on the device (a (2,) f64 tensor [sum of squares, non-finite
// count], one multi-tensor kernel, optim/clip_cuda.cu), the clip factor is computed and applied
// on the device from them, and the host reads them once (read_grad_stats: the training step's
// one synchronisation, docs/gpu.md). The CPU runs the same three calls on host tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
// stats (2) f64 = [sum of squares, non-finite count] over all of grads (f32 on CUDA).
void grad_stats_device_cpu(const std::vector<Tensor>& grads, Tensor& stats);
void grad_stats_device_cuda(const std::vector<Tensor>& grads, Tensor& stats);
// Every gradient *= max_norm / norm when norm = sqrt(stats[0]) is finite and exceeds max_norm > 0.
void clip_by_stats_cpu(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm);
void clip_by_stats_cuda(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm);
GradStats read_grad_stats_cpu(const Tensor& stats);
GradStats read_grad_stats_cuda(const Tensor& stats);  // synchronises (core/cuda_sync.h counts it)
GradStats grad_stats_cpu(const Tensor& g);
}  // namespace kernels

// The defined gradients of params, in order.
std::vector<Tensor> gradients_of(const NamedTensors& params);
// The statistics of grads (all on one device, f32 on CUDA) as a (2,) f64 tensor on that device:
// [sum of squares, non-finite count]; nothing is read back. `device` is used when grads is empty.
Tensor grad_stats_on_device(const std::vector<Tensor>& grads, Device device);
// Clips grads in place from stats (grad_stats_on_device's, possibly summed over ranks) without
// reading it on the host: when norm = sqrt(stats[0]) is finite, stats[1] = 0 and norm > max_norm
// > 0, every gradient is multiplied by max_norm / norm.
void clip_by_stats(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm);
// The statistics on the host (on CUDA: one synchronisation).
GradStats read_grad_stats(const Tensor& stats);
// The gradients' statistics summed over the parameters in order (grad_norm = sqrt(sum_squares)).
GradStats grad_stats(const NamedTensors& params);
// The global L2 norm of the gradients.
double grad_norm(const NamedTensors& params);
// Returns the global norm before clipping. When it exceeds max_norm > 0, every gradient is
// multiplied by max_norm / norm in place. max_norm <= 0 only measures. A non-finite norm is
// returned unchanged and the gradients are left alone (the caller stops or skips the step).
// On CUDA: the three calls above, so one synchronisation (the read of the norm) in all.
double clip_grad_norm(const NamedTensors& params, double max_norm);
// clip_grad_norm that reads `scalar` (one f64 element on the gradients' device) in the same device
// read as the norm, into scalar_value: the trainer's step loss rides along, so that a training
// step waits for the device once (docs/gpu.md).
double clip_grad_norm_reading(const NamedTensors& params, double max_norm, const Tensor& scalar, double& scalar_value);
// The name of the first parameter (in the given order) whose gradient has a NaN or Inf; "" if none.
// (On CUDA one read per parameter: for the error message of a run that stops, not for every step.)
std::string first_nonfinite_gradient(const NamedTensors& params);

}  // namespace tstl
