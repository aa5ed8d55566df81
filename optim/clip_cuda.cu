// CUDA twins of the clipping kernels. The sum of squares is deterministic: a fixed grid of
// blocks, a fixed tree reduction in shared memory per block, and the per-block partials summed
// on the host in block order.
#include <vector>

#include "core/cuda_backend.h"
#include "core/cuda_check.h"
#include "optim/clip.h"

namespace tstl::kernels {

namespace {
constexpr int kThreads = 256, kBlocks = 256;

__global__ void grad_stats_kernel(const float* g, int64_t n, double* partial, unsigned long long* bad) {
  __shared__ double acc[kThreads];
  __shared__ unsigned long long nonfinite[kThreads];
  double a = 0;
  unsigned long long b = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(kBlocks) * kThreads) {
    const double x = g[i];
    a += x * x;
    b += !isfinite(x);
  }
  acc[threadIdx.x] = a;
  nonfinite[threadIdx.x] = b;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      acc[threadIdx.x] += acc[threadIdx.x + stride];
      nonfinite[threadIdx.x] += nonfinite[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = acc[0];
    bad[blockIdx.x] = nonfinite[0];
  }
}

__global__ void scale_kernel(float* g, int64_t n, float factor) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    g[i] *= factor;
}
}  // namespace

GradStats grad_stats_cuda(const Tensor& g) {
  TSTL_CHECK(g.dtype() == DType::F32, "grad_stats on CUDA expects f32 gradients, got ", dtype_name(g.dtype()));
  // Scratch from the caching allocator (via Tensor), so a training step makes no cudaMalloc.
  Tensor partial = Tensor::empty({kBlocks}, DType::F64, Device::CUDA);  // (kBlocks)
  Tensor bad = Tensor::empty({kBlocks}, DType::I64, Device::CUDA);      // (kBlocks)
  grad_stats_kernel<<<kBlocks, kThreads, 0, cuda::stream()>>>(g.data<float>(), g.numel(), partial.data<double>(),
                                                              reinterpret_cast<unsigned long long*>(bad.data<int64_t>()));
  CUDA_CHECK_LAUNCH();
  std::vector<double> host_partial(kBlocks);
  std::vector<unsigned long long> host_bad(kBlocks);
  CUDA_CHECK(cudaMemcpyAsync(host_partial.data(), partial.raw(), kBlocks * sizeof(double), cudaMemcpyDeviceToHost,
                             cuda::stream()));
  CUDA_CHECK(cudaMemcpyAsync(host_bad.data(), bad.raw(), kBlocks * sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                             cuda::stream()));
  CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));  // the host sums the partials next
  GradStats s;
  for (int b = 0; b < kBlocks; ++b) {
    s.sum_squares += host_partial[b];
    s.nonfinite += static_cast<int64_t>(host_bad[b]);
  }
  return s;
}

void scale_inplace_cuda(Tensor& g, double factor) {
  TSTL_CHECK(g.dtype() == DType::F32, "scale_inplace on CUDA expects f32 gradients, got ", dtype_name(g.dtype()));
  const int64_t n = g.numel();
  if (n == 0) return;
  const int64_t needed = (n + kThreads - 1) / kThreads;
  scale_kernel<<<static_cast<int>(needed < 65535 ? needed : 65535), kThreads, 0, cuda::stream()>>>(
      g.data<float>(), n, static_cast<float>(factor));
  CUDA_CHECK_LAUNCH();
}

}  // namespace tstl::kernels
