#include "optim/zero1.h"

#include <map>

#include "core/autograd.h"
#include "core/error.h"

namespace tstl {

Zero1Layout::Zero1Layout(const NamedTensors& params, const std::vector<std::vector<size_t>>& groups, int world,
                         int rank) {
  std::vector<int> seen(params.size(), 0);
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t n = 0;
    for (size_t i : groups[g]) {
      TSTL_CHECK(i < params.size(), "zero1: group ", g, " names parameter ", i, " of ", params.size());
      TSTL_CHECK(seen[i]++ == 0, "zero1: parameter '", params[i].first, "' appears in two groups");
      n += params[i].second.numel();
    }
    const ShardRange mine = shard_range(n, world, rank);
    group_sizes_.push_back(n);
    group_shards_.push_back(mine);
    int64_t offset = 0;  // of the current parameter in the group
    for (size_t i : groups[g]) {
      const int64_t numel = params[i].second.numel();
      const int64_t begin = std::max(offset, mine.begin), end = std::min(offset + numel, mine.end);
      if (begin < end) pieces_.push_back({i, begin - offset, end - begin, g, begin - mine.begin});
      offset += numel;
    }
  }
  for (size_t i = 0; i < params.size(); ++i)
    TSTL_CHECK(seen[i] == 1, "zero1: parameter '", params[i].first, "' is in no group");
}

int64_t Zero1Layout::shard_elements() const {
  int64_t n = 0;
  for (const ShardRange& r : group_shards_) n += r.size();
  return n;
}

namespace {
std::string piece_name(const NamedTensors& params, const ShardPiece& p) {
  return params[p.param].first + "@" + std::to_string(p.begin);
}
}  // namespace

Zero1AdamW::Zero1AdamW(NamedTensors params, std::vector<std::vector<size_t>> groups, AdamWOptions options,
                       DecayPredicate decays, Communicator& comm)
    : params_(std::move(params)),
      groups_(std::move(groups)),
      layout_(params_, groups_, comm.world(), comm.rank()),
      comm_(comm) {
  // The decision is the whole parameter's (a 1-D piece of a matrix still decays).
  std::map<std::string, bool> piece_decays;
  for (const auto& [name, p] : params_) decays_.push_back(decays(name, p));
  for (const ShardPiece& piece : layout_.pieces()) {
    const std::string name = piece_name(params_, piece);
    piece_views_.emplace_back(name, params_[piece.param].second.flat_slice(piece.begin, piece.length));
    piece_decays[name] = decays_[piece.param];
  }
  inner_ = std::make_unique<AdamW>(piece_views_, options,
                                   [piece_decays](const std::string& name, const Tensor&) { return piece_decays.at(name); });
}

GradStats Zero1AdamW::clip_shard_grads(const std::vector<Tensor>& shard_grads, double max_norm) {
  NoGradGuard no_grad;
  Device device = Device::CPU;
  for (const Tensor& g : shard_grads) device = g.device();
  Tensor stats = grad_stats_on_device(shard_grads, device);  // (2) this rank's, then every rank's
  comm_.all_reduce_async(stats, ReduceOp::Sum);
  comm_.join(device);
  clip_by_stats(shard_grads, stats, max_norm);
  return read_grad_stats(stats);
}

