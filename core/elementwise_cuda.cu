// CUDA kernels of the elementwise, reduction, layout and random-fill ops: the twins of
// elementwise_cpu.cpp, calling the same TSTL_HD math (core/elementwise.h, core/rng.h) so that
// values match the CPU's. Dtypes f32, f64 and bf16 (loaded as f32, computed in f32, stored as
// bf16). Gradient contract as in core/kernels.h: every output is written (=).
// Reductions are deterministic: fixed launch shapes (functions of the sizes only) and fixed-order
// shared-memory trees, accumulating in double as the CPU does; no atomics on floats.
#include <algorithm>

#include "core/cuda_context.h"
#include "core/elementwise.h"
#include "core/kernels.h"

namespace tstl::kernels {

using cuda::compute_t;
using cuda::load;
using cuda::store;

namespace {

constexpr int kMaxRank = 8;

#define TSTL_GRID_STRIDE(i, n)                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// ---- Kernels ------------------------------------------------------------------------------

// Elements widened to the compute type on load and rounded (to nearest even for bf16) on store.
template <class In, class Out>
__global__ void cast_kernel(const In* x, Out* out, int64_t n) {
  TSTL_GRID_STRIDE(i, n) { store(out, i, load(x, i)); }
}

template <class T>
__global__ void binary_kernel(Binary op, const T* a, const T* b, T* out, int64_t n, int64_t row) {
  TSTL_GRID_STRIDE(i, n) {
    store(out, i, binary_apply(op, load(a, i), load(b, row == n ? i : i % row)));
  }
}

// h += bias (row broadcast, in place), then y = gelu(h) from the stored (rounded) h, as the
// separate add and gelu kernels would compute it.
template <class T>
__global__ void bias_gelu_forward_kernel(T* h, const T* bias, T* y, int64_t n, int64_t cols) {
  TSTL_GRID_STRIDE(i, n) {
    store(h, i, load(h, i) + load(bias, i % cols));
    store(y, i, gelu_value(load(h, i)));
  }
}

template <class T>
__global__ void gelu_with_backward_kernel(const T* x, const T* dy, T* y, T* dx, int64_t n) {
  TSTL_GRID_STRIDE(i, n) {
    const auto v = load(x, i);
    store(y, i, gelu_value(v));
    store(dx, i, load(dy, i) * gelu_derivative(v));
  }
}

// Block (32, kRowThreads): threadIdx.x picks a column of this block's 32, threadIdx.y a residue
// class of rows; the kRowThreads partial sums are then added in a fixed order.
constexpr int kRowThreads = 16;
template <class T>
__global__ void sum_rows_kernel(const T* x, T* out, int64_t rows, int64_t cols) {
  __shared__ double partial[kRowThreads][32];
  const int64_t c = blockIdx.x * 32LL + threadIdx.x;
  double acc = 0;
  if (c < cols)
    for (int64_t r = threadIdx.y; r < rows; r += kRowThreads) acc += load(x, r * cols + c);
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double total = 0;
    for (int y = 0; y < kRowThreads; ++y) total += partial[y][threadIdx.x];
    store(out, c, total);
  }
}

template <class T>
__global__ void scale_kernel(const T* x, double s, T* out, int64_t n) {
  TSTL_GRID_STRIDE(i, n) { store(out, i, static_cast<double>(load(x, i)) * s); }
}

template <class T>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n) {
  TSTL_GRID_STRIDE(i, n) { store(y, i, gelu_value(load(x, i))); }
}

template <class T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, T* dx, int64_t n) {
  TSTL_GRID_STRIDE(i, n) { store(dx, i, load(dy, i) * gelu_derivative(load(x, i))); }
}

// Sums the kBlock values of `shared` in a fixed tree; the result is in shared[0].
__device__ void block_tree_sum(double* shared) {
  for (int width = cuda::kBlock / 2; width > 0; width /= 2) {
    __syncthreads();
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
  }
  __syncthreads();
}

