// cuDNN's fused attention through the frontend graph API (layers/flash_attention_cudnn.h): one
// SDPA graph per (shape, scale, ALiBi, direction), built on first use and cached, executed on
// the stream every tstl kernel uses (cuda::stream(), core/cuda_backend.h).
#include "layers/flash_attention_cudnn.h"

#include "core/error.h"

#ifdef TSTL_WITH_CUDNN_FRONTEND

#include <cudnn_frontend.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "core/cuda_backend.h"
#include "core/cuda_check.h"

namespace tstl::kernels {

namespace {

namespace fe = cudnn_frontend;

// Tensor uids of the graphs' inputs and outputs (the variant pack is keyed by them).
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    CUDNN_CHECK(cudnnCreate(&created));
    CUDNN_CHECK(cudnnSetStream(created, cuda::stream()));
    return created;  // never destroyed: it must outlive tensors released at exit
  }();
  return h;
}

void check(fe::error_t status, const char* step) {
  TSTL_CHECK(status.is_good(), "flash_attention (cuDNN): ", step, " failed: ", status.get_message());
}

struct Key {
  int64_t batch, heads, n_queries, n_keys, head_dim;
  float scale;
  bool alibi, backward;
  bool operator<(const Key& o) const {
    return std::tie(batch, heads, n_queries, n_keys, head_dim, scale, alibi, backward) <
           std::tie(o.batch, o.heads, o.n_queries, o.n_keys, o.head_dim, o.scale, o.alibi, o.backward);
  }
};

// A (B, H, rows, d) contiguous bf16 tensor of the graph.
std::shared_ptr<fe::graph::Tensor_attributes> bhsd(fe::graph::Graph& g, const char* name, int64_t uid, const Key& k,
                                                   int64_t rows) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({k.batch, k.heads, rows, k.head_dim})
                      .set_stride({k.heads * rows * k.head_dim, rows * k.head_dim, k.head_dim, 1}));
}
std::shared_ptr<fe::graph::Tensor_attributes> stats(fe::graph::Graph& g, const Key& k) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name("stats")
                      .set_uid(kStats)
                      .set_dim({k.batch, k.heads, k.n_queries, 1})
                      .set_stride({k.heads * k.n_queries, k.n_queries, 1, 1})
                      .set_data_type(fe::DataType_t::FLOAT));
}

std::shared_ptr<fe::graph::Graph> build(const Key& k) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto q = bhsd(*g, "q", kQ, k, k.n_queries), kk = bhsd(*g, "k", kK, k, k.n_keys), v = bhsd(*g, "v", kV, k, k.n_keys);
  if (!k.backward) {
    auto options = fe::graph::SDPA_attributes()
                       .set_name("tstl_sdpa")
                       .set_generate_stats(true)
                       .set_causal_mask_bottom_right(true)
                       .set_alibi_mask(k.alibi)
                       .set_attn_scale(k.scale);
    auto [o, lse] = g->sdpa(q, kk, v, options);
    o->set_output(true).set_uid(kO).set_dim({k.batch, k.heads, k.n_queries, k.head_dim}).set_stride(
        {k.heads * k.n_queries * k.head_dim, k.n_queries * k.head_dim, k.head_dim, 1});
    lse->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT);
  } else {
    auto o = bhsd(*g, "o", kO, k, k.n_queries), d_o = bhsd(*g, "dO", kDO, k, k.n_queries);
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("tstl_sdpa_backward")
                       .set_causal_mask_bottom_right(true)
                       .set_alibi_mask(k.alibi)
                       .set_attn_scale(k.scale);
    auto [dq, dk, dv] = g->sdpa_backward(q, kk, v, o, d_o, stats(*g, k), options);
    const auto out = [&](const std::shared_ptr<fe::graph::Tensor_attributes>& t, int64_t uid, int64_t rows) {
      t->set_output(true).set_uid(uid).set_dim({k.batch, k.heads, rows, k.head_dim}).set_stride(
          {k.heads * rows * k.head_dim, rows * k.head_dim, k.head_dim, 1});
    };
    out(dq, kDQ, k.n_queries);
    out(dk, kDK, k.n_keys);
    out(dv, kDV, k.n_keys);
  }
  check(g->validate(), "validate");
  check(g->build_operation_graph(handle()), "build_operation_graph");
  check(g->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans");
  check(g->check_support(handle()), "check_support");
  check(g->build_plans(handle()), "build_plans");
  return g;
}

