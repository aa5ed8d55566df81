// Global-norm clipping (CPU kernels here, CUDA twins in clip_cuda.cu).
#include "optim/clip.h"

#include <cmath>

#include "core/kernels.h"
#include "core/ops.h"
#include "core/reduce.h"

namespace tstl {

namespace kernels {

GradStats grad_stats_cpu(const Tensor& g) {
  GradStats s;
  visit_float(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();  // (n)
    // core/reduce.h: fixed blocks in a fixed order, so the norm does not depend on the threads.
    s = reduce_in_blocks<GradStats>(g.numel(), [pg](int64_t begin, int64_t end) {
      GradStats block;
      for (int64_t i = begin; i < end; ++i) {
        const double x = static_cast<double>(pg[i]);
        block.sum_squares += x * x;
        block.nonfinite += !std::isfinite(x);
      }
      return block;
    });
  });
  return s;
}

void grad_stats_device_cpu(const std::vector<Tensor>& grads, Tensor& stats) {
  GradStats total;
  for (const Tensor& g : grads) total += grad_stats_cpu(g);
  stats.data<double>()[0] = total.sum_squares;
  stats.data<double>()[1] = static_cast<double>(total.nonfinite);
}

void clip_by_stats_cpu(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm) {
  const double norm = std::sqrt(stats.data<double>()[0]);
  if (!(max_norm > 0) || stats.data<double>()[1] != 0 || !std::isfinite(norm) || !(norm > max_norm)) return;
  for (Tensor g : grads) scale_cpu(g, max_norm / norm, g);  // g shares the gradient's storage
}

GradStats read_grad_stats_cpu(const Tensor& stats) {
  GradStats s;
  s.sum_squares = stats.data<double>()[0];
  s.nonfinite = static_cast<int64_t>(stats.data<double>()[1]);
  return s;
}

}  // namespace kernels

std::vector<Tensor> gradients_of(const NamedTensors& params) {
  std::vector<Tensor> grads;
  for (const auto& [name, p] : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

Tensor grad_stats_on_device(const std::vector<Tensor>& grads, Device device) {
  if (!grads.empty()) device = grads.front().device();
  for (const Tensor& g : grads)
    TSTL_CHECK(g.device() == device, "grad_stats: gradients on ", device_name(device), " and ", device_name(g.device()));
  Tensor stats = Tensor::zeros({2}, DType::F64, device);  // [sum of squares, non-finite count]
  TSTL_ON_DEVICE(stats, grad_stats_device, grads, stats);
  return stats;
}

void clip_by_stats(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm) {
  TSTL_ON_DEVICE(stats, clip_by_stats, grads, stats, max_norm);
}

GradStats read_grad_stats(const Tensor& stats) {
  if (stats.device() == Device::CPU) return kernels::read_grad_stats_cpu(stats);
#ifdef TSTL_WITH_CUDA
  return kernels::read_grad_stats_cuda(stats);
#else
  kernels::cuda_not_compiled("read_grad_stats");
#endif
}

namespace {
// The statistics of params' gradients as a device tensor (CPU when there are none).
Tensor stats_of(const NamedTensors& params) {
  const std::vector<Tensor> grads = gradients_of(params);
  return grad_stats_on_device(grads, grads.empty() ? Device::CPU : grads.front().device());
}
}  // namespace

GradStats grad_stats(const NamedTensors& params) { return read_grad_stats(stats_of(params)); }

double grad_norm(const NamedTensors& params) { return std::sqrt(grad_stats(params).sum_squares); }

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  const std::vector<Tensor> grads = gradients_of(params);
  const Tensor stats = grad_stats_on_device(grads, grads.empty() ? Device::CPU : grads.front().device());
  clip_by_stats(grads, stats, max_norm);
  return std::sqrt(read_grad_stats(stats).sum_squares);
}

double clip_grad_norm_reading(const NamedTensors& params, double max_norm, const Tensor& scalar, double& scalar_value) {
  TSTL_CHECK(scalar.numel() == 1 && scalar.dtype() == DType::F64, "clip_grad_norm_reading: expected one f64 element, got ",
             shape_str(scalar.shape()), " ", dtype_name(scalar.dtype()));
  const std::vector<Tensor> grads = gradients_of(params);
  const Tensor stats = grad_stats_on_device(grads, scalar.device());  // (2) [sum of squares, non-finite]
  clip_by_stats(grads, stats, max_norm);
  const std::vector<double> read = concat({stats, scalar.reshape({1})}, 0).to_vector<double>();  // (3), one read
  scalar_value = read[2];
  return std::sqrt(read[0]);
}

std::string first_nonfinite_gradient(const NamedTensors& params) {
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (g.defined() && read_grad_stats(grad_stats_on_device({g}, g.device())).nonfinite > 0) return name;
  }
  return "";
}

}  // namespace tstl
