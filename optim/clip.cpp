// Global-norm clipping (CPU kernels here, CUDA twins in clip_cuda.cu).
#include "optim/clip.h"

#include <cmath>

#include "core/kernels.h"
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

void scale_inplace_cpu(Tensor& g, double factor) { scale_cpu(g, factor, g); }

}  // namespace kernels

namespace {
GradStats stats_of(const Tensor& g) {
  if (g.device() == Device::CPU) return kernels::grad_stats_cpu(g);
#ifdef TSTL_WITH_CUDA
  return kernels::grad_stats_cuda(g);
#else
  kernels::cuda_not_compiled("grad_stats");
#endif
}
}  // namespace

GradStats tensor_grad_stats(const Tensor& g) { return stats_of(g); }

void scale_in_place(Tensor& g, double factor) { TSTL_ON_DEVICE(g, scale_inplace, g, factor); }

GradStats grad_stats(const NamedTensors& params) {
  GradStats total;
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const GradStats s = stats_of(g);
    total.sum_squares += s.sum_squares;
    total.nonfinite += s.nonfinite;
  }
  return total;
}

void scale_gradients(const NamedTensors& params, double factor) {
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (g.defined()) TSTL_ON_DEVICE(g, scale_inplace, g, factor);
  }
}

double grad_norm(const NamedTensors& params) { return std::sqrt(grad_stats(params).sum_squares); }

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  const double norm = grad_norm(params);
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) scale_gradients(params, max_norm / norm);
  return norm;
}

std::string first_nonfinite_gradient(const NamedTensors& params) {
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (g.defined() && stats_of(g).nonfinite > 0) return name;
  }
  return "";
}

}  // namespace tstl
