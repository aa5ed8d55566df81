// Data parallel on the CPU: `mpirun -np 2` ranks of 1 thread each against 1 process of 2 threads,
// the same global batch and model, measured in one run; prints tokens/s of both, their ratio, and
// the time the ranks spend in gradient all-reduce per step (the buckets, launched from backward).
//   build/bench_data_parallel [CONFIG=configs/small.cfg] [batch per rank=4] [seq_len=128] [steps=6]
// Run it without mpirun: it measures the single process itself, then launches
// `mpirun --oversubscribe -np 2` of itself (with --rank-worker) for the two ranks.
#include <omp.h>
#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/autograd.h"
#include "core/comm.h"
#include "optim/adamw.h"
#include "train/config.h"
#include "train/grad_buckets.h"
#include "train/model_config.h"

namespace {

using namespace tstl;

struct Measured {
  double step_s = 0;       // median wall time of an optimizer step
  double allreduce_s = 0;  // median time in collectives per step
};

// `steps` optimizer steps (after one warm-up) of `batch` x `seq` tokens per rank; with world > 1
// the gradients go through the buckets.
Measured measure(const Config& cfg, int64_t batch, int64_t seq, int steps, Communicator& comm) {
  const ModelConfig mc = model_config_from(cfg, 259);
  Decoder model(mc);
  model.initialize(1);
  AdamW optimizer(model.named_parameters(), AdamWOptions{});
  const GradBucketPlan plan(model.named_parameters(), cfg.get<double>("train.bucket_mb"));
  GradBuckets buckets(model.named_parameters(), plan, comm, false);
  std::vector<int32_t> ids(static_cast<size_t>(batch * seq));
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int32_t>((i * 7919 + static_cast<size_t>(comm.rank()) * 104729) % 259);
  const Tensor inputs = Tensor::from_vector(ids, {batch, seq});
  std::vector<double> step_s, comm_s;
  for (int s = 0; s <= steps; ++s) {
    const double comm_before = comm.stats().seconds;
    const double t = bench::seconds([&] {
      if (comm.world() > 1) buckets.begin();
      model.loss(inputs, inputs).backward();
      if (comm.world() > 1) buckets.finish();
      optimizer.step(1e-4);
      optimizer.zero_grad();
    });
    if (s == 0) continue;  // warm-up: first-touch allocations
    step_s.push_back(t);
    comm_s.push_back(comm.stats().seconds - comm_before);
  }
  return {bench::median(step_s), bench::median(comm_s)};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const bool worker = !args.empty() && args.back() == "--rank-worker";
  if (worker) args.pop_back();
  const std::string config = args.size() > 0 ? args[0] : "configs/small.cfg";
  const int64_t batch = args.size() > 1 ? std::atoll(args[1].c_str()) : 4;
  const int64_t seq = args.size() > 2 ? std::atoll(args[2].c_str()) : 128;
  const int steps = args.size() > 3 ? std::atoi(args[3].c_str()) : 6;
  try {
    const Config cfg = load_config(config, {});
    if (worker) {
      omp_set_num_threads(1);
      openblas_set_num_threads(1);
      Communicator comm;
      const Measured m = measure(cfg, batch, seq, steps, comm);
      // Every rank's figures reach rank 0: the slowest rank sets the pace.
      const double step_s = comm.max(m.step_s), allreduce_s = comm.max(m.allreduce_s);
      if (comm.rank() == 0) std::printf("RESULT %.9g %.9g %d\n", step_s, allreduce_s, comm.world());
      return 0;
    }
    omp_set_num_threads(2);
    openblas_set_num_threads(2);
    Communicator local;  // world 1
    const Measured one = measure(cfg, 2 * batch, seq, steps, local);
    const std::string cmd = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
                            "mpirun --oversubscribe -np 2 " + std::string(argv[0]) + " " + config + " " +
                            std::to_string(batch) + " " + std::to_string(seq) + " " + std::to_string(steps) +
                            " --rank-worker";
    FILE* p = popen(cmd.c_str(), "r");
    TSTL_CHECK(p, "cannot run ", cmd);
    double dp_step = 0, dp_comm = 0;
    int world = 0;
    char line[512];
    while (std::fgets(line, sizeof line, p))
      if (std::sscanf(line, "RESULT %lf %lf %d", &dp_step, &dp_comm, &world) != 3) std::fputs(line, stdout);
    TSTL_CHECK(pclose(p) == 0 && world == 2, "the mpirun part failed: ", cmd);
    const double tokens = static_cast<double>(2 * batch * seq);  // the global batch of both set-ups
    std::printf("%s, global batch %lld x %lld tokens, median of %d steps\n", config.c_str(),
                static_cast<long long>(2 * batch), static_cast<long long>(seq), steps);
    std::printf("  1 process x 2 threads : %8.1f ms/step  %8.0f tokens/s\n", one.step_s * 1e3, tokens / one.step_s);
    std::printf("  2 ranks x 1 thread    : %8.1f ms/step  %8.0f tokens/s  (all-reduce %.1f ms/step = %.1f%% of the step)\n",
                dp_step * 1e3, tokens / dp_step, dp_comm * 1e3, 100 * dp_comm / dp_step);
    std::printf("  ratio 2 ranks / 1 process: %.2fx tokens/s\n", one.step_s / dp_step);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data_parallel: %s\n", e.what());
    return 1;
  }
  return 0;
}
