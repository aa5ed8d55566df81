// Autograd: an eager tape at op granularity. An op computes its result and, when grad mode is on
// and an input requires grad, attaches a Node: the edges to its inputs and a backward closure
// that maps the output gradient to one gradient per input. The closure captures only what its
// backward needs. backward() walks nodes in reverse topological order, summing the gradients
// that reach a tensor from several uses, and accumulates (+=) into the .grad of leaves.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace tstl {

// Where a gradient goes: the node that produced the input, or the leaf itself. Holding the
// producer's node (not the input tensor) lets intermediate activations be freed after forward.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  bool active() const { return node || leaf; }
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  const char* name = "";
  std::vector<Edge> edges;  // one per input, inactive for inputs that need no gradient
  BackwardFn backward;      // returns one gradient per input (undefined where not needed)
};

bool grad_mode_enabled();

// Turns gradient recording off for its lifetime (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Called by backward() with each leaf whose gradient is final for that pass: every node of the
// graph that feeds the leaf has run (or was not reached), so nothing more will be added to its
// .grad() in this pass. Leaves become final in the order of the backward walk, which is the same
// on every rank for the same graph; gradient buckets launch their all-reduce from this hook.
// The hook is per thread; an empty function removes it.
using LeafReadyHook = std::function<void(const TensorImpl* leaf)>;
void set_leaf_ready_hook(LeafReadyHook hook);

// True when grad mode is on and any of the inputs requires grad: the op must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
// Marks `output` as produced by `name` from `inputs`; `backward` is called with dL/d(output).
void record(Tensor& output, const char* name, const std::vector<Tensor>& inputs, BackwardFn backward);

}  // namespace tstl
