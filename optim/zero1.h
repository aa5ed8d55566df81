// ZeRO-1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
// Models", 2020, stage 1): AdamW's moments partitioned over the data-parallel ranks.
//
// Layout contract (the same on every rank, a function of the parameter list, the groups and W):
//   - The flat vector is the concatenation of the groups (the gradient buckets of
//     train/grad_buckets.h) in order; inside a group, its parameters in the group's order, each
//     flattened row-major. A group of n elements is split by core/comm.h's shard layout: rank r
//     owns shard_range(n, W, r) of every group, exactly the slice reduce_scatter hands it and
//     all_gather collects from it.
//   - Rank r's shard is therefore a list of pieces (parameter, first element, length, group,
//     offset in the group's shard), in flat order; pieces cover every element of every group on
//     exactly one rank (tested).
//   - The update: AdamW (optim/adamw.h) over the pieces, each a view of its parameter's storage
//     with moments of its own length. It is the same kernel and per-element math as the
//     unsharded optimizer and the same weight-decay decision (the parameter's), so given the same
//     gradient a ZeRO-1 step changes every element exactly as an unsharded one. Then every group's
//     parameters are all-gathered, so all ranks hold the full, identical parameters again.
//   - State: gather_state() reassembles the full moments ("exp_avg.<param>", "exp_avg_sq.<param>",
//     the unsharded optimizer's names and shapes), so checkpoints do not depend on W; load_state()
//     takes full moments and keeps this rank's pieces. Memory per rank: 2 x (n / W) moments.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/comm.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace tstl {

struct ShardPiece {
  size_t param = 0;          // index into the parameter list
  int64_t begin = 0;         // first element of the parameter (flattened)
  int64_t length = 0;
  size_t group = 0;
  int64_t shard_offset = 0;  // where the piece starts in this rank's slice of the group
};

class Zero1Layout {
 public:
  // groups: parameter indices per group; every parameter must appear in exactly one group.
  Zero1Layout(const NamedTensors& params, const std::vector<std::vector<size_t>>& groups, int world, int rank);
  const std::vector<ShardPiece>& pieces() const { return pieces_; }
  size_t groups() const { return group_sizes_.size(); }
  int64_t group_elements(size_t g) const { return group_sizes_[g]; }
  ShardRange group_shard(size_t g) const { return group_shards_[g]; }  // this rank's range in group g
  int64_t shard_elements() const;  // elements this rank owns over all groups

 private:
  std::vector<ShardPiece> pieces_;
  std::vector<int64_t> group_sizes_;
  std::vector<ShardRange> group_shards_;
};

class Zero1AdamW {
 public:
  Zero1AdamW(NamedTensors params, std::vector<std::vector<size_t>> groups, AdamWOptions options,
             DecayPredicate decays, Communicator& comm);

  const Zero1Layout& layout() const { return layout_; }
  // shard_grads[g]: this rank's slice of group g's reduced gradient (size group_shard(g).size()).
  // Global-norm clipping of the slices (a collective): the statistics of every rank's slices
  // summed on the device (one all-reduce of a (2,) f64 tensor), the slices scaled there when the
  // global norm exceeds max_norm > 0 (optim/clip.h's clip_by_stats), and the summed statistics
  // read once: on CUDA the step's one synchronisation. The same on every rank.
  GradStats clip_shard_grads(const std::vector<Tensor>& shard_grads, double max_norm);
  // AdamW on this rank's pieces at learning rate lr, then the all-gather of the parameters.
  void step(double lr, const std::vector<Tensor>& shard_grads);
  int64_t step_count() const { return inner_->step_count(); }
  DecaySummary decay_summary() const;

  // Full moments, identical on every rank (a collective: every rank must call it).
  NamedTensors gather_state();
  // Full moments as saved by AdamW::named_state() or gather_state(); keeps this rank's pieces.
  void load_state(const NamedTensors& full, int64_t step_count);

 private:
  NamedTensors params_;
  std::vector<std::vector<size_t>> groups_;
  Zero1Layout layout_;
  Communicator& comm_;
  NamedTensors piece_views_;  // "<param>@<begin>": views of the parameters' storage
  std::vector<bool> decays_;  // per parameter
  std::unique_ptr<AdamW> inner_;
};

}  // namespace tstl
