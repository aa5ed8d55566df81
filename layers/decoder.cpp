#include "layers/decoder.h"

#include <cmath>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/token_ids.h"
#include "layers/coca.h"
#include "layers/flash_attention.h"
#include "layers/flash_attention_cudnn.h"
#include "layers/heads.h"
#include "layers/keynorm.h"
#include "layers/linear.h"
#include "layers/norm.h"

namespace tstl {

namespace {
const std::pair<const char*, Variant> kVariants[] = {{"rope", Variant::Rope},
                                                     {"alibi", Variant::Alibi},
                                                     {"keynorm", Variant::KeyNorm},
                                                     {"coca", Variant::Coca},
                                                     {"coca-strict", Variant::CocaStrict}};

std::string layer_prefix(int64_t i) { return "gpt_neox.layers." + std::to_string(i) + "."; }
}  // namespace

Variant parse_variant(const std::string& name) {
  for (const auto& [n, v] : kVariants)
    if (name == n) return v;
  TSTL_FAIL("unknown attention variant '", name, "' (expected rope, alibi, keynorm, coca or coca-strict)");
}

const char* variant_name(Variant v) {
  for (const auto& [n, value] : kVariants)
    if (v == value) return n;
  return "?";
}

bool variant_uses_rope(Variant v) { return v != Variant::Alibi; }

void ModelConfig::validate() const {
  TSTL_CHECK(layers >= 1, "model.layers must be >= 1, got ", layers);
  TSTL_CHECK(hidden >= 1 && heads >= 1, "model.hidden and model.heads must be >= 1");
  TSTL_CHECK(hidden % heads == 0, "model.hidden (", hidden, ") must be a multiple of model.heads (", heads, ")");
  TSTL_CHECK(head_dim() % 2 == 0 || variant == Variant::Alibi, "the head dimension hidden/heads = ", head_dim(),
             " must be even for rotary variants");
  TSTL_CHECK(ffn >= 1, "model.ffn must be >= 1, got ", ffn);
  TSTL_CHECK(vocab_size >= 2, "model.vocab_size must be >= 2, got ", vocab_size);
  TSTL_CHECK(train_len >= 2, "model.train_len must be >= 2, got ", train_len);
  TSTL_CHECK(norm_eps > 0, "model.norm_eps must be > 0, got ", norm_eps);
  TSTL_CHECK(init_std > 0, "model.init_std must be > 0, got ", init_std);
  TSTL_CHECK(rope_base > 1, "model.rope_base must be > 1, got ", rope_base);
  TSTL_CHECK(!logn || variant_uses_rope(variant), "model.logn applies to the rotary variants, not alibi");
  if (attention_backend == AttentionBackend::Cudnn) {
    TSTL_CHECK(!logn, "model.attention_backend = cudnn does not cover model.logn = true (cuDNN's SDPA has no per-row "
               "logit factor); use attention_backend = tstl");
    TSTL_CHECK(variant != Variant::Alibi || (heads & (heads - 1)) == 0, "model.attention_backend = cudnn covers "
               "alibi only with cuDNN's slopes 2^(-8h/H) for a power-of-two model.heads, got heads = ", heads,
               "; use attention_backend = tstl");
  }
}

std::vector<std::pair<std::string, Shape>> parameter_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, Shape>> shapes;
  auto add = [&](const std::string& name, Shape s) { shapes.emplace_back(name, std::move(s)); };
  auto add_norm = [&](const std::string& name) {
    add(name + ".weight", {c.hidden});
    if (!c.rmsnorm) add(name + ".bias", {c.hidden});
  };
  auto add_linear = [&](const std::string& name, int64_t out, int64_t in) {
    add(name + ".weight", {out, in});
    if (c.bias) add(name + ".bias", {out});
  };
  add("gpt_neox.embed_in.weight", {c.vocab_size, c.hidden});
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = layer_prefix(i);
    add_norm(p + "input_layernorm");
    add_norm(p + "post_attention_layernorm");
    add_linear(p + "attention.query_key_value", 3 * c.hidden, c.hidden);
    add_linear(p + "attention.dense", c.hidden, c.hidden);
    add_linear(p + "mlp.dense_h_to_4h", c.ffn, c.hidden);
    add_linear(p + "mlp.dense_4h_to_h", c.hidden, c.ffn);
  }
  add_norm("gpt_neox.final_layer_norm");
  add("embed_out.weight", {c.vocab_size, c.hidden});
  return shapes;
}