// The cached graph for this key (graphs are built under the lock; execution is not).
std::shared_ptr<fe::graph::Graph> graph_for(const Key& key) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<fe::graph::Graph>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& g = cache[key];
  if (!g) g = build(key);
  return g;
}

Key key_of(const Tensor& q, const Tensor& k, double scale, bool alibi, bool backward) {
  TSTL_CHECK(q.dtype() == DType::BF16 && k.dtype() == DType::BF16, "flash_attention (cuDNN): expected bf16, got ",
             dtype_name(q.dtype()));
  TSTL_CHECK(q.size(2) <= k.size(2), "flash_attention (cuDNN): N = ", q.size(2), " queries after M = ", k.size(2),
             " keys; cuDNN's causal mask puts the queries at the end of the keys (N <= M)");
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), static_cast<float>(scale), alibi, backward};
}

void execute(const fe::graph::Graph& g, std::unordered_map<int64_t, void*>& pack) {
  int64_t workspace_bytes = 0;
  check(g.get_workspace_size(workspace_bytes), "get_workspace_size");
  void* workspace = workspace_bytes > 0 ? cuda::allocate(static_cast<size_t>(workspace_bytes)) : nullptr;
  const fe::error_t status = g.execute(handle(), pack, workspace);
  // The caching allocator may hand the block out again at once: safe, it is reused on this stream only.
  if (workspace) cuda::release(workspace, static_cast<size_t>(workspace_bytes));
  check(status, "execute");
}

void* ptr(const Tensor& t) { return const_cast<void*>(static_cast<const void*>(t.data<bf16>())); }

}  // namespace

bool cudnn_attention_available() { return true; }

void cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool alibi, Tensor& o,
                             Tensor& lse) {
  const auto g = graph_for(key_of(q, k, scale, alibi, false));
  std::unordered_map<int64_t, void*> pack = {
      {kQ, ptr(q)}, {kK, ptr(k)}, {kV, ptr(v)}, {kO, ptr(o)}, {kStats, lse.data<float>()}};
  execute(*g, pack);
}

void cudnn_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                              const Tensor& d_o, double scale, bool alibi, Tensor& dq, Tensor& dk, Tensor& dv) {
  const auto g = graph_for(key_of(q, k, scale, alibi, true));
  std::unordered_map<int64_t, void*> pack = {{kQ, ptr(q)},   {kK, ptr(k)},   {kV, ptr(v)},
                                             {kO, ptr(o)},   {kDO, ptr(d_o)}, {kStats, const_cast<float*>(lse.data<float>())},
                                             {kDQ, ptr(dq)}, {kDK, ptr(dk)}, {kDV, ptr(dv)}};
  execute(*g, pack);
}

}  // namespace tstl::kernels

#else  // no cuDNN frontend

namespace tstl::kernels {

bool cudnn_attention_available() { return false; }

void cudnn_attention_forward(const Tensor&, const Tensor&, const Tensor&, double, bool, Tensor&, Tensor&) {
  TSTL_FAIL("flash_attention (cuDNN): built without the cuDNN frontend (scripts/install-deps installs it where the "
            "CUDA toolkit and cuDNN are present; then reconfigure)");
}
void cudnn_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              double, bool, Tensor&, Tensor&, Tensor&) {
  TSTL_FAIL("flash_attention (cuDNN): built without the cuDNN frontend (scripts/install-deps installs it where the "
            "CUDA toolkit and cuDNN are present; then reconfigure)");
}

}  // namespace tstl::kernels

#endif
