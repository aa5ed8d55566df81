// RoPE on CUDA: out = c R_p x (forward) or c R_p^T x (its backward), one thread per rotation
// plane, with the per-plane math of layers/rope.h. x, out (B, H, N, d) in f32, bf16 or f64;
// cos/sin (N, h) in the compute dtype (f32 for bf16 activations). Gradient contract: out is
// written (=).
#include "core/cuda_context.h"
#include "layers/rope.h"

namespace tstl::kernels {

namespace {

using cuda::compute_t;

// Plane e = (row r, plane i) of rows = B*H*N rows; row r sits at sequence index r % N.
template <class T, bool Transposed>
__global__ void rope_apply_kernel(const T* __restrict__ x,              // (B, H, N, d)
                                  const compute_t<T>* __restrict__ cos,  // (N, h)
                                  const compute_t<T>* __restrict__ sin,  // (N, h)
                                  T* __restrict__ out,                   // (B, H, N, d)
                                  int64_t planes, int64_t n, int64_t h) {
  using C = compute_t<T>;
  const int64_t d = 2 * h;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < planes;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / h, i = e % h;
    const int64_t a = r * d + i, b = a + h, t = (r % n) * h + i;
    const C x0 = cuda::load(x, a), x1 = cuda::load(x, b);
    C y0, y1;
    if constexpr (Transposed) {
      rope_rotate_plane_transposed(x0, x1, cos[t], sin[t], y0, y1);
    } else {
      rope_rotate_plane(x0, x1, cos[t], sin[t], y0, y1);
    }
    cuda::store(out, a, y0);
    cuda::store(out, b, y1);
  }
}

}  // namespace

void rope_apply_cuda(const Tensor& x, const Tensor& cos, const Tensor& sin, bool transposed, Tensor& out) {
  const char* name = "rope_apply";
  cuda::check_on_cuda(x, name, "x");
  cuda::check_on_cuda(cos, name, "cos");
  cuda::check_on_cuda(sin, name, "sin");
  cuda::check_on_cuda(out, name, "out");
  cuda::check_compute_dtype(cos, x.dtype(), name, "cos");
  cuda::check_compute_dtype(sin, x.dtype(), name, "sin");
  const int64_t n = x.size(2), h = x.size(3) / 2, planes = x.numel() / 2;
  if (planes == 0) return;
  cuda::visit_cuda_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const T* px = x.data<T>();
    const C* pc = cos.data<C>();
    const C* ps = sin.data<C>();
    T* po = out.data<T>();
    const unsigned grid = cuda::grid_for(planes);
    if (transposed) {
      rope_apply_kernel<T, true><<<grid, cuda::kBlock, 0, cuda::stream()>>>(px, pc, ps, po, planes, n, h);
    } else {
      rope_apply_kernel<T, false><<<grid, cuda::kBlock, 0, cuda::stream()>>>(px, pc, ps, po, planes, n, h);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
