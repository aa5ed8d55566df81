#include "core/autograd.h"

#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace tstl {

namespace {
thread_local bool g_grad_mode = true;
thread_local LeafReadyHook g_leaf_ready;
}

bool grad_mode_enabled() { return g_grad_mode; }
void set_leaf_ready_hook(LeafReadyHook hook) { g_leaf_ready = std::move(hook); }
NoGradGuard::NoGradGuard() : previous_(g_grad_mode) { g_grad_mode = false; }
NoGradGuard::~NoGradGuard() { g_grad_mode = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

void record(Tensor& output, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->backward = std::move(backward);
  node->edges.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn()) {
        e.node = in.grad_fn();
      } else {
        e.leaf = in.impl_ptr();
      }
    }
    node->edges.push_back(std::move(e));
  }
  output.impl().grad_fn = std::move(node);
  output.impl().requires_grad = true;
}

namespace {

Tensor accumulate(const Tensor& into, const Tensor& g) {
  if (!into.defined()) return g;
  NoGradGuard no_grad;
  return add(into, g);
}

}  // namespace

void Tensor::backward() const {
  TSTL_CHECK(numel() == 1, "backward() without a seed needs a scalar, got shape ", shape_str(shape()));
  backward(Tensor::full(shape(), 1.0, dtype(), device()));
}

void Tensor::backward(const Tensor& seed) const {
  TSTL_CHECK(requires_grad(), "backward() on a tensor that does not require grad");
  check_shape(seed, shape(), "backward", "the seed");
  NoGradGuard no_grad;
  if (!grad_fn()) {  // a leaf: the seed is its gradient
    impl().grad = accumulate(grad(), seed).impl_ptr();
    return;
  }
  // Reverse topological order by an iterative depth-first search over the node graph.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Node*, size_t>> stack{{grad_fn().get(), 0}};
  seen.insert(grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->edges.size()) {
      Node* child = node->edges[next++].node.get();
      if (child && seen.insert(child).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  // With a leaf-ready hook: the position (in the walk) of the last node that feeds each leaf.
  std::unordered_map<const TensorImpl*, size_t> last_use;
  std::vector<std::vector<const TensorImpl*>> final_after;
  if (g_leaf_ready) {
    size_t pos = 0;
    for (auto it = order.rbegin(); it != order.rend(); ++it, ++pos)
      for (const Edge& e : (*it)->edges)
        if (e.leaf) last_use[e.leaf.get()] = pos;
    final_after.resize(order.size());
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      for (const Edge& e : (*it)->edges)
        if (e.leaf && last_use.count(e.leaf.get())) {
          final_after[last_use[e.leaf.get()]].push_back(e.leaf.get());
          last_use.erase(e.leaf.get());
        }
  }
  auto leaves_final = [&](size_t pos) {
    if (g_leaf_ready)
      for (const TensorImpl* leaf : final_after[pos]) g_leaf_ready(leaf);
  };
  std::unordered_map<Node*, Tensor> pending;
  pending[grad_fn().get()] = seed;
  size_t pos = 0;
  for (auto it = order.rbegin(); it != order.rend(); ++it, ++pos) {
    Node* node = *it;
    auto found = pending.find(node);
    if (found == pending.end()) {
      leaves_final(pos);
      continue;
    }
    const Tensor g = std::move(found->second);
    pending.erase(found);
    std::vector<Tensor> input_grads = node->backward(g);
    TSTL_CHECK(input_grads.size() == node->edges.size(), "autograd: node ", node->name, " returned ",
               input_grads.size(), " gradients for ", node->edges.size(), " inputs");
    for (size_t i = 0; i < node->edges.size(); ++i) {
      const Edge& e = node->edges[i];
      if (!e.active()) continue;
      const Tensor& gi = input_grads[i];
      TSTL_CHECK(gi.defined(), "autograd: node ", node->name, " gave no gradient for input ", i);
      if (e.node) {
        pending[e.node.get()] = accumulate(pending[e.node.get()], gi);
      } else {
        Tensor leaf(e.leaf);
        check_shape(gi, leaf.shape(), node->name, "the gradient of an input");
        e.leaf->grad = accumulate(leaf.grad(), gi).impl_ptr();
      }
    }
    leaves_final(pos);
  }
}

}  // namespace tstl
