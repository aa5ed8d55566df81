// CPU kernels of the elementwise, reduction, layout and random-fill ops (OpenMP over elements).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/elementwise.h"
#include "core/kernels.h"
#include "core/reduce.h"
#include "core/vec_math.h"

namespace tstl::kernels {

void cuda_not_compiled(const char* kernel) {
  TSTL_FAIL("kernel ", kernel, " was given a CUDA tensor, but this tstl was built without the CUDA backend");
}

void binary_cpu(Binary op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.numel(), row = b.numel();  // row == n when shapes match
  if (n == 0) return;
  TSTL_CHECK(row > 0 && n % row == 0, "binary: ", row, " elements of b do not tile ", n, " of a");
  const int64_t rows = n / row;  // b repeats over the rows of a; out may alias a
  visit_float(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    // Row by row, so that the inner loop is contiguous in all three and vectorises (an index
    // modulo the row length per element kept it scalar).
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = pa + r * row;
      T* orow = po + r * row;
      for (int64_t i = 0; i < row; ++i) orow[i] = binary_apply(op, ar[i], pb[i]);
    }
  });
}

void sum_rows_cpu(const Tensor& x, Tensor& out) {
  const int64_t cols = out.numel(), rows = cols ? x.numel() / cols : 0;
  constexpr int64_t kBlock = 64;  // columns per task: a row of accumulators stays in registers/L1
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    // Each column is summed over rows 0, 1, ..., R-1 in that order, whatever the thread count;
    // 64 columns advance together row by row, so x is read contiguously (one column at a time
    // read it with a stride of C).
#pragma omp parallel for schedule(static) if (cols * rows > 32768)
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t width = std::min(kBlock, cols - c0);
      double acc[kBlock] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = px + r * cols + c0;
        for (int64_t c = 0; c < width; ++c) acc[c] += xr[c];
      }
      for (int64_t c = 0; c < width; ++c) po[c0 + c] = static_cast<T>(acc[c]);
    }
  });
}

void scale_cpu(const Tensor& x, double s, Tensor& out) {
  const int64_t n = x.numel();
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) po[i] = static_cast<T>(px[i] * s);
  });
}

// GELU: f32 through core/vec_math.h (vectorised; within a few 1e-6 relative of the exact
// x Phi(x), tests/core/test_cpu_kernels.cpp), f64 through the exact TSTL_HD math of
// core/elementwise.h (gradient checks).
namespace {
template <class T>
TSTL_ALWAYS_INLINE void gelu_value_and_derivative(T x, T& value, T& derivative) {
  if constexpr (std::is_same_v<T, float>) {
    vec::gelu_and_derivative_f32(x, value, derivative);
  } else {
    value = gelu_value(x);
    derivative = gelu_derivative(x);
  }
}
template <class T>
TSTL_ALWAYS_INLINE T gelu_derivative_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vec::gelu_derivative_f32(x);
  } else {
    return gelu_derivative(x);
  }
}
template <class T>
TSTL_ALWAYS_INLINE T gelu_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return vec::gelu_f32(x);
  } else {
    return gelu_value(x);
  }
}
}  // namespace

void gelu_forward_cpu(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i) py[i] = gelu_of(px[i]);
  });
}

void gelu_backward_cpu(const Tensor& x, const Tensor& dy, Tensor& dx) {
  const int64_t n = x.numel();
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pdy = dy.data<T>();
    T* pdx = dx.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i) pdx[i] = pdy[i] * gelu_derivative_of(px[i]);
  });
}

void bias_gelu_forward_cpu(Tensor& h, const Tensor& bias, Tensor& y) {
  const int64_t cols = bias.numel(), rows = cols ? h.numel() / cols : 0;
  TSTL_CHECK(cols > 0 ? h.numel() % cols == 0 : h.numel() == 0, "bias_gelu_forward: ", cols,
             " biases do not tile ", h.numel(), " values");
  visit_float(h.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* ph = h.data<T>();
    const T* pb = bias.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (rows * cols > 8192)
    for (int64_t r = 0; r < rows; ++r) {
      T* hr = ph + r * cols;
      T* yr = py + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        hr[c] += pb[c];
        yr[c] = gelu_of(hr[c]);
      }
    }
  });
}

void gelu_with_backward_cpu(const Tensor& x, const Tensor& dy, Tensor& y, Tensor& dx) {
  const int64_t n = x.numel();
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pdy = dy.data<T>();
    T* py = y.data<T>();
    T* pdx = dx.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i) {
      T derivative;
      gelu_value_and_derivative(px[i], py[i], derivative);
      pdx[i] = pdy[i] * derivative;
    }
  });
}

void sum_all_cpu(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    // Fixed blocks summed in order, then the blocks in order: the same bits for any thread count.
    const double total = reduce_in_blocks<double>(n, [px](int64_t begin, int64_t end) {
      double acc = 0;
      for (int64_t i = begin; i < end; ++i) acc += px[i];
      return acc;
    });
    out.data<T>()[0] = static_cast<T>(total);
  });
}

