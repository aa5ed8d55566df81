// KeyNorm on CUDA: kn = k / max(|k|, eps) per row of d and its backward
// dk = keynorm_backward_element(g, kn, <kn, g>, |k|, eps), with the math of layers/keynorm.h.
// One warp per row: lanes stride over the d elements, the row's sum of squares / dot product is
// reduced with shuffles in the compute dtype (f32 for f32 and bf16 keys, f64 for f64).
// k, kn, g, dk (rows, d) in f32, bf16 or f64; norm (rows) in the compute dtype.
// Gradient contract: kn, norm and dk are written (=).
#include "layers/keynorm.h"
#include "layers/layer_cuda.cuh"

namespace tstl::kernels {

namespace {

using layer_cuda::compute_t;
constexpr int kRowsPerBlock = layer_cuda::kBlock / layer_cuda::kWarp;

template <class T>
__global__ void keynorm_forward_kernel(const T* __restrict__ k,       // (rows, d)
                                       T* __restrict__ kn,            // (rows, d)
                                       compute_t<T>* __restrict__ norm,  // (rows)
                                       int64_t rows, int64_t d, compute_t<T> eps) {
  using C = compute_t<T>;
  const int lane = static_cast<int>(threadIdx.x) % layer_cuda::kWarp;
  const int64_t warp = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / layer_cuda::kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = warp; r < rows; r += warps) {  // uniform per warp: the shuffles see all lanes
    const T* kr = k + r * d;
    C sq = 0;
    for (int64_t j = lane; j < d; j += layer_cuda::kWarp) {
      const C v = layer_cuda::load(kr, j);
      sq += v * v;
    }
    sq = layer_cuda::warp_sum(sq);
    const C length = sqrt(sq);
    const C inv = C(1) / keynorm_divisor(length, eps);
    for (int64_t j = lane; j < d; j += layer_cuda::kWarp) layer_cuda::store(kn, r * d + j, layer_cuda::load(kr, j) * inv);
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
  const int lane = static_cast<int>(threadIdx.x) % layer_cuda::kWarp;
  const int64_t warp = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / layer_cuda::kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = warp; r < rows; r += warps) {
    const int64_t base = r * d;
    C dot = 0;
    for (int64_t j = lane; j < d; j += layer_cuda::kWarp) dot += layer_cuda::load(kn, base + j) * layer_cuda::load(g, base + j);
    dot = layer_cuda::warp_sum(dot);
    const C length = norm[r];
    for (int64_t j = lane; j < d; j += layer_cuda::kWarp)
      layer_cuda::store(dk, base + j,
                        keynorm_backward_element(layer_cuda::load(g, base + j), layer_cuda::load(kn, base + j), dot,
                                                 length, eps));
  }
}

unsigned row_grid(int64_t rows) { return layer_cuda::grid_for(rows, kRowsPerBlock); }

}  // namespace

void keynorm_forward_cuda(const Tensor& k, double eps, Tensor& kn, Tensor& norm) {
  const char* name = "keynorm_forward";
  layer_cuda::check_on_cuda(k, name, "k");
  layer_cuda::check_on_cuda(kn, name, "kn");
  layer_cuda::check_on_cuda(norm, name, "norm");
  layer_cuda::check_compute_dtype(norm, k.dtype(), name, "norm");
  const int64_t d = k.size(-1), rows = k.numel() / d;
  if (rows == 0) return;
  layer_cuda::visit_float(k.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    keynorm_forward_kernel<T><<<row_grid(rows), layer_cuda::kBlock, 0, layer_cuda::stream()>>>(
        k.data<T>(), kn.data<T>(), norm.data<C>(), rows, d, static_cast<C>(eps));
    CUDA_CHECK_LAUNCH();
  });
}

void keynorm_backward_cuda(const Tensor& kn, const Tensor& norm, const Tensor& g, double eps, Tensor& dk) {
  const char* name = "keynorm_backward";
  layer_cuda::check_on_cuda(kn, name, "kn");
  layer_cuda::check_on_cuda(norm, name, "norm");
  layer_cuda::check_on_cuda(g, name, "g");
  layer_cuda::check_on_cuda(dk, name, "dk");
  layer_cuda::check_compute_dtype(norm, kn.dtype(), name, "norm");
  const int64_t d = kn.size(-1), rows = kn.numel() / d;
  if (rows == 0) return;
  layer_cuda::visit_float(kn.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    keynorm_backward_kernel<T><<<row_grid(rows), layer_cuda::kBlock, 0, layer_cuda::stream()>>>(
        kn.data<T>(), norm.data<C>(), g.data<T>(), dk.data<T>(), rows, d, static_cast<C>(eps));
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
