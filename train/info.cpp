// `tstl info --config FILE [--section.key value ...]`: what a config's model costs.
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
#include <cstdio>

#include "layers/decoder.h"
#include "train/cli_util.h"
#include "train/config.h"
#include "train/info.h"
#include "train/model_config.h"

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

namespace {
std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (v >= 1000 && i < 5) v /= 1000, ++i;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s%s", v, prefixes[i], unit);
  return buf;
}
std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}
}  // namespace

int command_info(const Args& args) {
  const ConfigArguments parsed = parse_config_arguments(args);
  if (parsed.help_requested) {
    std::printf("usage: tstl info --config FILE [--section.key value ...]\n"
                "Prints the parameter counts, FLOPs per token and training memory of a config.\n");
    return 0;
  }
  TSTL_CHECK(!parsed.path.empty(), "tstl info needs --config FILE");
  const Config cfg = load_config(parsed.path, parsed.overrides);
  const ModelConfig m = model_config_from(cfg, cfg.get<int64_t>("model.vocab_size") ? 0 : 259);
  const int64_t batch = cfg.get<int64_t>("train.batch_size"), seq = cfg.get<int64_t>("train.seq_len");
  const ModelCost c = model_cost(m, batch, seq);
  std::printf("model      %s: %lld layers, hidden %lld, %lld heads (head dim %lld), ffn %lld, vocab %lld, %s, %s residual%s\n",
              variant_name(m.variant), static_cast<long long>(m.layers), static_cast<long long>(m.hidden),
              static_cast<long long>(m.heads), static_cast<long long>(m.head_dim()), static_cast<long long>(m.ffn),
              static_cast<long long>(m.vocab_size), m.rmsnorm ? "rmsnorm" : "layernorm",
              m.parallel_residual ? "parallel" : "sequential", m.bias ? ", biases" : "");
  std::printf("parameters %lld (%s)\n", static_cast<long long>(c.parameters), human(static_cast<double>(c.parameters), "").c_str());
  std::printf("  without the two embedding matrices %lld\n", static_cast<long long>(c.non_embedding));
  std::printf("  embeddings (embed_in + embed_out)  %lld\n", static_cast<long long>(c.parameters - c.non_embedding));
  std::printf("FLOPs per training token %s (6 x %lld matmul parameters + 12 x layers x hidden x seq_len %lld)\n",
              human(c.flops_per_token, "FLOP").c_str(), static_cast<long long>(c.matmul_parameters),
              static_cast<long long>(seq));
  std::printf("training step, batch %lld x %lld tokens, f32:\n", static_cast<long long>(batch), static_cast<long long>(seq));
  std::printf("  weights %s, gradients %s, AdamW state %s, activations %s: total %s\n", gib(c.weight_bytes).c_str(),
              gib(c.gradient_bytes).c_str(), gib(c.optimizer_bytes).c_str(), gib(c.activation_bytes).c_str(),
              gib(c.total_bytes()).c_str());
  std::printf("  FLOPs per step %s\n", human(c.flops_per_token * static_cast<double>(batch * seq), "FLOP").c_str());
  return 0;
}

}  // namespace tstl
