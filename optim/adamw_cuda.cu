// CUDA kernels of the fused AdamW update: every parameter of a list in one launch
// (optim/adamw_multi_tensor.h, optim/multi_tensor_cuda.h), one thread per element in a
// grid-stride loop, the per-element math shared with the CPU kernel (optim/adamw.h). f32
// parameters, gradients and moments; an optional bf16 copy of each updated parameter.
#include <algorithm>

#include "core/cuda_context.h"
#include "optim/adamw_multi_tensor.h"
#include "optim/multi_tensor_cuda.h"

namespace tstl::kernels {

namespace {
constexpr int kThreads = 256, kBlocks = 1024;

using AdamWList = cuda::TensorList<AdamWScalars, AdamWTensor>;

__global__ void adamw_multi_kernel(AdamWList list) {
  for (int t = 0; t < list.count; ++t) {
    const AdamWTensor& e = list.entries[t];
    AdamWScalars s = list.header;
    s.weight_decay = e.weight_decay;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < e.n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      adamw_update(e.param[i], e.grad[i], e.exp_avg[i], e.exp_avg_sq[i], s);
      if (e.param_bf16) e.param_bf16[i] = float_to_bf16(e.param[i]);
    }
  }
}
}  // namespace

void adamw_multi_step_cuda(const AdamWScalars& s, const std::vector<AdamWTensor>& tensors) {
  int64_t largest = 0;
  for (const AdamWTensor& e : tensors) largest = e.n > largest ? e.n : largest;
  if (largest == 0) return;
  const unsigned blocks = std::min(cuda::grid_for(largest, kThreads), static_cast<unsigned>(kBlocks));
  cuda::for_each_launch(s, tensors, [&](const AdamWList& list, int) {
    adamw_multi_kernel<<<blocks, kThreads, 0, cuda::stream()>>>(list);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
