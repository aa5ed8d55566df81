// The MPI engine: CPU tensors, the NCCL id's transport, and the job's failure protocol
// (core/comm.h). Collectives are issued non-blocking (MPI_Iallreduce, ...) and completed by
// polling MPI_Test, so a wait has a deadline and can answer other ranks' timeout queries.
#include "core/comm.h"

#ifdef TSTL_WITH_MPI

// The C API only: OpenMPI's and MPICH's headers otherwise pull in the removed C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/error.h"

#define MPI_CHECK(call)                                                         \
  do {                                                                          \
    const int rc_ = (call);                                                     \
    if (rc_ != MPI_SUCCESS) {                                                   \
      char msg_[MPI_MAX_ERROR_STRING];                                          \
      int len_ = 0;                                                             \
      MPI_Error_string(rc_, msg_, &len_);                                       \
      TSTL_FAIL("MPI error in ", #call, ": ", std::string(msg_, static_cast<size_t>(len_))); \
    }                                                                           \
  } while (0)

namespace tstl {

bool mpi_compiled() { return true; }

namespace {

constexpr int kQueryTag = 71, kReplyTag = 72;
constexpr double kAnswerGraceS = 10;  // how long a timed-out rank waits for the others' answers

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void init_mpi_once() {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized) return;
  int provided = 0;
  MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  // Errors come back as codes (MPI_CHECK) instead of MPI's default abort without a message.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  std::atexit(finalize_mpi);
}

MPI_Datatype reduce_type(DType t, const char* op) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I64: return MPI_INT64_T;
    default: TSTL_FAIL(op, " (MPI): cannot reduce dtype ", dtype_name(t), " (f32, bf16, f64 or i64 expected)");
  }
}

int as_count(int64_t n, const char* op) {
  TSTL_CHECK(n <= INT_MAX, op, " (MPI): ", n, " elements exceed MPI's int count; split the tensor");
  return static_cast<int>(n);
}