Decoder::Decoder(const ModelConfig& config, DType dtype, Device device)
    : config_(config), dtype_(dtype), device_(device) {
  config_.validate();
  TSTL_CHECK(config_.attention_backend != AttentionBackend::Cudnn || device == Device::CUDA,
             "model.attention_backend = cudnn runs on CUDA only, but the model is on ", device_name(device),
             "; set train.device = cuda (or --device cuda) or attention_backend = tstl");
  TSTL_CHECK(config_.attention_backend != AttentionBackend::Cudnn || kernels::cudnn_attention_available(),
             "model.attention_backend = cudnn: this tstl was built without the cuDNN frontend (scripts/install-deps "
             "installs it next to cuDNN; then reconfigure); use attention_backend = tstl");
  for (const auto& [name, shape] : parameter_shapes(config_)) add_parameter(name, shape);
}

Tensor& Decoder::add_parameter(const std::string& name, const Shape& shape) {
  index_[name] = params_.size();
  params_.emplace_back(name, Tensor::zeros(shape, dtype_, device_));
  params_.back().second.set_requires_grad(true);
  return params_.back().second;
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_norm_gain(const std::string& name) {
  return ends_with(name, "layernorm.weight") || ends_with(name, "final_layer_norm.weight");
}
}  // namespace

void Decoder::initialize(uint64_t seed) {
  Generator gen{seed, 0};
  for (auto& [name, p] : params_) {
    if (is_norm_gain(name)) {
      p.fill_(1.0);
    } else if (ends_with(name, ".bias")) {
      p.fill_(0.0);
    } else {
      normal_(p, gen, 0.0, config_.init_std);
    }
  }
}

Tensor Decoder::parameter(const std::string& name) const {
  auto it = index_.find(name);
  TSTL_CHECK(it != index_.end(), "the model has no parameter named '", name, "'");
  return params_[it->second].second;
}

int64_t Decoder::parameter_count(bool include_embeddings) const {
  int64_t n = 0;
  for (const auto& [name, p] : params_)
    if (include_embeddings || (name != "gpt_neox.embed_in.weight" && name != "embed_out.weight")) n += p.numel();
  return n;
}

void Decoder::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

namespace {
const char* const kEmbedIn = "gpt_neox.embed_in.weight";
}

void Decoder::cast_weights(DType dtype) {
  TSTL_CHECK(dtype == DType::BF16 || dtype == DType::F32, "Decoder::cast_weights: expected bf16 or f32, got ",
             dtype_name(dtype));
  cast_params_.clear();
  if (dtype == dtype_) return;  // forward() uses the masters themselves
  cast_params_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].first != kEmbedIn) cast_params_[i] = cast(params_[i].second, dtype);
}

void Decoder::drop_cast_weights() { cast_params_.clear(); }

DType Decoder::activation_dtype() const {
  for (const Tensor& t : cast_params_)
    if (t.defined()) return t.dtype();
  return dtype_;
}

const Tensor& Decoder::weight(const std::string& name) const {
  auto it = index_.find(name);
  TSTL_CHECK(it != index_.end(), "the model has no parameter named '", name, "'");
  if (!cast_params_.empty() && cast_params_[it->second].defined()) return cast_params_[it->second];
  return params_[it->second].second;
}

Tensor Decoder::norm(const std::string& prefix, const Tensor& x) const {
  if (config_.rmsnorm) return rms_norm(x, weight(prefix + ".weight"), config_.norm_eps);
  return layer_norm(x, weight(prefix + ".weight"), weight(prefix + ".bias"), config_.norm_eps);
}

