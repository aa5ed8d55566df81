// CUDA twins of the clipping kernels, over a list of gradients at once (optim/multi_tensor_cuda.h).
//
// The statistics stay on the device: one multi-tensor kernel per list (of up to kCapacity
// tensors) writes a partial sum of squares and a partial non-finite count per block, and a
// one-block kernel sums the partials in a fixed order into stats (2,) f64 = [sum of squares,
// non-finite count]. The scaling kernel reads stats itself and decides there whether to clip, so
// clipping needs no host read; the trainer reads stats once per step (optim/clip.h).
// Deterministic: fixed grid, fixed per-thread element sets, fixed trees, partials in block order.
#include <cmath>
#include <vector>

#include "core/cuda_context.h"
#include "core/cuda_sync_cuda.h"
#include "optim/clip.h"
#include "optim/multi_tensor_cuda.h"

namespace tstl::kernels {

namespace {
constexpr int kThreads = 256, kBlocks = 256;

struct GradEntry {
  float* data;  // (n) f32 gradient
  int64_t n;
};
struct NoHeader {};
struct ScaleHeader {
  const double* stats;  // (2) [sum of squares, non-finite count]
  double max_norm;
};
using StatsList = cuda::TensorList<NoHeader, GradEntry>;
using ScaleList = cuda::TensorList<ScaleHeader, GradEntry>;

// The block's sums of a and b over its kThreads threads, in squares[0] and nonfinite[0]: a tree in
// a fixed order, so the result does not depend on scheduling.
__device__ void block_sum_pair(double a, double b, double* squares, double* nonfinite) {
  squares[threadIdx.x] = a;
  nonfinite[threadIdx.x] = b;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      squares[threadIdx.x] += squares[threadIdx.x + stride];
      nonfinite[threadIdx.x] += nonfinite[threadIdx.x + stride];
    }
    __syncthreads();
  }
}

// partial (kBlocks, 2) for this launch: per block [sum of x^2 over its elements, count of non-finite].
__global__ void grad_stats_kernel(StatsList list, double* partial) {
  __shared__ double squares[kThreads];
  __shared__ double nonfinite[kThreads];
  double a = 0, b = 0;
  for (int t = 0; t < list.count; ++t) {
    const float* g = list.entries[t].data;
    const int64_t n = list.entries[t].n;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
         i += static_cast<int64_t>(kBlocks) * kThreads) {
      const double x = g[i];
      a += x * x;
      b += isfinite(x) ? 0.0 : 1.0;
    }
  }
  block_sum_pair(a, b, squares, nonfinite);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = squares[0];
    partial[2 * blockIdx.x + 1] = nonfinite[0];
  }
}

// stats (2) = the sums of partial (count, 2), thread k taking rows k, k + kThreads, ... then a tree.
__global__ void sum_partials_kernel(const double* partial, int64_t count, double* stats) {
  __shared__ double squares[kThreads];
  __shared__ double nonfinite[kThreads];
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) {
    a += partial[2 * i];
    b += partial[2 * i + 1];
  }
  block_sum_pair(a, b, squares, nonfinite);
  if (threadIdx.x == 0) {
    stats[0] = squares[0];
    stats[1] = nonfinite[0];
  }
}

// Every gradient *= max_norm / norm when the norm sqrt(stats[0]) is finite, no element is
// non-finite, and norm > max_norm > 0; otherwise nothing is written. Every thread takes the
// same decision from the same two doubles.
__global__ void clip_kernel(ScaleList list) {
  const double norm = sqrt(list.header.stats[0]);
  const double max_norm = list.header.max_norm;
  if (!(max_norm > 0) || list.header.stats[1] != 0 || !isfinite(norm) || !(norm > max_norm)) return;
  const float factor = static_cast<float>(max_norm / norm);
  for (int t = 0; t < list.count; ++t) {
    float* g = list.entries[t].data;
    const int64_t n = list.entries[t].n;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
      g[i] *= factor;
  }
}

std::vector<GradEntry> entries_of(const std::vector<Tensor>& grads, const char* what) {
  std::vector<GradEntry> entries;
  for (const Tensor& g : grads) {
    TSTL_CHECK(g.device() == Device::CUDA && g.dtype() == DType::F32, what, " on CUDA expects f32 CUDA gradients, got ",
               dtype_name(g.dtype()), " on ", device_name(g.device()));
    if (g.numel() > 0) entries.push_back({static_cast<float*>(g.raw()), g.numel()});
  }
  return entries;
}
}  // namespace

void grad_stats_device_cuda(const std::vector<Tensor>& grads, Tensor& stats) {
  const std::vector<GradEntry> entries = entries_of(grads, "grad_stats");
  const int launches = cuda::launches_for<NoHeader, GradEntry>(entries.size());
  // Scratch from the caching allocator (via Tensor), so a training step makes no cudaMalloc.
  Tensor partial = Tensor::empty({std::max(launches, 1) * kBlocks, 2}, DType::F64, Device::CUDA);  // (launches x kBlocks, 2)
  cuda::for_each_launch(NoHeader{}, entries, [&](const StatsList& list, int index) {
    grad_stats_kernel<<<kBlocks, kThreads, 0, cuda::stream()>>>(list, partial.data<double>() + 2 * kBlocks * index);
    CUDA_CHECK_LAUNCH();
  });
  sum_partials_kernel<<<1, kThreads, 0, cuda::stream()>>>(partial.data<double>(), int64_t{launches} * kBlocks,
                                                         stats.data<double>());
  CUDA_CHECK_LAUNCH();
}

void clip_by_stats_cuda(const std::vector<Tensor>& grads, const Tensor& stats, double max_norm) {
  if (!(max_norm > 0)) return;
  ScaleHeader header{stats.data<double>(), max_norm};
  cuda::for_each_launch(header, entries_of(grads, "clip"), [&](const ScaleList& list, int) {
    clip_kernel<<<kBlocks, kThreads, 0, cuda::stream()>>>(list);
    CUDA_CHECK_LAUNCH();
  });
}

GradStats read_grad_stats_cuda(const Tensor& stats) {
  double host[2] = {0, 0};
  cuda::counted_read_to_host(host, stats.raw(), sizeof host, cuda::stream());
  GradStats s;
  s.sum_squares = host[0];
  s.nonfinite = static_cast<int64_t>(host[1]);
  return s;
}

}  // namespace tstl::kernels