// Pass 1: each block sums its grid-stride share of x into partial[blockIdx.x].
template <class T>
__global__ void sum_partial_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[cuda::kBlock];
  double acc = 0;
  TSTL_GRID_STRIDE(i, n) { acc += load(x, i); }
  shared[threadIdx.x] = acc;
  block_tree_sum(shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// Pass 2: one block sums the partials.
template <class T>
__global__ void sum_final_kernel(const double* partial, int64_t blocks, T* out) {
  __shared__ double shared[cuda::kBlock];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < blocks; i += blockDim.x) acc += partial[i];
  shared[threadIdx.x] = acc;
  block_tree_sum(shared);
  if (threadIdx.x == 0) store(out, 0, shared[0]);
}

template <class T>
__global__ void broadcast_scalar_kernel(const T* s, double factor, T* out, int64_t n) {
  const double v = static_cast<double>(load(s, 0)) * factor;
  TSTL_GRID_STRIDE(i, n) { store(out, i, v); }
}

struct PermuteParams {
  int rank = 0;
  int64_t out_shape[kMaxRank] = {};
  int64_t in_step[kMaxRank] = {};  // input stride of one step along each output dim
};

template <class U>
__global__ void permute_kernel(const U* x, U* out, int64_t n, PermuteParams p) {
  TSTL_GRID_STRIDE(i, n) {
    int64_t rem = i, src = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      src += (rem % p.out_shape[d]) * p.in_step[d];
      rem /= p.out_shape[d];
    }
    out[i] = x[src];
  }
}

// x viewed as (outer, full, inner), the slice as (outer, part, inner) at offset `start`.
struct NarrowParams {
  int64_t outer = 1, full = 0, part = 0, inner = 1, start = 0;
};

template <class U>
__global__ void narrow_forward_kernel(const U* x, U* slice, NarrowParams p) {
  const int64_t n = p.outer * p.part * p.inner;
  TSTL_GRID_STRIDE(i, n) {
    const int64_t o = i / (p.part * p.inner), rem = i % (p.part * p.inner);
    slice[i] = x[(o * p.full + p.start) * p.inner + rem];
  }
}

// Writes the slice into x at [start, start + part) of the middle dimension; the rest of x is
// left untouched (the op zeroes x first where the rest must be 0: narrow's backward).
template <class U>
__global__ void narrow_backward_kernel(U* x, const U* slice, NarrowParams p) {
  const int64_t n = p.outer * p.part * p.inner;
  TSTL_GRID_STRIDE(i, n) {
    const int64_t o = i / (p.part * p.inner), rem = i % (p.part * p.inner);
    x[(o * p.full + p.start) * p.inner + rem] = slice[i];
  }
}

template <class T>
__global__ void dropout_kernel(const T* x, double p, uint64_t seed, uint64_t offset, T* y, int64_t n) {
  const double keep_scale = 1.0 / (1.0 - p);
  TSTL_GRID_STRIDE(i, n) {
    if (dropout_keep(seed, offset + static_cast<uint64_t>(i), p)) {
      store(y, i, static_cast<double>(load(x, i)) * keep_scale);
    } else {
      store(y, i, 0.0);
    }
  }
}

template <class T>
__global__ void normal_fill_kernel(T* t, uint64_t seed, uint64_t offset, double mean, double std, int64_t n) {
  TSTL_GRID_STRIDE(i, n) { store(t, i, mean + std * normal_at(seed, offset + static_cast<uint64_t>(i))); }
}

template <class T>
__global__ void uniform_fill_kernel(T* t, uint64_t seed, uint64_t offset, double low, double high, int64_t n) {
  TSTL_GRID_STRIDE(i, n) {
    store(t, i, low + (high - low) * uniform_at(seed, offset + static_cast<uint64_t>(i)));
  }
}

#undef TSTL_GRID_STRIDE

