// The Communicator's dispatch by device, the shard layout and the world-1 engine (local copies).
#include "core/comm.h"

#include <chrono>
#include <cstdio>

#include "core/error.h"

namespace tstl {

int64_t shard_chunk(int64_t n, int world) {
  TSTL_CHECK(n >= 0 && world >= 1, "shard_chunk: n = ", n, ", world = ", world);
  return (n + world - 1) / world;
}

ShardRange shard_range(int64_t n, int world, int rank) {
  TSTL_CHECK(rank >= 0 && rank < world, "shard_range: rank ", rank, " outside [0, ", world, ")");
  const int64_t c = shard_chunk(n, world);
  ShardRange r;
  r.begin = std::min(static_cast<int64_t>(rank) * c, n);
  r.end = std::min(static_cast<int64_t>(rank + 1) * c, n);
  return r;
}

void CommEngine::wait_until(const char*, const std::function<bool()>& done) {
  while (!done()) {
  }
}

namespace {

void check_pair(const Tensor& in, const Tensor& out, const char* op) {
  check_same_device(in, out, op);
  check_same_dtype(in, out, op);
}

// World 1: the reduction of one tensor is itself, its only shard is all of it.
class LocalEngine final : public CommEngine {
 public:
  void all_reduce(Tensor&, ReduceOp) override {}
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp) override {
    check_pair(in, out, "reduce_scatter");
    TSTL_CHECK(out.numel() == in.numel(), "reduce_scatter: world 1 needs out numel ", in.numel(), ", got ", out.numel());
    if (in.numel()) out.copy_(in.reshape(out.shape()));
  }
  void all_gather(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "all_gather");
    TSTL_CHECK(out.numel() == in.numel(), "all_gather: world 1 needs out numel ", in.numel(), ", got ", out.numel());
    if (in.numel()) out.copy_(in.reshape(out.shape()));
  }
  void broadcast(Tensor&, int root) override {
    TSTL_CHECK(root == 0, "broadcast: root ", root, " outside a world of 1");
  }
  void barrier() override {}
};

}  // namespace

std::unique_ptr<CommEngine> make_local_engine() { return std::make_unique<LocalEngine>(); }

Communicator::Communicator(const DistEnv& env, CommOptions options) : env_(env), options_(options) {
  TSTL_CHECK(options_.timeout_s > 0, "train.comm_timeout_s must be > 0, got ", options_.timeout_s);
  if (env_.launcher == "none") {  // a plain process: no MPI at all
    host_ = make_local_engine();
  } else {
    TSTL_CHECK(mpi_compiled(), env_.str(), ": a world of ", env_.world,
               " needs MPI, but this tstl was built without it (install libopenmpi-dev and rebuild)");
    host_ = make_mpi_engine(env_, options_);
  }
}

Communicator::~Communicator() = default;

CommEngine& Communicator::engine(Device device) {
  if (device == Device::CPU || env_.launcher == "none") return *host_;
  if (!device_) device_ = make_nccl_engine(env_, options_, *host_);
  return *device_;
}

std::string Communicator::engine_name(Device device) const {
  if (env_.launcher == "none") return "local";
  return device == Device::CPU ? "mpi" : "nccl";
}

namespace {

// Adds the wall time of one collective to the stats.
struct Timed {
  CommStats& stats;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit Timed(CommStats& s) : stats(s) {}
  ~Timed() {
    stats.calls += 1;
    stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

}  // namespace

void Communicator::all_reduce(Tensor& t, ReduceOp op) {
  Timed timed(stats_);
  engine(t.device()).all_reduce(t, op);
}

void Communicator::check_reduce_scatter(const Tensor& in, const Tensor& out) const {
  check_pair(in, out, "reduce_scatter");
  TSTL_CHECK(out.numel() == shard_range(in.numel(), world(), rank()).size(), "reduce_scatter: rank ", rank(),
             " owns ", shard_range(in.numel(), world(), rank()).size(), " of ", in.numel(), " elements, out has ",
             out.numel());
}

void Communicator::check_all_gather(const Tensor& in, const Tensor& out) const {
  check_pair(in, out, "all_gather");
  TSTL_CHECK(in.numel() == shard_range(out.numel(), world(), rank()).size(), "all_gather: rank ", rank(), " owns ",
             shard_range(out.numel(), world(), rank()).size(), " of ", out.numel(), " elements, in has ", in.numel());
}

void Communicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  check_reduce_scatter(in, out);
  Timed timed(stats_);
  engine(in.device()).reduce_scatter(in, out, op);
}

void Communicator::all_gather(const Tensor& in, Tensor& out) {
  check_all_gather(in, out);
  Timed timed(stats_);
  engine(in.device()).all_gather(in, out);
}

// The asynchronous calls are timed too: on the host engines they are the whole collective, on
// NCCL only the enqueueing (the collective itself overlaps the compute stream's work).
void Communicator::all_reduce_async(Tensor& t, ReduceOp op) {
  Timed timed(stats_);
  engine(t.device()).all_reduce_async(t, op);
}

void Communicator::reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) {
  check_reduce_scatter(in, out);
  Timed timed(stats_);
  engine(in.device()).reduce_scatter_async(in, out, op);
}

void Communicator::all_gather_async(const Tensor& in, Tensor& out) {
  check_all_gather(in, out);
  Timed timed(stats_);
  engine(in.device()).all_gather_async(in, out);
}

void Communicator::join(Device device) { engine(device).join(); }

void Communicator::broadcast(Tensor& t, int root) {
  TSTL_CHECK(root >= 0 && root < world(), "broadcast: root ", root, " outside [0, ", world(), ")");
  Timed timed(stats_);
  engine(t.device()).broadcast(t, root);
}

void Communicator::barrier() {
  Timed timed(stats_);
  host_->barrier();
}

double Communicator::sum(double value) {
  Tensor t = Tensor::from_vector<double>({value}, {1});
  all_reduce(t, ReduceOp::Sum);
  return t.data<double>()[0];
}

double Communicator::max(double value) {
  // max over ranks as a gather of every rank's value (world is small; no MPI_MAX needed)
  Tensor all = Tensor::zeros({world()}, DType::F64);
  Tensor mine = Tensor::from_vector<double>({value}, {1});
  all_gather(mine, all);
  double m = all.data<double>()[0];
  for (int r = 1; r < world(); ++r) m = std::max(m, all.data<double>()[r]);
  return m;
}

#ifndef TSTL_WITH_CUDA
bool nccl_compiled() { return false; }
std::unique_ptr<CommEngine> make_nccl_engine(const DistEnv& env, const CommOptions&, CommEngine&) {
  TSTL_FAIL(env.str(), ": collectives on CUDA tensors need the CUDA backend, which this tstl was built without");
}
#endif

}  // namespace tstl
