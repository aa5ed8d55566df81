// Collectives between the ranks of a data-parallel job (docs/distributed.md).
//
// Contract:
//   - Every rank calls the same collectives in the same order with tensors of the same dtype
//     and numel (a mismatch is undefined, as in MPI and NCCL; the trainer guarantees it by
//     construction). Tensors are f32 or bf16 (f64 and i64 too on the CPU), on either device;
//     a call's tensors share one device and one dtype.
//   - The engine is chosen by the tensors' device: NCCL for CUDA tensors (one GPU per process,
//     picked by the local rank before any other CUDA call; the NCCL unique id travels over MPI),
//     MPI for CPU tensors. A process started without a launcher (DistEnv launcher "none") needs
//     neither: world 1, the collectives are local copies and no MPI call is ever made. Under a
//     launcher the engines run even at world 1 (`mpirun -np 1` tests NCCL on one GPU).
//   - all_reduce: every rank ends with the elementwise sum (or mean, ReduceOp::Avg) of all ranks'
//     tensors. bf16 is reduced in f32 (MPI: converted, summed, rounded once; NCCL: natively).
//   - reduce_scatter / all_gather use the shard layout below: n elements over W ranks in chunks of
//     c = ceil(n / W); rank r owns [min(r c, n), min((r+1) c, n)), so trailing ranks may own fewer
//     elements or none. reduce_scatter(in (n), out (shard size)) leaves rank r's slice of the
//     reduction in out; all_gather(in (shard size), out (n)) concatenates every rank's shard.
//   - The result of a reduction does not depend on timing: MPI and NCCL reduce in an order fixed
//     by the world size and the message size, so a run with a fixed world size repeats bit for
//     bit; different world sizes sum in different orders (fp32 rounding, docs/distributed.md).
//   - Failure: a collective that has not completed `timeout_s` after this rank entered it ends
//     the job. The rank that timed out asks every other rank (over a separate MPI communicator,
//     answered from inside their own waits) which collective it is in; it prints one line naming
//     the collective, its sequence number and the ranks that did not answer (dead or hung), and
//     calls MPI_Abort, which makes the launcher stop every rank. A rank killed outright is also
//     reported by the launcher itself ("mpirun noticed that process rank 1 ... exited on signal 9").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/dist.h"
#include "core/tensor.h"

namespace tstl {

enum class ReduceOp { Sum, Avg };

struct ShardRange {
  int64_t begin = 0, end = 0;  // [begin, end) of the flat index space
  int64_t size() const { return end - begin; }
};
// c = ceil(n / world) (0 for n = 0).
int64_t shard_chunk(int64_t n, int world);
ShardRange shard_range(int64_t n, int world, int rank);

struct CommOptions {
  double timeout_s = 600;  // train.comm_timeout_s
};

// Time spent inside collectives since construction (for logs and the benchmark).
struct CommStats {
  int64_t calls = 0;
  double seconds = 0;
};

// One transport (comm_mpi.cpp, comm_nccl.cu, or the local world-1 copies in comm.cpp).
class CommEngine {
 public:
  virtual ~CommEngine() = default;
  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Blocks until done() returns true, under the job's timeout: the MPI engine runs the failure
  // protocol above when the deadline passes (the NCCL engine waits for its stream through it).
  virtual void wait_until(const char* what, const std::function<bool()>& done);
  // Asynchronous collectives (see Communicator). The default completes the call before returning
  // (the host engines), and join() then has nothing to wait for.
  virtual void all_reduce_async(Tensor& t, ReduceOp op) { all_reduce(t, op); }
  virtual void reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) { reduce_scatter(in, out, op); }
  virtual void all_gather_async(const Tensor& in, Tensor& out) { all_gather(in, out); }
  virtual void join() {}
};

class Communicator {
 public:
  // No launcher: the local engine. Under one: initialises MPI (once per process, finalised at
  // exit) and duplicates MPI_COMM_WORLD; the NCCL engine is created on the first CUDA tensor.
  explicit Communicator(const DistEnv& env = dist_env(), CommOptions options = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  const DistEnv& env() const { return env_; }
  const CommOptions& options() const { return options_; }

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum);
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum);
  void all_gather(const Tensor& in, Tensor& out);
  void broadcast(Tensor& t, int root = 0);
  void barrier();

  // Asynchronous variants, for overlapping communication with computation (the gradient buckets
  // during backward, ZeRO-1's gathers). CUDA tensors (NCCL): the collective is ordered after the
  // work the compute stream (core/cuda_context.h's stream()) has been given so far (an event the
  // communication stream waits for), enqueued on the engine's own communication stream, and the
  // call returns at once. The tensors must stay alive and unwritten until join(device), which
  // makes the compute stream wait for every collective enqueued so far (an event again: the host
  // does not wait; temporaries the engine made are released then). CPU tensors (MPI, local):
  // the call completes before it returns, as the plain call does, and join() does nothing.
  void all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum);
  void reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::Sum);
  void all_gather_async(const Tensor& in, Tensor& out);
  void join(Device device);

  // Host-value conveniences for decisions and logs (f64 on the CPU engine).
  double sum(double value);
  double max(double value);
  bool any(bool value) { return max(value ? 1.0 : 0.0) > 0; }

  const CommStats& stats() const { return stats_; }
  // The engine name for a device ("local", "mpi", "nccl").
  std::string engine_name(Device device) const;

 private:
  CommEngine& engine(Device device);
  void check_reduce_scatter(const Tensor& in, const Tensor& out) const;
  void check_all_gather(const Tensor& in, const Tensor& out) const;
  DistEnv env_;
  CommOptions options_;
  CommStats stats_;
  std::unique_ptr<CommEngine> host_, device_;
};

// Engine factories (each in its own file; a backend that was not compiled throws naming it).
std::unique_ptr<CommEngine> make_local_engine();
std::unique_ptr<CommEngine> make_mpi_engine(const DistEnv& env, const CommOptions& options);
std::unique_ptr<CommEngine> make_nccl_engine(const DistEnv& env, const CommOptions& options, CommEngine& mpi);
// Ends every rank of the job now (MPI_Abort while MPI is running, else _Exit): for an error in a
// distributed run, where returning would leave the other ranks waiting in a collective.
[[noreturn]] void abort_job(int exit_code);
// True when this tstl was built with MPI / NCCL.
bool mpi_compiled();
bool nccl_compiled();

}  // namespace tstl
