// Gradient buckets: the data-parallel gradient reduction, launched during backward.
//
// Plan (GradBucketPlan; the same on every rank, a function of the parameter list and the cap):
//   - parameters in reverse order of registration, the order in which backward finishes their
//     gradients (the output end of the decoder first), cut into consecutive buckets of at most
//     cap = train.bucket_mb MiB of f32 gradient; a parameter larger than the cap is a bucket of
//     its own. Inside a bucket the parameters keep that order, each flattened row-major.
// Run (GradBuckets; one pass per optimizer step, around the last micro-batch's backward):
//   - begin() installs core/autograd.h's leaf-ready hook. When the last parameter of a bucket has
//     a final gradient, the bucket is launched: its gradients are copied into the bucket's flat
//     f32 buffer and summed over the ranks, all_reduce (plain data parallel: the sum is copied
//     back into every .grad()) or reduce_scatter (ZeRO-1: this rank keeps its slice of the bucket,
//     optim/zero1.h). Buckets launch in the order they become complete, which is the same on every
//     rank because every rank runs the same graph; a collective needs that.
//   - finish() removes the hook, launches the buckets not launched yet (parameters the graph
//     did not reach contribute zeros) in plan order, joins the collectives and (plain data
//     parallel) copies each summed bucket into fresh .grad() tensors.
//   - Overlap (docs/distributed.md): a launch uses the Communicator's asynchronous calls. On CUDA
//     the bucket's collective is ordered after the compute stream's work so far (an event; the
//     packing copies are the last of it) and runs on NCCL's communication stream while the host
//     goes on enqueueing the rest of backward; finish() makes the compute stream wait for the
//     communication stream (an event, no host wait), so the optimizer step that follows reads the
//     summed gradients. On the CPU a launch blocks until the sum is done (MPI), so backward
//     continues after it; the order is the GPU's, and so are the results, bit for bit.
//   - Gradients summed, not averaged: the trainer weights each rank's micro-batch losses by
//     1 / (grad_accum x world), so the sum is the global batch's mean-loss gradient.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/comm.h"
#include "optim/adamw.h"

namespace tstl {

class GradBucketPlan {
 public:
  GradBucketPlan(const NamedTensors& params, double bucket_mb);
  // Parameter indices of each bucket, in bucket order.
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  int64_t bucket_elements(size_t b) const { return elements_[b]; }
  std::string summary() const;  // "7 buckets of <= 25 MiB (largest 3.1 MiB)"

 private:
  std::vector<std::vector<size_t>> buckets_;
  std::vector<int64_t> elements_;
  double cap_mb_;
};

class GradBuckets {
 public:
  // zero1: reduce_scatter into shard_grads() instead of all_reduce into the parameters' .grad().
  GradBuckets(const NamedTensors& params, const GradBucketPlan& plan, Communicator& comm, bool zero1);
  ~GradBuckets();
  void begin();
  void finish();
  // ZeRO-1: this rank's slice of each bucket's summed gradient (sizes as shard_range gives).
  const std::vector<Tensor>& shard_grads() const { return shard_grads_; }
  // Buckets launched from inside backward in the last pass (the rest waited for finish()).
  int64_t launched_in_backward() const { return launched_in_backward_; }

 private:
  void on_leaf_ready(const TensorImpl* leaf);
  void launch(size_t b);  // packs bucket b into its flat buffer and starts its collective
  void unpack(size_t b);  // plain data parallel: the summed bucket into fresh .grad() tensors

  NamedTensors params_;
  const GradBucketPlan& plan_;
  Communicator& comm_;
  bool zero1_;
  std::unordered_map<const TensorImpl*, size_t> bucket_of_;  // parameter -> its bucket
  std::vector<int64_t> pending_;                             // parameters not yet final, per bucket
  std::vector<bool> launched_;
  std::vector<Tensor> flat_, shard_grads_;  // per bucket: (elements) and this rank's slice
  int64_t launched_in_backward_ = 0;
  bool active_ = false;
};

}  // namespace tstl
