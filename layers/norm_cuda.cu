// LayerNorm and RMSNorm on CUDA, forward and backward, with the per-element math of
// layers/norm.h (norm_output, norm_input_grad). One warp per row: the row statistics are the
// two-pass formulation of norm_row_stats (the mean, then the centred second moment), reduced over
// the lanes in the compute dtype (f32 for f32 and bf16 activations, f64 for f64).
// Parameter gradients are deterministic column sums in two stages: fixed chunks of rows summed in
// order into a (chunks, C) buffer, then the chunks summed in order per column. No atomics.
// x, y, dy, dx (R, C) and gain, bias, dgain, dbias (C) share x's dtype; mean, rstd (R) are in the
// compute dtype. Gradient contract: y, mean, rstd, dx, dgain, dbias are written (=).
#include <algorithm>

#include "core/cuda_context.h"
#include "layers/norm.h"

namespace tstl::kernels {

namespace {

using cuda::compute_t;
using cuda::kWarp;
constexpr int kRowsPerBlock = cuda::kBlock / kWarp;

template <bool Centered, class T>
__global__ void norm_forward_kernel(const T* __restrict__ x,       // (R, C)
                                    const T* __restrict__ gain,    // (C)
                                    const T* __restrict__ bias,    // (C) or null
                                    T* __restrict__ y,             // (R, C)
                                    compute_t<T>* __restrict__ mean,  // (R), centred only
                                    compute_t<T>* __restrict__ rstd,  // (R)
                                    int64_t rows, int64_t cols, compute_t<T> eps) {
  using C = compute_t<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / kWarp; r < rows; r += warps) {
    const T* row = x + r * cols;  // (C)
    C m = 0;
    if constexpr (Centered) {
      C sum = 0;
      for (int64_t c = lane; c < cols; c += kWarp) sum += cuda::load(row, c);
      m = cuda::warp_sum(sum) / static_cast<C>(cols);
    }
    C second = 0;
    for (int64_t c = lane; c < cols; c += kWarp) {
      const C centred = cuda::load(row, c) - m;
      second += centred * centred;
    }
    second = cuda::warp_sum(second);
    const C s = C(1) / sqrt(second / static_cast<C>(cols) + eps);
    for (int64_t c = lane; c < cols; c += kWarp) {
      const C b = bias ? cuda::load(bias, c) : C(0);
      cuda::store(y, r * cols + c, norm_output<C>(cuda::load(row, c), m, s, cuda::load(gain, c), b));
    }
    if (lane == 0) {
      if constexpr (Centered) mean[r] = m;
      rstd[r] = s;
    }
  }
}

template <bool Centered, class T>
__global__ void norm_input_grad_kernel(const T* __restrict__ x,             // (R, C)
                                       const T* __restrict__ gain,          // (C)
                                       const compute_t<T>* __restrict__ mean,  // (R), centred only
                                       const compute_t<T>* __restrict__ rstd,  // (R)
                                       const T* __restrict__ dy,            // (R, C)
                                       T* __restrict__ dx,                  // (R, C)
                                       int64_t rows, int64_t cols) {
  using C = compute_t<T>;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / kWarp; r < rows; r += warps) {
    const int64_t base = r * cols;
    const C m = Centered ? mean[r] : C(0), s = rstd[r];
    // The two row means of norm_row_grad_means: <g> and <g xhat>, g = dy * gain.
    C sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = lane; c < cols; c += kWarp) {
      const C g = cuda::load(dy, base + c) * cuda::load(gain, c);
      if constexpr (Centered) sum_g += g;
      sum_g_xhat += g * ((cuda::load(x, base + c) - m) * s);
    }
    const C mean_g = Centered ? cuda::warp_sum(sum_g) / static_cast<C>(cols) : C(0);
    const C mean_g_xhat = cuda::warp_sum(sum_g_xhat) / static_cast<C>(cols);
    for (int64_t c = lane; c < cols; c += kWarp)
      cuda::store(dx, base + c,
                        norm_input_grad<C>(cuda::load(x, base + c), cuda::load(dy, base + c),
                                           cuda::load(gain, c), m, s, mean_g, mean_g_xhat));
  }
}

// Stage 1: partial (chunk, c) = sums over rows [chunk * chunk_rows, ...) of dy * xhat and dy.
template <bool Centered, class T>
__global__ void norm_param_partial_kernel(const T* __restrict__ x,             // (R, C)
                                          const compute_t<T>* __restrict__ mean,  // (R), centred only
                                          const compute_t<T>* __restrict__ rstd,  // (R)
                                          const T* __restrict__ dy,            // (R, C)
                                          compute_t<T>* __restrict__ partial_gain,  // (chunks, C)
                                          compute_t<T>* __restrict__ partial_bias,  // (chunks, C)
                                          int64_t rows, int64_t cols, int64_t chunk_rows) {
  using C = compute_t<T>;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t chunk = blockIdx.y, r0 = chunk * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  C sum_dy_xhat = 0, sum_dy = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const C g = cuda::load(dy, r * cols + c);
    const C m = Centered ? mean[r] : C(0);
    sum_dy_xhat += g * ((cuda::load(x, r * cols + c) - m) * rstd[r]);
    sum_dy += g;
  }
  partial_gain[chunk * cols + c] = sum_dy_xhat;
  partial_bias[chunk * cols + c] = sum_dy;
}

