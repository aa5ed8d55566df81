#include "train/grad_buckets.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/error.h"

namespace tstl {

GradBucketPlan::GradBucketPlan(const NamedTensors& params, double bucket_mb) : cap_mb_(bucket_mb) {
  TSTL_CHECK(bucket_mb > 0, "train.bucket_mb must be > 0, got ", bucket_mb);
  const double cap_elements = bucket_mb * 1048576.0 / sizeof(float);
  for (size_t k = params.size(); k-- > 0;) {
    const int64_t n = params[k].second.numel();
    if (buckets_.empty() || static_cast<double>(elements_.back() + n) > cap_elements) {
      buckets_.emplace_back();
      elements_.push_back(0);
    }
    buckets_.back().push_back(k);
    elements_.back() += n;
  }
}

std::string GradBucketPlan::summary() const {
  int64_t largest = 0;
  for (int64_t n : elements_) largest = std::max(largest, n);
  return str(buckets_.size(), " gradient buckets of <= ", cap_mb_, " MiB (largest ",
             static_cast<double>(largest) * sizeof(float) / 1048576.0, " MiB)");
}

GradBuckets::GradBuckets(const NamedTensors& params, const GradBucketPlan& plan, Communicator& comm, bool zero1)
    : params_(params), plan_(plan), comm_(comm), zero1_(zero1) {
  const size_t n = plan.buckets().size();
  pending_.assign(n, 0);
  launched_.assign(n, false);
  for (size_t b = 0; b < n; ++b) {
    const Tensor& first = params_[plan.buckets()[b].front()].second;
    TSTL_CHECK(first.dtype() == DType::F32, "gradient buckets hold f32 gradients; parameter '",
               params_[plan.buckets()[b].front()].first, "' is ", dtype_name(first.dtype()));
    for (size_t i : plan.buckets()[b]) bucket_of_[params_[i].second.impl_ptr().get()] = b;
    flat_.push_back(Tensor::zeros({plan.bucket_elements(b)}, DType::F32, first.device()));
    shard_grads_.push_back(Tensor::zeros({shard_range(plan.bucket_elements(b), comm.world(), comm.rank()).size()},
                                         DType::F32, first.device()));
  }
}

GradBuckets::~GradBuckets() {
  if (active_) set_leaf_ready_hook(nullptr);
}

void GradBuckets::begin() {
  for (size_t b = 0; b < pending_.size(); ++b) {
    pending_[b] = static_cast<int64_t>(plan_.buckets()[b].size());
    launched_[b] = false;
  }
  launched_in_backward_ = 0;
  active_ = true;
  set_leaf_ready_hook([this](const TensorImpl* leaf) { on_leaf_ready(leaf); });
}

void GradBuckets::on_leaf_ready(const TensorImpl* leaf) {
  auto it = bucket_of_.find(leaf);
  if (it == bucket_of_.end()) return;  // a leaf that is not a parameter (an input)
  const size_t b = it->second;
  if (--pending_[b] == 0) {
    launch(b);
    ++launched_in_backward_;
  }
}

void GradBuckets::finish() {
  TSTL_CHECK(active_, "GradBuckets::finish() without begin()");
  set_leaf_ready_hook(nullptr);
  active_ = false;
  for (size_t b = 0; b < launched_.size(); ++b)
    if (!launched_[b]) launch(b);
  if (flat_.empty()) return;
  // CUDA: the compute stream waits here for the collectives (an event; the host goes on).
  comm_.join(flat_.front().device());
  if (zero1_) return;
  for (size_t b = 0; b < flat_.size(); ++b) unpack(b);
}

void GradBuckets::launch(size_t b) {
  launched_[b] = true;
  Tensor& flat = flat_[b];
  int64_t offset = 0;
  for (size_t i : plan_.buckets()[b]) {
    const Tensor& p = params_[i].second;
    const Tensor g = p.grad();
    Tensor slot = flat.flat_slice(offset, p.numel());
    if (g.defined()) {
      slot.copy_(g.reshape({p.numel()}));
    } else {
      slot.fill_(0.0);
    }
    offset += p.numel();
  }
  if (zero1_) {
    comm_.reduce_scatter_async(flat, shard_grads_[b], ReduceOp::Sum);
  } else {
    comm_.all_reduce_async(flat, ReduceOp::Sum);
  }
}

void GradBuckets::unpack(size_t b) {
  // Into fresh tensors: a leaf's .grad() may share storage with a gradient that another leaf
  // still holds (an op can hand the same tensor to several inputs).
  const Tensor& flat = flat_[b];
  int64_t offset = 0;
  for (size_t i : plan_.buckets()[b]) {
    Tensor& p = params_[i].second;
    if (p.grad().defined()) {
      Tensor summed = Tensor::empty(p.shape(), DType::F32, p.device());
      summed.flat_slice(0, p.numel()).copy_(flat.flat_slice(offset, p.numel()));
      p.set_grad(summed);
    }
    offset += p.numel();
  }
}

}  // namespace tstl
