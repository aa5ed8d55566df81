// CUDA kernel of the fused AdamW update: one thread per element (grid-stride), the per-element
// math shared with the CPU kernel (optim/adamw.h). f32 parameters, gradients and moments.
#include "core/cuda_backend.h"
#include "core/cuda_check.h"
#include "optim/adamw.h"

namespace tstl::kernels {

namespace {
__global__ void adamw_kernel(AdamWScalars s, float* p, const float* g, float* m, float* v, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    adamw_update(p[i], g[i], m[i], v[i], s);
}
}  // namespace

void adamw_step_cuda(const AdamWScalars& s, Tensor& p, const Tensor& g, Tensor& m, Tensor& v) {
  TSTL_CHECK(p.dtype() == DType::F32, "adamw on CUDA expects f32 parameters, got ", dtype_name(p.dtype()));
  const int64_t n = p.numel();
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks_needed = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(blocks_needed < 65535 ? blocks_needed : 65535);
  adamw_kernel<<<blocks, threads, 0, cuda::stream()>>>(s, p.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tstl::kernels