class MpiEngine final : public CommEngine {
 public:
  MpiEngine(const DistEnv& env, const CommOptions& options) : env_(env), options_(options) {
    init_mpi_once();
    int rank = 0, size = 0;
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
    TSTL_CHECK(rank == env.rank && size == env.world, "MPI says rank ", rank, " of ", size, " but the launcher's ",
               "environment says ", env.str(), ": launch tstl directly under mpirun or srun");
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &data_));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &control_));
    MPI_CHECK(MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN));
  }
  ~MpiEngine() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&data_);
    MPI_Comm_free(&control_);
  }

  void all_reduce(Tensor& t, ReduceOp op) override {
    if (t.dtype() == DType::BF16) {  // reduced in f32, rounded once
      Tensor wide = t.to(DType::F32);
      all_reduce(wide, op);
      t.copy_(wide);
      return;
    }
    const MPI_Datatype type = reduce_type(t.dtype(), "all_reduce");
    MPI_Request req;
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.raw(), as_count(t.numel(), "all_reduce"), type, MPI_SUM, data_, &req));
    complete(req, "all_reduce", t);
    if (op == ReduceOp::Avg) scale_by_world(t);
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    if (in.dtype() == DType::BF16) {
      Tensor wide_out = Tensor::empty(out.shape(), DType::F32);
      reduce_scatter(in.to(DType::F32), wide_out, op);
      out.copy_(wide_out);
      return;
    }
    const MPI_Datatype type = reduce_type(in.dtype(), "reduce_scatter");
    std::vector<int> counts(static_cast<size_t>(env_.world));
    for (int r = 0; r < env_.world; ++r)
      counts[static_cast<size_t>(r)] = as_count(shard_range(in.numel(), env_.world, r).size(), "reduce_scatter");
    MPI_Request req;
    MPI_CHECK(MPI_Ireduce_scatter(in.raw(), out.raw(), counts.data(), type, MPI_SUM, data_, &req));
    complete(req, "reduce_scatter", in);
    if (op == ReduceOp::Avg) scale_by_world(out);
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    const int64_t elem = static_cast<int64_t>(dtype_size(in.dtype()));
    std::vector<int> counts(static_cast<size_t>(env_.world)), displs(static_cast<size_t>(env_.world));
    for (int r = 0; r < env_.world; ++r) {
      const ShardRange s = shard_range(out.numel(), env_.world, r);
      counts[static_cast<size_t>(r)] = as_count(s.size() * elem, "all_gather");
      displs[static_cast<size_t>(r)] = as_count(s.begin * elem, "all_gather");
    }
    MPI_Request req;
    MPI_CHECK(MPI_Iallgatherv(in.raw(), counts[static_cast<size_t>(env_.rank)], MPI_BYTE, out.raw(), counts.data(),
                              displs.data(), MPI_BYTE, data_, &req));
    complete(req, "all_gather", out);
  }

  void broadcast(Tensor& t, int root) override {
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(t.raw(), as_count(static_cast<int64_t>(t.nbytes()), "broadcast"), MPI_BYTE, root, data_, &req));
    complete(req, "broadcast", t);
  }

  void barrier() override {
    MPI_Request req;
    MPI_CHECK(MPI_Ibarrier(data_, &req));
    ++seq_;
    wait_request(req, "barrier");
  }

  void wait_until(const char* what, const std::function<bool()>& done) override {
    ++seq_;
    wait_on(what, done);
  }

 private:
  void scale_by_world(Tensor& t) {
    const double inv = 1.0 / env_.world;
    if (t.dtype() == DType::F32) {
      float* p = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(p[i] * inv);
    } else if (t.dtype() == DType::F64) {
      double* p = t.data<double>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] *= inv;
    } else {
      TSTL_FAIL("ReduceOp::Avg needs a floating dtype, got ", dtype_name(t.dtype()));
    }
  }

  void complete(MPI_Request& req, const char* op, const Tensor& t) {
    ++seq_;
    wait_request(req, str(op, " of ", t.numel(), " ", dtype_name(t.dtype()), " elements").c_str());
  }

  void wait_request(MPI_Request& req, const char* what) {
    wait_on(what, [&] {
      int flag = 0;
      MPI_CHECK(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
      return flag != 0;
    });
  }

  // Polls done() (and answers other ranks' timeout queries) until it is true or the deadline
  // passes; then the failure protocol of core/comm.h.
  void wait_on(const char* what, const std::function<bool()>& done) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration<double>(options_.timeout_s);
    for (int64_t polls = 0;; ++polls) {
      if (done()) return;
      answer_queries(what);
      // Spin briefly (short collectives), then yield the core: ranks may share cores.
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 100000 ? 1000 : 50));
      if ((polls & 63) == 0 && Clock::now() > deadline) timed_out(what);
    }
  }

  void answer_queries(const char* what) {
    for (;;) {
      int flag = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, control_, &flag, &status);
      if (!flag) return;
      int64_t their_seq = 0;
      MPI_Recv(&their_seq, 1, MPI_INT64_T, status.MPI_SOURCE, kQueryTag, control_, MPI_STATUS_IGNORE);
      std::fprintf(stderr, "tstl rank %d: rank %d reports a timeout in collective #%lld; this rank is in #%lld (%s)\n",
                   env_.rank, status.MPI_SOURCE, static_cast<long long>(their_seq), static_cast<long long>(seq_), what);
      int64_t mine = seq_;
      MPI_Send(&mine, 1, MPI_INT64_T, status.MPI_SOURCE, kReplyTag, control_);
    }
  }

  [[noreturn]] void timed_out(const char* what) {
    const int world = env_.world;
    std::vector<int64_t> seqs(static_cast<size_t>(world), -1);
    std::vector<MPI_Request> sends, recvs(static_cast<size_t>(world), MPI_REQUEST_NULL);
    int64_t mine = seq_;
    for (int r = 0; r < world; ++r) {
      if (r == env_.rank) continue;
      sends.emplace_back();
      MPI_Isend(&mine, 1, MPI_INT64_T, r, kQueryTag, control_, &sends.back());
      MPI_Irecv(&seqs[static_cast<size_t>(r)], 1, MPI_INT64_T, r, kReplyTag, control_, &recvs[static_cast<size_t>(r)]);
    }
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::duration<double>(std::min(kAnswerGraceS, options_.timeout_s));
    std::vector<bool> answered(static_cast<size_t>(world), false);
    answered[static_cast<size_t>(env_.rank)] = true;
    while (std::chrono::steady_clock::now() < until) {
      bool all = true;
      for (int r = 0; r < world; ++r) {
        if (answered[static_cast<size_t>(r)]) continue;
        int flag = 0;
        MPI_Test(&recvs[static_cast<size_t>(r)], &flag, MPI_STATUS_IGNORE);
        answered[static_cast<size_t>(r)] = flag != 0;
        all = all && flag != 0;
      }
      if (all) break;
      answer_queries(what);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::string silent, waiting;
    for (int r = 0; r < world; ++r) {
      if (r == env_.rank) continue;
      if (!answered[static_cast<size_t>(r)]) {
        silent += str(silent.empty() ? "" : ", ", r);
      } else {
        waiting += str(waiting.empty() ? "" : ", ", "rank ", r, " in #", seqs[static_cast<size_t>(r)]);
      }
    }
    std::fprintf(stderr,
                 "tstl rank %d: error: collective #%lld (%s) did not complete within train.comm_timeout_s = %g s; "
                 "%s%s%s; aborting the job\n",
                 env_.rank, static_cast<long long>(seq_), what, options_.timeout_s,
                 silent.empty() ? "every rank answered" : ("no answer from rank " + silent + " (dead or hung)").c_str(),
                 waiting.empty() ? "" : "; answered: ", waiting.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
    std::_Exit(3);
  }

  DistEnv env_;
  CommOptions options_;
  MPI_Comm data_ = MPI_COMM_NULL, control_ = MPI_COMM_NULL;
  int64_t seq_ = 0;  // collectives entered so far
};

}  // namespace

std::unique_ptr<CommEngine> make_mpi_engine(const DistEnv& env, const CommOptions& options) {
  return std::make_unique<MpiEngine>(env, options);
}

void abort_job(int exit_code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

}  // namespace tstl

#else  // built without MPI

#include <cstdlib>

#include "core/error.h"

namespace tstl {

bool mpi_compiled() { return false; }

std::unique_ptr<CommEngine> make_mpi_engine(const DistEnv& env, const CommOptions&) {
  TSTL_FAIL(env.str(), ": this tstl was built without MPI (install libopenmpi-dev and rebuild)");
}

void abort_job(int exit_code) { std::_Exit(exit_code); }

}  // namespace tstl

#endif
