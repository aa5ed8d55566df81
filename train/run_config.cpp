#include "train/run_config.h"

#include <algorithm>

#include "core/error.h"

namespace tstl {

DataConfig data_config_from(const Config& cfg) {
  DataConfig d;
  d.path = cfg.get<std::string>("data.path");
  d.tokenizer = cfg.get<std::string>("data.tokenizer");
  d.passkey_fraction = cfg.get<double>("data.passkey_fraction");
  return d;
}

namespace {
int64_t at_least_one(const Config& cfg, const char* key) {
  const int64_t v = cfg.get<int64_t>(key);
  TSTL_CHECK(v >= 1, key, " must be >= 1, got ", v);
  return v;
}
}  // namespace

TrainConfig train_config_from(const Config& cfg) {
  TrainConfig t;
  t.out_dir = cfg.get<std::string>("train.out_dir");
  t.seed = static_cast<uint64_t>(cfg.get<int64_t>("train.seed"));
  t.seq_len = at_least_one(cfg, "train.seq_len");
  t.batch_size = at_least_one(cfg, "train.batch_size");
  t.grad_accum = at_least_one(cfg, "train.grad_accum");
  t.max_steps = at_least_one(cfg, "train.max_steps");
  t.max_tokens = cfg.get<int64_t>("train.max_tokens");
  t.stop_at = cfg.get<int64_t>("train.stop_at");
  t.log_every = std::max<int64_t>(1, cfg.get<int64_t>("train.log_every"));
  t.tensorboard = cfg.get<bool>("train.tensorboard");
  t.eval_every = cfg.get<int64_t>("train.eval_every");
  t.eval_batches = cfg.get<int64_t>("train.eval_batches");
  t.save_every = cfg.get<int64_t>("train.save_every");
  t.keep_last = cfg.get<int64_t>("train.keep_last");
  t.keep_every = cfg.get<int64_t>("train.keep_every");
  const std::string resume = cfg.get<std::string>("train.resume");
  t.resume = resume == "must" ? ResumeMode::Must : resume == "never" ? ResumeMode::Never : ResumeMode::Auto;
  t.init_from = cfg.get<std::string>("train.init_from");
  t.skip_nonfinite = cfg.get<bool>("train.skip_nonfinite");
  t.threads = cfg.get<int64_t>("train.threads");
  t.device = cfg.get<std::string>("train.device") == "cuda" ? Device::CUDA : Device::CPU;
  const std::string precision = cfg.get<std::string>("train.precision");
  t.precision = precision == "bf16" || (precision == "auto" && t.device == Device::CUDA) ? DType::BF16 : DType::F32;
  t.peak_flops = cfg.get<double>("train.peak_flops");
  t.zero = cfg.get<int64_t>("train.zero");
  TSTL_CHECK(t.zero == 0 || t.zero == 1, "train.zero must be 0 (plain data parallel) or 1 (ZeRO-1), got ", t.zero);
  t.bucket_mb = cfg.get<double>("train.bucket_mb");
  TSTL_CHECK(t.bucket_mb > 0, "train.bucket_mb must be > 0, got ", t.bucket_mb);
  t.comm_timeout_s = cfg.get<double>("train.comm_timeout_s");
  TSTL_CHECK(t.comm_timeout_s > 0, "train.comm_timeout_s must be > 0, got ", t.comm_timeout_s);
  return t;
}

OptimConfig optim_config_from(const Config& cfg) {
  OptimConfig o;
  o.adamw.lr = cfg.get<double>("optim.lr");
  o.adamw.beta1 = cfg.get<double>("optim.beta1");
  o.adamw.beta2 = cfg.get<double>("optim.beta2");
  o.adamw.eps = cfg.get<double>("optim.eps");
  o.adamw.weight_decay = cfg.get<double>("optim.weight_decay");
  o.schedule.lr = o.adamw.lr;
  o.schedule.min_lr = cfg.get<double>("optim.min_lr");
  TSTL_CHECK(o.schedule.min_lr <= o.schedule.lr, "optim.min_lr = ", o.schedule.min_lr, " is greater than optim.lr = ",
             o.schedule.lr, " (the schedule decays from lr down to min_lr)",
             cfg.source().empty() ? "" : " in " + cfg.source());
  o.schedule.warmup_steps = cfg.get<int64_t>("optim.warmup_steps");
  o.schedule.max_steps = cfg.get<int64_t>("train.max_steps");
  o.schedule.decay = parse_decay_shape(cfg.get<std::string>("optim.decay"));
  o.clip = cfg.get<double>("optim.clip");
  o.no_decay = cfg.get<std::vector<std::string>>("optim.no_decay");
  return o;
}

}  // namespace tstl
