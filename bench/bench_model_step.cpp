// One training micro-step (forward + backward) of a config's model on the CPU: time, FLOP rate
// against the OpenBLAS sgemm peak measured in the same run, and the process's peak memory.
//   build/bench_model_step configs/350m.cfg [batch=1] [seq_len=512] [--model.variant alibi ...]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "train/config.h"
#include "train/model_cost.h"
#include "train/metrics.h"
#include "train/model_config.h"
#include "train/peak_flops.h"

int main(int argc, char** argv) {
  using namespace tstl;
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_model_step CONFIG [batch] [seq_len] [--section.key value ...]\n");
    return 2;
  }
  int64_t batch = 1, seq = 512;
  std::vector<std::string> overrides;
  int positional = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      overrides.push_back(a);
      if (a.find('=') == std::string::npos && i + 1 < argc) overrides.push_back(argv[++i]);
    } else {
      (positional++ == 0 ? batch : seq) = std::atoll(a.c_str());
    }
  }
  try {
    const Config cfg = load_config(argv[1], overrides);
    const ModelConfig mc = model_config_from(cfg, cfg.get<int64_t>("model.vocab_size") ? 0 : 259);
    const auto t0 = std::chrono::steady_clock::now();
    Decoder model(mc);
    model.initialize(1);
    const double init_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<int32_t> ids(static_cast<size_t>(batch * seq));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919) % static_cast<size_t>(mc.vocab_size));
    const Tensor inputs = Tensor::from_vector(ids, {batch, seq});
    const Tensor targets = inputs;
    double best = 1e30;
    for (int rep = 0; rep < 2; ++rep) {
      model.zero_grad();
      best = std::min(best, bench::seconds([&] { model.loss(inputs, targets).backward(); }));
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const ModelCost cost = model_cost(mc, batch, seq);
    const double flops = cost.flops_per_token * static_cast<double>(batch * seq);
    const double peak = measure_sgemm_flops(2048, 3) * 1e-9;
    std::printf("%s (%s): %lld parameters, batch %lld x %lld tokens\n", argv[1], variant_name(mc.variant),
                static_cast<long long>(cost.parameters), static_cast<long long>(batch), static_cast<long long>(seq));
    std::printf("  init %.1f s; forward+backward %.2f s = %.1f GFLOP/s (%.2f x the sgemm peak of %.1f GFLOP/s)\n",
                init_s, best, flops / best * 1e-9, flops / best * 1e-9 / peak, peak);
    std::printf("  peak resident memory %.2f GiB (weights + gradients alone: %.2f GiB)\n",
                static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0),
                (cost.weight_bytes + cost.gradient_bytes) / (1024.0 * 1024.0 * 1024.0));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
