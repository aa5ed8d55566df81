// AdamW over many tensors in one launch (CUDA: optim/adamw_cuda.cu, with the multi-tensor lists of
// optim/multi_tensor_cuda.h): the whole model's update is one kernel instead of one per parameter.
// Each entry is one parameter: f32 storage, f32 gradient and moments (the update's per-element
// math is optim/adamw.h's adamw_update), and optionally a bf16 copy of the updated parameter to
// write in the same pass (mixed precision: the bf16 weights the next forward reads).
#pragma once

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "optim/adamw.h"

namespace tstl {

struct AdamWTensor {
  float* param = nullptr;              // (n) updated in place
  const float* grad = nullptr;         // (n)
  float* exp_avg = nullptr;            // (n) m, in place
  float* exp_avg_sq = nullptr;         // (n) v, in place
  bf16* param_bf16 = nullptr;          // (n) = bf16(updated param), or null for none
  int64_t n = 0;
  double weight_decay = 0;             // this parameter's (0 when it is excluded from decay)
};

namespace kernels {
// s.weight_decay is ignored: each entry carries its own.
void adamw_multi_step_cuda(const AdamWScalars& s, const std::vector<AdamWTensor>& tensors);
}  // namespace kernels

}  // namespace tstl
