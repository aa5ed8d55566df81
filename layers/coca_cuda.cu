// CoCA prologue on CUDA: the four parts (released query/key, strict query/key) forward and
// backward, one thread per plane (i, i+h), with the per-plane math of layers/coca.h. The part is
// a template parameter so each kernel is branch-free. x, g, out, dx (B, H, N, d) in f32, bf16 or
// f64; cos/sin (N, h) in the compute dtype. Gradient contract: out and dx are written (=).
#include "core/cuda_context.h"
#include "layers/coca.h"

namespace tstl::kernels {

namespace {

using cuda::compute_t;

template <CocaPart P, class C>
__device__ __forceinline__ void forward_plane(C x0, C x1, C c, C s, C& y0, C& y1) {
  if constexpr (P == CocaPart::Query) coca_query_plane(x0, x1, c, s, y0, y1);
  if constexpr (P == CocaPart::Key) coca_key_plane(x0, x1, c, s, y0, y1);
  if constexpr (P == CocaPart::StrictQuery) coca_strict_query_plane(x0, x1, c, s, y0, y1);
  if constexpr (P == CocaPart::StrictKey) coca_strict_key_plane(x0, x1, c, s, y0, y1);
}

template <CocaPart P, class C>
__device__ __forceinline__ void backward_plane(C x0, C x1, C c, C s, C g0, C g1, C& d0, C& d1) {
  if constexpr (P == CocaPart::Query) coca_query_plane_backward(x0, x1, c, s, g0, g1, d0, d1);
  if constexpr (P == CocaPart::Key) coca_key_plane_backward(x0, x1, c, s, g0, g1, d0, d1);
  if constexpr (P == CocaPart::StrictQuery) coca_strict_query_plane_backward(x0, x1, c, s, g0, g1, d0, d1);
  if constexpr (P == CocaPart::StrictKey) coca_strict_key_plane_backward(x0, x1, c, s, g0, g1, d0, d1);
}

// Backward = false: out = part(x). Backward = true: out = dx of part at x for the gradient g.
// Plane e = (row r, plane i); row r sits at sequence index r % N.
template <CocaPart P, bool Backward, class T>
__global__ void coca_kernel(const T* __restrict__ x,              // (B, H, N, d)
                            const compute_t<T>* __restrict__ cos,  // (N, h)
                            const compute_t<T>* __restrict__ sin,  // (N, h)
                            const T* __restrict__ g,              // (B, H, N, d), backward only
                            T* __restrict__ out,                  // (B, H, N, d)
                            int64_t planes, int64_t n, int64_t h) {
  using C = compute_t<T>;
  const int64_t d = 2 * h;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < planes;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / h, i = e % h;
    const int64_t a = r * d + i, b = a + h, t = (r % n) * h + i;
    const C x0 = cuda::load(x, a), x1 = cuda::load(x, b);
    C y0, y1;
    if constexpr (Backward) {
      backward_plane<P>(x0, x1, cos[t], sin[t], cuda::load(g, a), cuda::load(g, b), y0, y1);
    } else {
      forward_plane<P>(x0, x1, cos[t], sin[t], y0, y1);
    }
    cuda::store(out, a, y0);
    cuda::store(out, b, y1);
  }
}

template <bool Backward>
void launch(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor* g, Tensor& out,
            const char* name) {
  cuda::check_on_cuda(x, name, "x");
  cuda::check_on_cuda(cos, name, "cos");
  cuda::check_on_cuda(sin, name, "sin");
  cuda::check_on_cuda(out, name, "out");
  if (g) cuda::check_on_cuda(*g, name, "g");
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
    const T* pg = g ? g->data<T>() : nullptr;
    T* po = out.data<T>();
    const unsigned grid = cuda::grid_for(planes);
    const cudaStream_t stream = cuda::stream();
    switch (part) {
      case CocaPart::Query:
        coca_kernel<CocaPart::Query, Backward, T><<<grid, cuda::kBlock, 0, stream>>>(px, pc, ps, pg, po, planes, n, h);
        break;
      case CocaPart::Key:
        coca_kernel<CocaPart::Key, Backward, T><<<grid, cuda::kBlock, 0, stream>>>(px, pc, ps, pg, po, planes, n, h);
        break;
      case CocaPart::StrictQuery:
        coca_kernel<CocaPart::StrictQuery, Backward, T>
            <<<grid, cuda::kBlock, 0, stream>>>(px, pc, ps, pg, po, planes, n, h);
        break;
      case CocaPart::StrictKey:
        coca_kernel<CocaPart::StrictKey, Backward, T>
            <<<grid, cuda::kBlock, 0, stream>>>(px, pc, ps, pg, po, planes, n, h);
        break;
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void coca_forward_cuda(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out) {
  launch<false>(part, x, cos, sin, nullptr, out, "coca_forward");
}

void coca_backward_cuda(CocaPart part, const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& g,
                        Tensor& dx) {
  launch<true>(part, x, cos, sin, &g, dx, "coca_backward");
}

}  // namespace tstl::kernels
