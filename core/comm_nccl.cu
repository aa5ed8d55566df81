// The NCCL engine: collectives on CUDA tensors (core/comm.h). Each call waits for the compute
// stream's work on its tensors (an event recorded on the compute stream, which the engine's own
// non-blocking communication stream waits for) and runs on the communication stream.
//   - Plain calls are completed through the MPI engine's wait_until, so they share the job's
//     deadline and failure protocol; NCCL's asynchronous errors (a peer gone) are checked while
//     waiting. They are for setup and checkpoints, not for the training step.
//   - *_async calls return once the collective is enqueued; join() records an event on the
//     communication stream and makes the compute stream wait for it, so the host never waits and
//     the compute stream goes on with backward while NCCL runs (docs/distributed.md, "Overlap").
//     A temporary a call made (the padded buffers of reduce_scatter / all_gather) is kept until
//     join(), after which every later use of its memory is ordered behind the collective.
#include "core/comm.h"

#ifdef TSTL_WITH_NCCL

#include <cstring>
#include <vector>

#include "core/cuda_context.h"
#include "core/cuda_sync.h"

namespace tstl {

bool nccl_compiled() { return true; }

namespace {

ncclDataType_t nccl_type(DType t, const char* op) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F64: return ncclFloat64;
    default: TSTL_FAIL(op, " (NCCL): unsupported dtype ", dtype_name(t), " (f32 or bf16 expected)");
  }
}

class NcclEngine final : public CommEngine {
 public:
  NcclEngine(const DistEnv& env, CommEngine& mpi) : env_(env), mpi_(mpi) {
    ncclUniqueId id{};
    if (env.rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    Tensor bytes = Tensor::empty({static_cast<int64_t>((sizeof id + 3) / 4)}, DType::I32);
    std::memcpy(bytes.raw(), &id, sizeof id);
    mpi_.broadcast(bytes, 0);
    std::memcpy(&id, bytes.raw(), sizeof id);
    NCCL_CHECK(ncclCommInitRank(&comm_, env.world, id, env.rank));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~NcclEngine() override {
    if (comm_) ncclCommDestroy(comm_);  // null after an abort
    cudaEventDestroy(done_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }

  void all_reduce(Tensor& t, ReduceOp op) override {
    all_reduce_async(t, op);
    finish("all_reduce (nccl)");
  }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    reduce_scatter_async(in, out, op);
    finish("reduce_scatter (nccl)");
  }
  void all_gather(const Tensor& in, Tensor& out) override {
    all_gather_async(in, out);
    finish("all_gather (nccl)");
  }

  void all_reduce_async(Tensor& t, ReduceOp op) override {
    after_compute();
    NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "all_reduce"),
                             op == ReduceOp::Avg ? ncclAvg : ncclSum, comm_, stream_));
  }

  // NCCL's reduce-scatter and all-gather take equal chunks: the tensors are padded to world x c.
  void reduce_scatter_async(const Tensor& in, Tensor& out, ReduceOp op) override {
    const int64_t c = shard_chunk(in.numel(), env_.world);
    if (c == 0) return;
    const size_t elem = dtype_size(in.dtype());
    Tensor padded = Tensor::zeros({c * env_.world}, in.dtype(), Device::CUDA);  // (world x c)
    Tensor chunk = Tensor::empty({c}, in.dtype(), Device::CUDA);                 // (c)
    after_compute();
    CUDA_CHECK(cudaMemcpyAsync(padded.raw(), in.raw(), in.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    NCCL_CHECK(ncclReduceScatter(padded.raw(), chunk.raw(), static_cast<size_t>(c),
                                 nccl_type(in.dtype(), "reduce_scatter"), op == ReduceOp::Avg ? ncclAvg : ncclSum,
                                 comm_, stream_));
    CUDA_CHECK(cudaMemcpyAsync(out.raw(), chunk.raw(), static_cast<size_t>(out.numel()) * elem,
                               cudaMemcpyDeviceToDevice, stream_));
    in_flight_.push_back(std::move(padded));
    in_flight_.push_back(std::move(chunk));
  }

  void all_gather_async(const Tensor& in, Tensor& out) override {
    const int64_t c = shard_chunk(out.numel(), env_.world);
    if (c == 0) return;
    Tensor chunk = Tensor::zeros({c}, in.dtype(), Device::CUDA);                    // (c)
    Tensor gathered = Tensor::empty({c * env_.world}, in.dtype(), Device::CUDA);    // (world x c)
    after_compute();
    CUDA_CHECK(cudaMemcpyAsync(chunk.raw(), in.raw(), in.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    NCCL_CHECK(ncclAllGather(chunk.raw(), gathered.raw(), static_cast<size_t>(c), nccl_type(in.dtype(), "all_gather"),
                             comm_, stream_));
    CUDA_CHECK(cudaMemcpyAsync(out.raw(), gathered.raw(), out.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    in_flight_.push_back(std::move(chunk));
    in_flight_.push_back(std::move(gathered));
  }

  void join() override {
    check_async_error("a collective (nccl)");  // an error NCCL already knows of; does not wait
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), done_, 0));
    in_flight_.clear();  // their memory's next users run on the compute stream, now behind the collectives
  }

  void broadcast(Tensor& t, int root) override {
    after_compute();
    NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, stream_));
    finish("broadcast (nccl)");
  }

  void barrier() override { mpi_.barrier(); }

 private:
  // The collective reads what the compute stream wrote: order it after that work.
  void after_compute() {
    CUDA_CHECK(cudaEventRecord(ready_, cuda::stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }

  // NCCL's asynchronous error state (a peer gone, a network failure): aborts the communicator
  // and throws, naming the collective.
  void check_async_error(const char* what) {
    ncclResult_t async = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async != ncclSuccess) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      TSTL_FAIL(what, ": NCCL reported ", ncclGetErrorString(async), " on rank ", env_.rank);
    }
  }

  // The plain calls' host wait (polling, under the job's deadline), then the release of the
  // temporaries; counted as one synchronisation (core/cuda_sync.h).
  void finish(const char* what) {
    cuda::note_sync();
    mpi_.wait_until(what, [&] {
      check_async_error(what);
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaErrorNotReady) return false;
      CUDA_CHECK(q);
      return true;
    });
    in_flight_.clear();
  }

  DistEnv env_;
  CommEngine& mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // recorded on the compute stream: the collective's inputs are written
  cudaEvent_t done_ = nullptr;   // recorded on the communication stream by join()
  std::vector<Tensor> in_flight_;  // temporaries of asynchronous calls, until join() or finish()
};

}  // namespace

std::unique_ptr<CommEngine> make_nccl_engine(const DistEnv& env, const CommOptions&, CommEngine& mpi) {
  return std::make_unique<NcclEngine>(env, mpi);
}

}  // namespace tstl

#else  // CUDA without NCCL

namespace tstl {

bool nccl_compiled() { return false; }

std::unique_ptr<CommEngine> make_nccl_engine(const DistEnv& env, const CommOptions&, CommEngine&) {
  TSTL_FAIL(env.str(), ": collectives on CUDA tensors need NCCL, which this tstl was built without");
}

}  // namespace tstl

#endif
