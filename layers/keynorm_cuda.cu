// KeyNorm on CUDA: kn = k / max(|k|, eps) per row of d and its backward
// dk = keynorm_backward_element(g, kn, <kn, g>, |k|, eps), with the math of layers/keynorm.h.
// One warp per row: lanes stride over the d elements, the row's sum of squares / dot product is
// reduced with shuffles in the compute dtype (f32 for f32 and bf16 keys, f64 for f64).
// k, kn, g, dk (rows, d) in f32, bf16 or f64; norm (rows) in the compute dtype.
// Gradient contract: kn, norm and dk are written (=).
#include "core/cuda_context.h"
#include "layers/keynorm.h"

namespace tstl::kernels {

namespace {

using cuda::compute_t;
constexpr int kRowsPerBlock = cuda::kBlock / cuda::kWarp;

template <class T>
__global__ void keynorm_forward_kernel(const T* __restrict__ k,       // (rows, d)
                                       T* __restrict__ kn,            // (rows, d)
                                       compute_t<T>* __restrict__ norm,  // (rows)
                                       int64_t rows, int64_t d, compute_t<T> eps) {
  using C = compute_t<T>;
  const int lane = static_cast<int>(threadIdx.x) % cuda::kWarp;
  const int64_t warp = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / cuda::kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = warp; r < rows; r += warps) {  // uniform per warp: the shuffles see all lanes
    const T* kr = k + r * d;
    C sq = 0;
    for (int64_t j = lane; j < d; j += cuda::kWarp) {
      const C v = cuda::load(kr, j);
      sq += v * v;
    }
    sq = cuda::warp_sum(sq);
    const C length = sqrt(sq);
    const C inv = C(1) / keynorm_divisor(length, eps);
    for (int64_t j = lane; j < d; j += cuda::kWarp) cuda::store(kn, r * d + j, cuda::load(kr, j) * inv);
    if (lane == 0) norm[r] = length;
  }
}

template <class T>
__global__ void keynorm_backward_kernel(const T* __restrict__ kn,             // (rows, d)
                                        const compute_t<T>* __restrict__ norm,  // (rows)
                                        const T* __restrict__ g,              // (rows, d)
                                        T* __restrict__ dk,                   // (rows, d)
                                        int64_t rows, int64_t d, compute_t<T> eps) {
  using C = compute_t<T>;
  const int lane = static_cast<int>(threadIdx.x) % cuda::kWarp;
  const int64_t warp = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / cuda::kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = warp; r < rows; r += warps) {
    const int64_t base = r * d;
    C dot = 0;
    for (int64_t j = lane; j < d; j += cuda::kWarp) dot += cuda::load(kn, base + j) * cuda::load(g, base + j);
    dot = cuda::warp_sum(dot);
    const C length = norm[r];
    for (int64_t j = lane; j < d; j += cuda::kWarp)
      cuda::store(dk, base + j,
                        keynorm_backward_element(cuda::load(g, base + j), cuda::load(kn, base + j), dot,
                                                 length, eps));
  }
}

unsigned row_grid(int64_t rows) { return cuda::grid_for(rows, kRowsPerBlock); }

}  // namespace

void keynorm_forward_cuda(const Tensor& k, double eps, Tensor& kn, Tensor& norm) {
  const char* name = "keynorm_forward";
  cuda::check_on_cuda(k, name, "k");
  cuda::check_on_cuda(kn, name, "kn");
  cuda::check_on_cuda(norm, name, "norm");
  cuda::check_compute_dtype(norm, k.dtype(), name, "norm");
  const int64_t d = k.size(-1), rows = k.numel() / d;
  if (rows == 0) return;
  cuda::visit_cuda_float(k.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    keynorm_forward_kernel<T><<<row_grid(rows), cuda::kBlock, 0, cuda::stream()>>>(
        k.data<T>(), kn.data<T>(), norm.data<C>(), rows, d, static_cast<C>(eps));
    CUDA_CHECK_LAUNCH();
  });
}

void keynorm_backward_cuda(const Tensor& kn, const Tensor& norm, const Tensor& g, double eps, Tensor& dk) {
  const char* name = "keynorm_backward";
  cuda::check_on_cuda(kn, name, "kn");
  cuda::check_on_cuda(norm, name, "norm");
  cuda::check_on_cuda(g, name, "g");
  cuda::check_on_cuda(dk, name, "dk");
  cuda::check_compute_dtype(norm, kn.dtype(), name, "norm");
  const int64_t d = kn.size(-1), rows = kn.numel() / d;
  if (rows == 0) return;
  cuda::visit_cuda_float(kn.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    keynorm_backward_kernel<T><<<row_grid(rows), cuda::kBlock, 0, cuda::stream()>>>(
        kn.data<T>(), norm.data<C>(), g.data<T>(), dk.data<T>(), rows, d, static_cast<C>(eps));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