template <class T>
const T* in(const Tensor& t) {
  return static_cast<const T*>(t.raw());
}
template <class T>
T* out_ptr(const Tensor& t) {
  return static_cast<T*>(t.raw());
}

}  // namespace

// ---- Launchers ----------------------------------------------------------------------------

void binary_cuda(Binary op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel(), row = b.numel();  // row == n when shapes match
  if (n == 0) return;
  TSTL_CHECK(row > 0 && n % row == 0, "binary (CUDA): ", row, " elements of b do not tile ", n, " of a");
  cuda::visit_cuda_float(a.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(op, in<T>(a), in<T>(b), out_ptr<T>(out),
                                                                             n, row);
    CUDA_CHECK_LAUNCH();
  });
}

void sum_rows_cuda(const Tensor& x, Tensor& out) {
  const int64_t cols = out.numel(), rows = cols ? x.numel() / cols : 0;
  if (cols == 0) return;
  cuda::visit_cuda_float(x.dtype(), "sum_rows", [&](auto tag) {
    using T = decltype(tag);
    const dim3 block(32, kRowThreads), grid(static_cast<unsigned>((cols + 31) / 32));
    sum_rows_kernel<T><<<grid, block, 0, cuda::stream()>>>(in<T>(x), out_ptr<T>(out), rows, cols);
    CUDA_CHECK_LAUNCH();
  });
}

void scale_cuda(const Tensor& x, double s, Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<T>(x), s, out_ptr<T>(out), n);
    CUDA_CHECK_LAUNCH();
  });
}

void gelu_forward_cuda(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "gelu_forward", [&](auto tag) {
    using T = decltype(tag);
    gelu_forward_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<T>(x), out_ptr<T>(y), n);
    CUDA_CHECK_LAUNCH();
  });
}

void gelu_backward_cuda(const Tensor& x, const Tensor& dy, Tensor& dx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "gelu_backward", [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<T>(x), in<T>(dy),
                                                                                   out_ptr<T>(dx), n);
    CUDA_CHECK_LAUNCH();
  });
}

void bias_gelu_forward_cuda(Tensor& h, const Tensor& bias, Tensor& y) {
  const int64_t n = h.numel(), cols = bias.numel();
  if (n == 0) return;
  TSTL_CHECK(cols > 0 && n % cols == 0, "bias_gelu_forward (CUDA): ", cols, " biases do not tile ", n, " values");
  cuda::visit_cuda_float(h.dtype(), "bias_gelu_forward", [&](auto tag) {
    using T = decltype(tag);
    bias_gelu_forward_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(
        out_ptr<T>(h), in<T>(bias), out_ptr<T>(y), n, cols);
    CUDA_CHECK_LAUNCH();
  });
}

void gelu_with_backward_cuda(const Tensor& x, const Tensor& dy, Tensor& y, Tensor& dx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "gelu_with_backward", [&](auto tag) {
    using T = decltype(tag);
    gelu_with_backward_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(
        in<T>(x), in<T>(dy), out_ptr<T>(y), out_ptr<T>(dx), n);
    CUDA_CHECK_LAUNCH();
  });
}

void sum_all_cuda(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  // At most 1024 partial sums; the block count depends on n only, so the order is fixed.
  const int64_t blocks = std::min<int64_t>(std::max<int64_t>((n + cuda::kBlock - 1) / cuda::kBlock, 1), 1024);
  cuda::DeviceBuffer partial(static_cast<size_t>(blocks) * sizeof(double));  // (blocks,) f64
  cuda::visit_cuda_float(x.dtype(), "sum_all", [&](auto tag) {
    using T = decltype(tag);
    sum_partial_kernel<T><<<static_cast<unsigned>(blocks), cuda::kBlock, 0, cuda::stream()>>>(in<T>(x), n,
                                                                                             partial.as<double>());
    CUDA_CHECK_LAUNCH();
    sum_final_kernel<T><<<1, cuda::kBlock, 0, cuda::stream()>>>(partial.as<double>(), blocks, out_ptr<T>(out));
    CUDA_CHECK_LAUNCH();
  });
}