void Zero1AdamW::step(double lr, const std::vector<Tensor>& shard_grads) {
  NoGradGuard no_grad;
  TSTL_CHECK(shard_grads.size() == layout_.groups(), "zero1: ", shard_grads.size(), " gradient slices for ",
             layout_.groups(), " groups");
  for (size_t k = 0; k < piece_views_.size(); ++k) {
    const ShardPiece& piece = layout_.pieces()[k];
    piece_views_[k].second.set_grad(shard_grads[piece.group].flat_slice(piece.shard_offset, piece.length));
  }
  inner_->step(lr);
  for (auto& [name, view] : piece_views_) view.zero_grad();
  // Every group's parameters, reassembled from the ranks' updated slices: all gathers are started
  // (on CUDA they queue on the communication stream, each after its slice is packed), joined
  // (the compute stream waits for them; the host does not), then unpacked.
  std::vector<Tensor> mine(groups_.size()), full(groups_.size());  // per group: (shard size), (group size)
  Device device = Device::CPU;
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (layout_.group_elements(g) == 0) continue;
    const Tensor& first = params_[groups_[g].front()].second;
    device = first.device();
    mine[g] = Tensor::empty({layout_.group_shard(g).size()}, first.dtype(), first.device());
    full[g] = Tensor::empty({layout_.group_elements(g)}, first.dtype(), first.device());
    for (const ShardPiece& piece : layout_.pieces())
      if (piece.group == g)
        mine[g].flat_slice(piece.shard_offset, piece.length)
            .copy_(params_[piece.param].second.flat_slice(piece.begin, piece.length));
    comm_.all_gather_async(mine[g], full[g]);
  }
  comm_.join(device);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (layout_.group_elements(g) == 0) continue;
    int64_t offset = 0;
    for (size_t i : groups_[g]) {
      Tensor& p = params_[i].second;
      p.flat_slice(0, p.numel()).copy_(full[g].flat_slice(offset, p.numel()));
      offset += p.numel();
    }
  }
}

DecaySummary Zero1AdamW::decay_summary() const {
  DecaySummary d;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = params_[i].second.numel();
    (decays_[i] ? d.decayed_tensors : d.plain_tensors) += 1;
    (decays_[i] ? d.decayed_elements : d.plain_elements) += n;
  }
  return d;
}

NamedTensors Zero1AdamW::gather_state() {
  const NamedTensors pieces_state = inner_->named_state();  // exp_avg.* then exp_avg_sq.*, piece order
  const size_t n_pieces = piece_views_.size();
  NamedTensors full_m, full_v;
  for (const auto& [name, p] : params_) {
    full_m.emplace_back("exp_avg." + name, Tensor::empty(p.shape(), p.dtype(), Device::CPU));
    full_v.emplace_back("exp_avg_sq." + name, Tensor::empty(p.shape(), p.dtype(), Device::CPU));
  }
  for (int which = 0; which < 2; ++which) {
    NamedTensors& out = which == 0 ? full_m : full_v;
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (layout_.group_elements(g) == 0) continue;
      const Tensor& first = params_[groups_[g].front()].second;
      Tensor mine = Tensor::empty({layout_.group_shard(g).size()}, first.dtype(), first.device());
      Tensor full = Tensor::empty({layout_.group_elements(g)}, first.dtype(), first.device());
      for (size_t k = 0; k < n_pieces; ++k) {
        const ShardPiece& piece = layout_.pieces()[k];
        if (piece.group == g)
          mine.flat_slice(piece.shard_offset, piece.length).copy_(pieces_state[which * n_pieces + k].second);
      }
      comm_.all_gather(mine, full);
      int64_t offset = 0;
      for (size_t i : groups_[g]) {
        Tensor& t = out[i].second;
        t.flat_slice(0, t.numel()).copy_(full.flat_slice(offset, t.numel()));
        offset += t.numel();
      }
    }
  }
  NamedTensors state = std::move(full_m);
  for (auto& entry : full_v) state.push_back(std::move(entry));
  return state;
}

void Zero1AdamW::load_state(const NamedTensors& full, int64_t step_count) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : full) by_name[name] = &t;
  NamedTensors pieces_state;
  for (const char* prefix : {"exp_avg.", "exp_avg_sq."}) {
    for (size_t k = 0; k < piece_views_.size(); ++k) {
      const ShardPiece& piece = layout_.pieces()[k];
      const auto& [pname, p] = params_[piece.param];
      auto it = by_name.find(prefix + pname);
      TSTL_CHECK(it != by_name.end(), "adamw state: '", prefix, pname, "' is missing");
      TSTL_CHECK(it->second->numel() == p.numel(), "adamw state: '", prefix, pname, "' has shape ",
                 shape_str(it->second->shape()), ", the parameter needs ", shape_str(p.shape()));
      pieces_state.emplace_back(prefix + piece_views_[k].first, it->second->flat_slice(piece.begin, piece.length));
    }
  }
  inner_->load_state(pieces_state, step_count);
}

}  // namespace tstl
