// Model cost accounting shared by `tstl info` and the trainer's MFU (formulas in train/model_cost.cpp).
#pragma once

#include <cstdint>

#include "layers/decoder.h"

namespace tstl {

struct ModelCost {
  int64_t parameters = 0, non_embedding = 0, matmul_parameters = 0;
  double flops_per_token = 0;  // training: forward + backward
  double weight_bytes = 0, gradient_bytes = 0, optimizer_bytes = 0, activation_bytes = 0;
  double total_bytes() const { return weight_bytes + gradient_bytes + optimizer_bytes + activation_bytes; }
};

ModelCost model_cost(const ModelConfig& model, int64_t batch, int64_t seq_len);

}  // namespace tstl
