// Global-norm clipping (CPU kernels here, CUDA twins in clip_cuda.cu).
#include "optim/clip.h"

#include <cmath>
#include <vector>

#include "core/kernels.h"

namespace tstl {

namespace kernels {

GradStats grad_stats_cpu(const Tensor& g) {
  constexpr int64_t kBlock = 4096;  // fixed partition: the result does not depend on threads
  const int64_t n = g.numel(), blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));   // (blocks)
  std::vector<int64_t> bad(static_cast<size_t>(blocks));      // (blocks)
  visit_float(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = g.data<T>();  // (n)
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t b = 0; b < blocks; ++b) {
      double acc = 0;
      int64_t nonfinite = 0;
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; ++i) {
        const double x = static_cast<double>(pg[i]);
        acc += x * x;
        nonfinite += !std::isfinite(x);
      }
      partial[b] = acc;
      bad[b] = nonfinite;
    }
  });
  GradStats s;
  for (int64_t b = 0; b < blocks; ++b) {
    s.sum_squares += partial[b];
    s.nonfinite += bad[b];
  }
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