Tensor Decoder::attention(int64_t layer, const Tensor& h, const ForwardOptions& options, int64_t past) const {
  const ModelConfig& c = config_;
  const std::string p = layer_prefix(layer) + "attention.";
  const int64_t n = h.size(1), total = options.total_len > 0 ? options.total_len : past + n;
  auto optional_weight = [&](const std::string& name) { return c.bias ? weight(name) : Tensor(); };
  Tensor qkv = linear(h, weight(p + "query_key_value.weight"), optional_weight(p + "query_key_value.bias"));
  Tensor q = split_heads(qkv, c.heads, 0);  // (B, H, N, d)
  Tensor k = split_heads(qkv, c.heads, 1);  // (B, H, N, d): T for CoCA
  Tensor v = split_heads(qkv, c.heads, 2);  // (B, H, N, d)

  AttentionOptions attn;
  attn.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim()));
  if (variant_uses_rope(c.variant)) {
    RopeOptions rope = options.rope;
    rope.base = c.rope_base;
    if (rope.train_len == 0) rope.train_len = c.train_len;
    // Tables, factors and slopes in table_dtype_for(h): f32 for bf16 activations.
    const RopeTable table = rope_table(c.head_dim(), past, n, total, rope, table_dtype_for(h.dtype()), h.device());
    switch (c.variant) {
      case Variant::Rope:
        q = tstl::rope(q, table);
        k = tstl::rope(k, table);
        break;
      case Variant::KeyNorm:
        q = tstl::rope(q, table);
        k = tstl::rope(key_norm(k), table);
        attn.scale = 1.0;
        break;
      case Variant::Coca:
        q = coca_query(q, table);
        k = coca_key(k, table);
        break;
      case Variant::CocaStrict:
        q = coca_strict_query(q, table);
        k = coca_strict_key(k, table);
        break;
      case Variant::Alibi: break;
    }
    if (c.logn || options.logn_inference)
      attn.logn = logn_factors(past, n, c.train_len, /*inference=*/!c.logn, table_dtype_for(h.dtype()),
                               h.device());
  } else {
    AlibiOptions alibi = options.alibi;
    TSTL_CHECK(c.attention_backend != AttentionBackend::Cudnn || alibi.scaling == AlibiScaling::None,
               "model.attention_backend = cudnn covers only cuDNN's own ALiBi slopes, not an ALiBi inference scaling; "
               "use attention_backend = tstl");
    if (alibi.train_len == 0) alibi.train_len = c.train_len;
    attn.alibi_slopes = alibi_slopes_tensor(c.heads, total, alibi, table_dtype_for(h.dtype()), h.device());
  }
  if (options.cache) {
    KVCache& cache = *options.cache;
    if (cache.keys.size() < static_cast<size_t>(c.layers)) {
      cache.keys.resize(static_cast<size_t>(c.layers));
      cache.values.resize(static_cast<size_t>(c.layers));
    }
    Tensor& ck = cache.keys[static_cast<size_t>(layer)];
    Tensor& cv = cache.values[static_cast<size_t>(layer)];
    ck = ck.defined() ? concat({ck, k}, 2) : k;
    cv = cv.defined() ? concat({cv, v}, 2) : v;
    k = ck;
    v = cv;
  }
  attn.query_offset = past;
  attn.backend = c.attention_backend;
  if (options.capture) options.capture->push_back({q.detach(), k.detach(), attn});
  Tensor o = flash_attention(q, k, v, attn);  // (B, H, N, d)
  return linear(merge_heads(o), weight(p + "dense.weight"), optional_weight(p + "dense.bias"));
}

Tensor Decoder::forward(const Tensor& ids, const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  TSTL_CHECK(ids.dim() == 2, "Decoder::forward: ids must be (batch, length), got ", shape_str(ids.shape()));
  const int64_t past = options.cache ? options.cache->position() : 0;
  auto optional_weight = [&](const std::string& name) { return c.bias ? weight(name) : Tensor(); };
  // Token ids may come from the host; they follow the parameters to the model's device, checked
  // on the host first (the CUDA kernels read nothing back, core/token_ids.h).
  if (ids.device() == Device::CPU && device_ != Device::CPU) check_embedding_ids(ids, c.vocab_size);
  Tensor x = embedding(parameter(kEmbedIn), ids.device() == device_ ? ids : ids.to(device_));  // (B, N, C)
  x = cast(x, activation_dtype());  // mixed precision: the master rows, rounded once
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = layer_prefix(i);
    auto mlp = [&](const Tensor& h) {
      return gelu_mlp(h, weight(p + "mlp.dense_h_to_4h.weight"), optional_weight(p + "mlp.dense_h_to_4h.bias"),
                      weight(p + "mlp.dense_4h_to_h.weight"), optional_weight(p + "mlp.dense_4h_to_h.bias"));
    };
    if (c.parallel_residual) {  // x + Attn(LN1 x) + MLP(LN2 x)
      Tensor a = attention(i, norm(p + "input_layernorm", x), options, past);
      Tensor m = mlp(norm(p + "post_attention_layernorm", x));
      x = add(add(x, a), m);
    } else {  // x + Attn(LN1 x), then + MLP(LN2 of that)
      x = add(x, attention(i, norm(p + "input_layernorm", x), options, past));
      x = add(x, mlp(norm(p + "post_attention_layernorm", x)));
    }
  }
  x = norm("gpt_neox.final_layer_norm", x);
  return linear(x, weight("embed_out.weight"), Tensor());  // (B, N, V)
}

Tensor Decoder::loss(const Tensor& inputs, const Tensor& targets, int64_t ignore_index) const {
  if (targets.device() == device_) return cross_entropy(forward(inputs), targets, ignore_index);
  // Host targets for a device model: checked and counted here, where they are, so the loss reads
  // nothing back from the device.
  check_target_ids(targets, config_.vocab_size, ignore_index);
  return cross_entropy(forward(inputs), targets.to(device_), ignore_index, count_scored_targets(targets, ignore_index));
}

}  // namespace tstl
