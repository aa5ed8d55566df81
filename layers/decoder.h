// The decoder language model: token embedding, N pre-LN transformer blocks (parallel residual as
// in GPT-NeoX by default, sequential as an option), a final norm and an untied LM head. The
// attention variant is a prologue in front of the shared flash kernel (design.md):
//   rope         q, k rotated (RoPE), scale 1/sqrt(d)
//   alibi        no rotation, per-head linear bias -m_h (i - j), scale 1/sqrt(d)
//   keynorm      k L2-normalised, q and k rotated, scale 1
//   coca         Q~ = q * R q, K~ = R [relu(avg halves of T)] duplicated, scale 1/sqrt(d)
//   coca-strict  the rank-d strict CoCA form, scale 1/sqrt(d)
// Parameter names and layouts follow Hugging Face GPT-NeoX (docs/model.md); for CoCA the key slot
// of the fused QKV projection holds T.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/alibi.h"
#include "layers/flash_attention.h"
#include "layers/rope.h"

namespace tstl {

enum class Variant { Rope, Alibi, KeyNorm, Coca, CocaStrict };
Variant parse_variant(const std::string& name);  // throws naming the valid choices
const char* variant_name(Variant v);
bool variant_uses_rope(Variant v);  // every variant but alibi

struct ModelConfig {
  Variant variant = Variant::Rope;
  int64_t layers = 2, hidden = 64, heads = 4, ffn = 256, vocab_size = 259, train_len = 128;
  double rope_base = 10000;
  bool rmsnorm = false;  // else LayerNorm
  double norm_eps = 1e-5;
  bool parallel_residual = true;
  bool bias = true;
  double init_std = 0.02;
  bool logn = false;  // log-n query scaling trained in (docs/variants.md, "Log-n")
  AttentionBackend attention_backend = AttentionBackend::Tstl;  // docs/attention.md, "Backends"

  int64_t head_dim() const { return hidden / heads; }
  void validate() const;  // throws naming the offending key
};

// Per-layer cache of the prologue's keys (rotated k, normalised k, or K~) and the values, each
// (B, H, M, d), for incremental decoding. position() is the number of cached positions.
struct KVCache {
  std::vector<Tensor> keys, values;
  int64_t position() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
  void clear() {
    keys.clear();
    values.clear();
  }
};

// One layer's attention inputs after the prologue, for analysis (`tstl eval attention`): q
// (B, H, N, d), k (B, H, M, d) (cached keys included) and the options flash_attention got, so
// that layers/attention_reference.h reproduces the layer's scores and probabilities.
struct AttentionCapture {
  Tensor q, k;
  AttentionOptions options;
};

// Inference-time settings; the defaults reproduce training.
struct ForwardOptions {
  RopeOptions rope;          // base is taken from the model config; scaling from here
  AlibiOptions alibi;
  bool logn_inference = false;  // apply max(1, log(p+1)/log(L_train)) on a model not trained with log-n
  int64_t total_len = 0;     // the length dynamic methods scale for (0: past + current tokens)
  KVCache* cache = nullptr;  // when set, keys/values are appended and attention covers them all
  std::vector<AttentionCapture>* capture = nullptr;  // when set, one entry per layer is appended
};

class Decoder {
 public:
  // Parameters in `dtype` (f32 for training; f64 for gradient checks) on `device`.
  explicit Decoder(const ModelConfig& config, DType dtype = DType::F32, Device device = Device::CPU);
  // Weights N(0, init_std) from Philox(seed) in parameter order, biases 0, norm gains 1.
  void initialize(uint64_t seed);

  // ids (B, N) i32 -> logits (B, N, V).
  Tensor forward(const Tensor& ids, const ForwardOptions& options = {}) const;
  // Mean next-token cross-entropy of logits(inputs) against targets (B, N), ignoring ignore_index.
  Tensor loss(const Tensor& inputs, const Tensor& targets, int64_t ignore_index = -1) const;

  const ModelConfig& config() const { return config_; }
  Device device() const { return device_; }
  // In a fixed order (the order of initialisation and of checkpoints).
  const std::vector<std::pair<std::string, Tensor>>& named_parameters() const { return params_; }
  Tensor parameter(const std::string& name) const;  // throws naming the missing parameter
  int64_t parameter_count(bool include_embeddings = true) const;
  void zero_grad();

  // Mixed precision (docs/training.md, "Mixed precision"): the parameters stay the master
  // weights; cast_weights(bf16) makes the copies that forward() then computes with, one
  // differentiable cast per parameter, so that every backward through them (one per micro-batch)
  // accumulates its gradient into the masters' f32 .grad(). The input embedding is a gather, not
  // a product: it reads the master rows and rounds the gathered rows to bf16 (no copy). Made under
  // NoGradGuard, the copies carry no graph (evaluation). drop_cast_weights() returns forward() to
  // the master weights; the copies are stale once an optimizer step has changed the masters.
  void cast_weights(DType dtype);
  void drop_cast_weights();
  DType activation_dtype() const;  // the copies' dtype while they exist, else the parameters'

 private:
  Tensor& add_parameter(const std::string& name, const Shape& shape);
  const Tensor& weight(const std::string& name) const;  // the copy of parameter(name), or the master
  Tensor attention(int64_t layer, const Tensor& h, const ForwardOptions& options, int64_t past) const;
  Tensor norm(const std::string& prefix, const Tensor& x) const;

  ModelConfig config_;
  DType dtype_;
  Device device_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Tensor> cast_params_;  // cast_weights' copies in params_' order (embed_in undefined), or empty
  std::map<std::string, size_t> index_;
};

// Parameter shapes and counts without allocating (for `tstl info` on the 1.3B config).
std::vector<std::pair<std::string, Shape>> parameter_shapes(const ModelConfig& config);

}  // namespace tstl