void broadcast_scalar_cpu(const Tensor& s, double factor, Tensor& out) {
  visit_float(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = static_cast<T>(s.data<T>()[0] * factor);
    std::fill_n(out.data<T>(), out.numel(), v);
  });
}

void permute_cpu(const Tensor& x, const std::vector<int64_t>& dims, Tensor& out) {
  const int64_t rank = x.dim(), n = x.numel();
  // in_stride_of_out[i]: how far one step along output dim i moves in the input.
  std::vector<int64_t> in_strides(static_cast<size_t>(rank), 1), step(static_cast<size_t>(rank));
  for (int64_t i = rank - 2; i >= 0; --i) in_strides[i] = in_strides[i + 1] * x.shape()[i + 1];
  for (int64_t i = 0; i < rank; ++i) step[i] = in_strides[dims[i]];
  const Shape& os = out.shape();
  const size_t elem = dtype_size(x.dtype());
  const char* px = static_cast<const char*>(x.raw());
  char* po = static_cast<char*>(out.raw());
  const int64_t inner = rank ? os[rank - 1] : 1, outer = rank ? n / std::max<int64_t>(inner, 1) : 1;
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    int64_t rem = o, src = 0;
    for (int64_t i = rank - 2; i >= 0; --i) {
      src += (rem % os[i]) * step[i];
      rem /= os[i];
    }
    const int64_t inner_step = rank ? step[rank - 1] : 0;
    for (int64_t j = 0; j < inner; ++j)
      std::memcpy(po + (o * inner + j) * elem, px + (src + j * inner_step) * elem, elem);
  }
}

void narrow_cpu(const Tensor& x, int64_t dim, int64_t start, Tensor& slice, bool backward) {
  const Shape& s = x.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= s[i];
  for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= s[i];
  const int64_t full = s[dim], part = slice.size(dim);
  const size_t elem = dtype_size(x.dtype()), chunk = static_cast<size_t>(part * inner) * elem;
  char* px = static_cast<char*>(x.raw());
  char* ps = static_cast<char*>(slice.raw());
#pragma omp parallel for schedule(static) if (outer * part * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    char* xo = px + static_cast<size_t>((o * full + start) * inner) * elem;
    char* so = ps + static_cast<size_t>(o) * chunk;
    if (backward) {
      std::memcpy(xo, so, chunk);
    } else {
      std::memcpy(so, xo, chunk);
    }
  }
}

void cast_cpu(const Tensor& x, Tensor& out) {
  const int64_t n = x.numel();
  auto convert = [&](auto in_tag, auto out_tag) {
    using In = decltype(in_tag);
    using Out = decltype(out_tag);
    const In* px = x.data<In>();
    Out* po = out.data<Out>();
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; ++i) {
      double wide;  // exact for every f32, f64 and bf16 value
      if constexpr (std::is_same_v<In, bf16>) {
        wide = bf16_to_float(px[i]);
      } else {
        wide = px[i];
      }
      if constexpr (std::is_same_v<Out, bf16>) {
        po[i] = float_to_bf16(static_cast<float>(wide));  // f64 -> bf16 through f32, as the CUDA store does
      } else {
        po[i] = static_cast<Out>(wide);
      }
    }
  };
  auto visit = [&](DType t, auto&& fn) {
    switch (t) {
      case DType::F32: fn(float{}); return;
      case DType::F64: fn(double{}); return;
      case DType::BF16: fn(bf16{}); return;
      default: TSTL_FAIL("cast: expected dtype f32, f64 or bf16, got ", dtype_name(t));
    }
  };
  visit(x.dtype(), [&](auto in_tag) { visit(out.dtype(), [&](auto out_tag) { convert(in_tag, out_tag); }); });
}

void dropout_cpu(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) {
  const int64_t n = x.numel();
  const double keep_scale = 1.0 / (1.0 - p);
  visit_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i)
      py[i] = dropout_keep(seed, offset + static_cast<uint64_t>(i), p) ? static_cast<T>(px[i] * keep_scale) : T(0);
  });
}

void normal_fill_cpu(Tensor& t, uint64_t seed, uint64_t offset, double mean, double std) {
  const int64_t n = t.numel();
  visit_float(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(mean + std * normal_at(seed, offset + static_cast<uint64_t>(i)));
  });
}

void uniform_fill_cpu(Tensor& t, uint64_t seed, uint64_t offset, double low, double high) {
  const int64_t n = t.numel();
  visit_float(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
#pragma omp parallel for schedule(static) if (n > 8192)
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<T>(low + (high - low) * uniform_at(seed, offset + static_cast<uint64_t>(i)));
  });
}

}  // namespace tstl::kernels
