// `tstl info --config FILE [--section.key value ...]`: what a config's model costs (the formulas
// are in train/model_cost.cpp).
#include <cstdio>

#include "cli/options.h"
#include "train/config.h"
#include "train/model_config.h"
#include "train/model_cost.h"

namespace tstl {

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