// Stage 2: dgain (C) / dbias (C) = the chunks' partial sums, added in chunk order.
template <class T>
__global__ void norm_param_reduce_kernel(const compute_t<T>* __restrict__ partial_gain,  // (chunks, C)
                                         const compute_t<T>* __restrict__ partial_bias,  // (chunks, C)
                                         T* __restrict__ dgain,                          // (C) or null
                                         T* __restrict__ dbias,                          // (C) or null
                                         int64_t chunks, int64_t cols) {
  using C = compute_t<T>;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    C sum_gain = 0, sum_bias = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      sum_gain += partial_gain[k * cols + c];
      sum_bias += partial_bias[k * cols + c];
    }
    if (dgain) cuda::store(dgain, c, sum_gain);
    if (dbias) cuda::store(dbias, c, sum_bias);
  }
}

template <class P>
P* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<P>() : nullptr;
}

DType compute_dtype(DType activation) { return activation == DType::BF16 ? DType::F32 : activation; }

}  // namespace

void norm_forward_cuda(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& bias, Tensor& y,
                       Tensor& mean, Tensor& rstd) {
  const char* name = args.centered ? "layer_norm" : "rms_norm";
  cuda::check_on_cuda(x, name, "x");
  cuda::check_on_cuda(gain, name, "gain");
  cuda::check_on_cuda(y, name, "y");
  cuda::check_compute_dtype(rstd, x.dtype(), name, "rstd");
  if (args.centered) cuda::check_compute_dtype(mean, x.dtype(), name, "mean");
  if (args.rows == 0) return;
  cuda::visit_cuda_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const unsigned grid = cuda::grid_for(args.rows, kRowsPerBlock);
    const C eps = static_cast<C>(args.eps);
    if (args.centered) {
      norm_forward_kernel<true, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
          x.data<T>(), gain.data<T>(), data_or_null<T>(bias), y.data<T>(), mean.data<C>(), rstd.data<C>(), args.rows,
          args.cols, eps);
    } else {
      norm_forward_kernel<false, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
          x.data<T>(), gain.data<T>(), data_or_null<T>(bias), y.data<T>(), static_cast<C*>(nullptr), rstd.data<C>(),
          args.rows, args.cols, eps);
    }
    CUDA_CHECK_LAUNCH();
  });
}

void norm_backward_cuda(const NormArgs& args, const Tensor& x, const Tensor& gain, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgain, Tensor& dbias) {
  const char* name = args.centered ? "layer_norm backward" : "rms_norm backward";
  cuda::check_on_cuda(x, name, "x");
  cuda::check_on_cuda(dy, name, "dy");
  cuda::check_compute_dtype(rstd, x.dtype(), name, "rstd");
  if (args.rows == 0 || args.cols == 0) return;
  cuda::visit_cuda_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const C* pmean = args.centered ? mean.data<C>() : nullptr;
    if (dx.defined()) {
      const unsigned grid = cuda::grid_for(args.rows, kRowsPerBlock);
      if (args.centered) {
        norm_input_grad_kernel<true, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
            x.data<T>(), gain.data<T>(), pmean, rstd.data<C>(), dy.data<T>(), dx.data<T>(), args.rows, args.cols);
      } else {
        norm_input_grad_kernel<false, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
            x.data<T>(), gain.data<T>(), pmean, rstd.data<C>(), dy.data<T>(), dx.data<T>(), args.rows, args.cols);
      }
      CUDA_CHECK_LAUNCH();
    }
    if (!dgain.defined() && !dbias.defined()) return;
    // At most 4096 chunks of at least 64 rows: the grid's y dimension stays far below its limit.
    const int64_t chunk_rows = std::max<int64_t>(64, (args.rows + 4095) / 4096);
    const int64_t chunks = (args.rows + chunk_rows - 1) / chunk_rows;
    const DType acc = compute_dtype(x.dtype());
    Tensor partial_gain = Tensor::empty({chunks, args.cols}, acc, Device::CUDA);  // (chunks, C)
    Tensor partial_bias = Tensor::empty({chunks, args.cols}, acc, Device::CUDA);  // (chunks, C)
    const dim3 grid(static_cast<unsigned>((args.cols + cuda::kBlock - 1) / cuda::kBlock),
                    static_cast<unsigned>(chunks));
    if (args.centered) {
      norm_param_partial_kernel<true, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
          x.data<T>(), pmean, rstd.data<C>(), dy.data<T>(), partial_gain.data<C>(), partial_bias.data<C>(), args.rows,
          args.cols, chunk_rows);
    } else {
      norm_param_partial_kernel<false, T><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
          x.data<T>(), pmean, rstd.data<C>(), dy.data<T>(), partial_gain.data<C>(), partial_bias.data<C>(), args.rows,
          args.cols, chunk_rows);
    }
    CUDA_CHECK_LAUNCH();
    norm_param_reduce_kernel<T><<<cuda::grid_for(args.cols), cuda::kBlock, 0, cuda::stream()>>>(
        partial_gain.data<C>(), partial_bias.data<C>(), data_or_null<T>(dgain), data_or_null<T>(dbias), chunks,
        args.cols);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
