// Model cost accounting shared by `tstl info` and the trainer's MFU.
//
// FLOPs per token of a training step (forward + backward = 3 x forward, a multiply-add counted as
// 2 FLOPs): 6 * N_matmul + 12 * layers * hidden * seq_len, where N_matmul counts every parameter
// that takes part in a matrix product (all but the input embedding, whose lookup is free, and the
// norms and biases, whose cost is negligible) and the second term is the attention scores and the
// weighted sum of values (QK^T and PV, counted over the full length as in PaLM's appendix B).
//
// Training memory (f32 on the CPU): weights 4 B, gradients 4 B, AdamW moments 8 B per parameter,
// and the activations the backward keeps, per token: each block saves its input, the two norm
// outputs, q/k/v before and after the prologue, the attention output before and after the head
// merge, and the MLP pre-activation (about 12 hidden + ffn floats), plus the final norm's input
// and output and the logits (2 hidden + vocab).
#include "train/model_cost.h"

namespace tstl {

ModelCost model_cost(const ModelConfig& m, int64_t batch, int64_t seq_len) {
  ModelCost c;
  for (const auto& [name, shape] : parameter_shapes(m)) {
    const int64_t n = shape_numel(shape);
    c.parameters += n;
    const bool embedding = name == "gpt_neox.embed_in.weight" || name == "embed_out.weight";
    if (!embedding) c.non_embedding += n;
    if (name != "gpt_neox.embed_in.weight" && shape.size() == 2) c.matmul_parameters += n;
  }
  c.flops_per_token = 6.0 * static_cast<double>(c.matmul_parameters) +
                      12.0 * static_cast<double>(m.layers * m.hidden * seq_len);
  const double tokens = static_cast<double>(batch * seq_len);
  c.weight_bytes = 4.0 * static_cast<double>(c.parameters);
  c.gradient_bytes = c.weight_bytes;
  c.optimizer_bytes = 2.0 * c.weight_bytes;
  c.activation_bytes = 4.0 * tokens *
                       (static_cast<double>(m.layers) * static_cast<double>(12 * m.hidden + m.ffn) +
                        static_cast<double>(2 * m.hidden + m.vocab_size));
  return c;
}

}  // namespace tstl
