#include "train/model_config.h"

namespace tstl {

ModelConfig model_config_from(const Config& cfg, int64_t tokenizer_vocab) {
  ModelConfig m;
  m.variant = parse_variant(cfg.get<std::string>("model.variant"));
  m.layers = cfg.get<int64_t>("model.layers");
  m.hidden = cfg.get<int64_t>("model.hidden");
  m.heads = cfg.get<int64_t>("model.heads");
  m.ffn = cfg.get<int64_t>("model.ffn");
  if (m.ffn == 0) m.ffn = 4 * m.hidden;
  m.vocab_size = cfg.get<int64_t>("model.vocab_size");
  if (m.vocab_size == 0) {
    TSTL_CHECK(tokenizer_vocab > 0, "model.vocab_size is 0 (take the tokenizer's) but no tokenizer is known here; "
               "set model.vocab_size in ", cfg.source().empty() ? "the config" : cfg.source());
    m.vocab_size = tokenizer_vocab;
  }
  TSTL_CHECK(tokenizer_vocab == 0 || m.vocab_size == tokenizer_vocab, "model.vocab_size = ", m.vocab_size,
             " but the tokenizer has ", tokenizer_vocab, " tokens");
  m.train_len = cfg.get<int64_t>("model.train_len");
  m.rope_base = cfg.get<double>("model.rope_base");
  m.rmsnorm = cfg.get<std::string>("model.norm") == "rmsnorm";
  m.norm_eps = cfg.get<double>("model.norm_eps");
  m.parallel_residual = cfg.get<std::string>("model.residual") == "parallel";
  m.bias = cfg.get<bool>("model.bias");
  m.init_std = cfg.get<double>("model.init_std");
  m.logn = cfg.get<bool>("model.logn");
  m.attention_backend = parse_attention_backend(cfg.get<std::string>("model.attention_backend"));
  m.validate();
  return m;
}

}  // namespace tstl