void broadcast_scalar_cuda(const Tensor& s, double factor, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  TSTL_CHECK(s.dtype() == out.dtype(), "broadcast_scalar (CUDA): dtypes differ: ", dtype_name(s.dtype()), " and ",
             dtype_name(out.dtype()));
  cuda::visit_cuda_float(out.dtype(), "broadcast_scalar", [&](auto tag) {
    using T = decltype(tag);
    broadcast_scalar_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<T>(s), factor,
                                                                                       out_ptr<T>(out), n);
    CUDA_CHECK_LAUNCH();
  });
}

void permute_cuda(const Tensor& x, const std::vector<int64_t>& dims, Tensor& out) {
  const int64_t rank = x.dim(), n = x.numel();
  TSTL_CHECK(rank <= kMaxRank, "permute (CUDA): rank ", rank, " above the supported ", kMaxRank);
  if (n == 0) return;
  PermuteParams p;
  p.rank = static_cast<int>(rank);
  int64_t in_strides[kMaxRank];
  for (int64_t i = rank - 1, stride = 1; i >= 0; --i) {
    in_strides[i] = stride;
    stride *= x.shape()[i];
  }
  for (int64_t i = 0; i < rank; ++i) {
    p.out_shape[i] = out.shape()[i];
    p.in_step[i] = in_strides[dims[i]];
  }
  cuda::visit_element_size(dtype_size(x.dtype()), "permute", [&](auto tag) {
    using U = decltype(tag);
    permute_kernel<U><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<U>(x), out_ptr<U>(out), n, p);
    CUDA_CHECK_LAUNCH();
  });
}

void narrow_cuda(const Tensor& x, int64_t dim, int64_t start, Tensor& slice, bool backward) {
  NarrowParams p;
  for (int64_t i = 0; i < dim; ++i) p.outer *= x.shape()[i];
  for (int64_t i = dim + 1; i < x.dim(); ++i) p.inner *= x.shape()[i];
  p.full = x.shape()[dim];
  p.part = slice.size(dim);
  p.start = start;
  const int64_t n = slice.numel();
  if (n == 0) return;
  cuda::visit_element_size(dtype_size(x.dtype()), "narrow", [&](auto tag) {
    using U = decltype(tag);
    if (backward) {
      narrow_backward_kernel<U><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(out_ptr<U>(x), in<U>(slice), p);
    } else {
      narrow_forward_kernel<U><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<U>(x), out_ptr<U>(slice), p);
    }
    CUDA_CHECK_LAUNCH();
  });
}

void cast_cuda(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "cast", [&](auto in_tag) {
    cuda::visit_cuda_float(out.dtype(), "cast", [&](auto out_tag) {
      using In = decltype(in_tag);
      using Out = decltype(out_tag);
      cast_kernel<<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(static_cast<const In*>(x.raw()),
                                                                          static_cast<Out*>(out.raw()), n);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void dropout_cuda(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    dropout_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(in<T>(x), p, seed, offset,
                                                                             out_ptr<T>(y), n);
    CUDA_CHECK_LAUNCH();
  });
}

void normal_fill_cuda(Tensor& t, uint64_t seed, uint64_t offset, double mean, double std) {
  const int64_t n = t.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(t.dtype(), "normal_fill", [&](auto tag) {
    using T = decltype(tag);
    normal_fill_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(out_ptr<T>(t), seed, offset, mean,
                                                                                 std, n);
    CUDA_CHECK_LAUNCH();
  });
}

void uniform_fill_cuda(Tensor& t, uint64_t seed, uint64_t offset, double low, double high) {
  const int64_t n = t.numel();
  if (n == 0) return;
  cuda::visit_cuda_float(t.dtype(), "uniform_fill", [&](auto tag) {
    using T = decltype(tag);
    uniform_fill_kernel<T><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(out_ptr<T>(t), seed, offset, low,
                                                                                  high, n);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
