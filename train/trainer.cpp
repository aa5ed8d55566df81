#include "train/trainer.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/autograd.h"
#include "core/cuda_backend.h"
#include "core/ops.h"
#include "data/tokenizer.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/model_cost.h"
#include "train/metrics.h"
#include "train/model_config.h"
#include "train/model_io.h"
#include "train/peak_flops.h"
#include "train/signals.h"

namespace tstl {

namespace {

// (count, window) token rows -> inputs (count, window-1) and targets shifted by one.
void split_window_batch(const std::vector<int32_t>& rows, int64_t count, int64_t window, Tensor& inputs,
                        Tensor& targets) {
  const int64_t len = window - 1;
  inputs = Tensor::empty({count, len}, DType::I32);
  targets = Tensor::empty({count, len}, DType::I32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t r = 0; r < count; ++r) {
    std::memcpy(in + r * len, rows.data() + r * window, static_cast<size_t>(len) * sizeof(int32_t));
    std::memcpy(tg + r * len, rows.data() + r * window + 1, static_cast<size_t>(len) * sizeof(int32_t));
  }
}

}  // namespace

double accumulate_gradients(const Decoder& model, const TrainSampler& sampler, int64_t step, int64_t micro_batch,
                            int64_t grad_accum, int64_t first_micro, int64_t last_micro) {
  if (last_micro < 0) last_micro = grad_accum - 1;
  const int64_t window = sampler.window();
  std::vector<int32_t> rows(static_cast<size_t>(micro_batch * window));
  double weighted = 0;
  for (int64_t micro = first_micro; micro <= last_micro; ++micro) {
    const uint64_t first = global_sample_index(static_cast<uint64_t>(step), micro, 0, 1, micro_batch, grad_accum);
    sampler.fill_batch(first, micro_batch, rows.data());
    Tensor inputs, targets;
    split_window_batch(rows, micro_batch, window, inputs, targets);
    // Every micro-batch scores micro_batch * (window - 1) tokens, the step grad_accum times that:
    // the token weight of each micro-batch's mean loss is 1 / grad_accum.
    const double weight = 1.0 / static_cast<double>(grad_accum);
    Tensor loss = scale(model.loss(inputs, targets), weight);
    loss.backward();
    weighted += loss.item();
  }
  return weighted;
}

double validation_loss(const Decoder& model, const std::vector<std::vector<int32_t>>& windows, int64_t batch) {
  NoGradGuard no_grad;
  double total = 0;
  int64_t count = 0;
  for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(batch)) {
    const int64_t n = std::min<int64_t>(batch, static_cast<int64_t>(windows.size() - first));
    const int64_t window = static_cast<int64_t>(windows[first].size());
    std::vector<int32_t> rows;
    for (int64_t i = 0; i < n; ++i) rows.insert(rows.end(), windows[first + i].begin(), windows[first + i].end());
    Tensor inputs, targets;
    split_window_batch(rows, n, window, inputs, targets);
    total += model.loss(inputs, targets).item() * static_cast<double>(n);
    count += n;
  }
  return count ? total / static_cast<double>(count) : NAN;
}

namespace {

namespace fs = std::filesystem;

constexpr const char* kPartialGrad = "partial_grad.";

struct RunState {
  int64_t step = 0, micro_done = 0, tokens_seen = 0, skipped = 0;
  double partial_loss = 0;  // weighted loss of the micro-batches done of an interrupted step
};

int64_t double_bits(double v) {
  int64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
double bits_double(int64_t b) {
  double v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

void print_config_changes(const Config& saved, const Config& now) {
  for (const auto& d : saved.diff(now, {"model.", "data.", "train.", "optim.", "eval."}))
    std::printf("resume: %s changed: %s -> %s\n", d.key.c_str(), d.value.c_str(), d.other_value.c_str());
}

// Resolves the keys whose 0 means "derive it", so saved configs are explicit.
void resolve_model_keys(Config& cfg, int64_t tokenizer_vocab) {
  if (cfg.get<int64_t>("model.vocab_size") == 0) cfg.set("model.vocab_size", std::to_string(tokenizer_vocab), "the tokenizer");
  if (cfg.get<int64_t>("model.ffn") == 0)
    cfg.set("model.ffn", std::to_string(4 * cfg.get<int64_t>("model.hidden")), "model.ffn = 0 (4 x hidden)");
}

class Trainer {
 public:
  explicit Trainer(Config cfg) : cfg_(std::move(cfg)) {}
  int run();

 private:
  void setup_threads();
  void open_data();
  bool restore();  // true when resuming
  void save(bool partial);
  void log_startup();
  double evaluate();

  Config cfg_;
  std::string out_dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  TokenFile file_;
  TokenSplit train_split_, val_split_;
  std::unique_ptr<TrainSampler> sampler_;
  std::vector<std::vector<int32_t>> val_windows_;
  std::unique_ptr<Decoder> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<CheckpointDir> checkpoints_;
  RunState state_;
  int64_t seq_len_ = 0, batch_ = 0, accum_ = 0, max_steps_ = 0;
  uint64_t seed_ = 0;
  int64_t last_saved_step_ = -1;
};

void Trainer::setup_threads() {
  const int64_t threads = cfg_.get<int64_t>("train.threads");
  if (threads > 0) {
    omp_set_num_threads(static_cast<int>(threads));
    openblas_set_num_threads(static_cast<int>(threads));
  }
}

void Trainer::open_data() {
  const std::string path = cfg_.get<std::string>("data.path");
  TSTL_CHECK(!path.empty(), "data.path is not set: make a token file with `tstl prepare` and pass --data.path FILE.h5");
  TSTL_CHECK(fs::exists(path), "data.path: token file '", path, "' does not exist (make it with `tstl prepare`)");
  const std::string spec = cfg_.get<std::string>("data.tokenizer");
  tokenizer_ = make_tokenizer(spec == "byte" || spec.rfind("spm:", 0) == 0 ? spec : "spm:" + spec);
  file_.open(path);
  check_tokenizer_matches(file_, *tokenizer_);
  train_split_ = file_.split("train");
  if (file_.has_split("val")) val_split_ = file_.split("val");
  const int64_t window = seq_len_ + 1;
  TSTL_CHECK(train_split_.n_tokens() >= window, path, ": the train split has ", train_split_.n_tokens(),
             " tokens, fewer than one window of train.seq_len + 1 = ", window);
  SamplerOptions options;
  options.passkey_fraction = cfg_.get<double>("data.passkey_fraction");
  options.tokenizer = tokenizer_.get();
  sampler_ = std::make_unique<TrainSampler>(train_split_, window, seed_, options);
  const int64_t eval_count = cfg_.get<int64_t>("train.eval_batches") * batch_;
  if (val_split_.n_tokens() >= window && eval_count > 0) val_windows_ = validation_windows(val_split_, window, eval_count);
}

bool Trainer::restore() {
  const std::string mode = cfg_.get<std::string>("train.resume");
  std::vector<std::string> warnings;
  const auto latest = checkpoints_->latest(&warnings);
  if (mode == "never") {
    TSTL_CHECK(!latest, "train.resume = never, but ", checkpoints_->dir(), " already holds checkpoints (newest: step ",
               latest ? latest->step : 0, "); use --train.resume auto to continue that run or choose another train.out_dir");
  }
  if (mode == "must") {
    TSTL_CHECK(latest, "train.resume = must, but ", checkpoints_->dir(), " holds no complete checkpoint to resume from");
  }
  if (!latest) {
    model_->initialize(seed_);
    const std::string init_from = cfg_.get<std::string>("train.init_from");
    if (!init_from.empty()) {
      TSTL_CHECK(fs::exists(init_from), "train.init_from: checkpoint '", init_from, "' does not exist");
      CheckpointState init = load_checkpoint(init_from, /*with_optimizer=*/false);
      load_parameters(*model_, init.parameters, init_from);
      std::printf("init_from: weights of %s (step %lld)\n", init_from.c_str(), static_cast<long long>(init.step));
    }
    return false;
  }
  CheckpointState ck = load_checkpoint(latest->path);
  const Config saved = parse_config(ck.config, latest->path + " (its saved config)");
  const auto fixed = saved.diff(cfg_, {"model.", "data.tokenizer"});
  if (!fixed.empty()) {
    std::string keys;
    for (const auto& d : fixed) keys += "\n  " + d.key + ": checkpoint has " + d.value + ", config has " + d.other_value;
    TSTL_FAIL("cannot resume from ", latest->path, ": the model or tokenizer differs from the checkpoint's:", keys,
              "\n(use another train.out_dir, or train.init_from to start a new run from these weights)");
  }
  TSTL_CHECK(ck.tokenizer == tokenizer_->identity(), "cannot resume from ", latest->path, ": it was trained with tokenizer ",
             ck.tokenizer, ", the data uses ", tokenizer_->identity());
  print_config_changes(saved, cfg_);
  NamedTensors moments, partial;
  for (auto& [name, t] : ck.optimizer) {
    if (name.rfind(kPartialGrad, 0) == 0) {
      partial.emplace_back(name.substr(std::strlen(kPartialGrad)), t);
    } else {
      moments.emplace_back(name, t);
    }
  }
  load_parameters(*model_, ck.parameters, latest->path);
  optimizer_->load_state(moments, ck.optimizer_step);
  state_.step = ck.step;
  state_.tokens_seen = ck.tokens_seen;
  state_.skipped = ck.counters.count("skipped_steps") ? ck.counters.at("skipped_steps") : 0;
  state_.micro_done = ck.counters.count("micro_done") ? ck.counters.at("micro_done") : 0;
  state_.partial_loss = ck.counters.count("partial_loss_bits") ? bits_double(ck.counters.at("partial_loss_bits")) : 0;
  for (auto& [name, g] : partial) model_->parameter(name).set_grad(g.to(model_->device()));
  last_saved_step_ = state_.step;
  std::printf("resumed from %s: step %lld%s, %lld tokens seen\n", latest->path.c_str(), static_cast<long long>(state_.step),
              state_.micro_done ? (" (+" + std::to_string(state_.micro_done) + " micro-batches)").c_str() : "",
              static_cast<long long>(state_.tokens_seen));
  return true;
}

void Trainer::save(bool partial) {
  CheckpointState ck;
  ck.parameters = model_->named_parameters();
  ck.optimizer = optimizer_->named_state();
  if (partial) {  // an interrupted accumulation: keep the gradients summed so far
    for (const auto& [name, p] : model_->named_parameters())
      if (p.grad().defined()) ck.optimizer.emplace_back(kPartialGrad + name, p.grad());
    ck.counters["micro_done"] = state_.micro_done;
    ck.counters["partial_loss_bits"] = double_bits(state_.partial_loss);
  }
  ck.step = state_.step;
  ck.optimizer_step = optimizer_->step_count();
  ck.tokens_seen = state_.tokens_seen;
  ck.data_cursor = global_sample_index(static_cast<uint64_t>(state_.step), state_.micro_done, 0, 1, batch_, accum_);
  ck.rng_seed = seed_;
  ck.config = cfg_.dump();
  ck.tokenizer = tokenizer_->identity();
  ck.counters["skipped_steps"] = state_.skipped;
  const std::string path = checkpoints_->save(ck);
  checkpoints_->prune(cfg_.get<int64_t>("train.keep_last"), cfg_.get<int64_t>("train.keep_every"));
  last_saved_step_ = state_.step;
  std::printf("checkpoint %s\n", path.c_str());
}

double Trainer::evaluate() { return val_windows_.empty() ? NAN : validation_loss(*model_, val_windows_, batch_); }

void Trainer::log_startup() {
  const ModelConfig& m = model_->config();
  const ModelCost cost = model_cost(m, batch_, seq_len_);
  std::printf("tstl train: %s\n", out_dir_.c_str());
  std::printf("model: %s, %lld layers, hidden %lld, %lld heads, ffn %lld, vocab %lld: %lld parameters (%lld without embeddings)\n",
              variant_name(m.variant), static_cast<long long>(m.layers), static_cast<long long>(m.hidden),
              static_cast<long long>(m.heads), static_cast<long long>(m.ffn), static_cast<long long>(m.vocab_size),
              static_cast<long long>(cost.parameters), static_cast<long long>(cost.non_embedding));
  std::printf("memory: weights %.1f MiB, gradients %.1f MiB, AdamW %.1f MiB, activations ~%.1f MiB per micro-batch\n",
              cost.weight_bytes / 1048576.0, cost.gradient_bytes / 1048576.0, cost.optimizer_bytes / 1048576.0,
              cost.activation_bytes / 1048576.0);
  std::printf("optimizer: AdamW; %s\n", optimizer_->decay_summary().str().c_str());
  std::printf("data: %s (%s): %lld train tokens, %llu windows of %lld per epoch; %zu validation windows\n",
              file_.path().c_str(), tokenizer_->identity().c_str(), static_cast<long long>(train_split_.n_tokens()),
              static_cast<unsigned long long>(sampler_->windows_per_epoch()), static_cast<long long>(seq_len_ + 1),
              val_windows_.size());
  if (model_->device() == Device::CUDA) std::printf("device: %s (f32)\n", cuda::device_name().c_str());
  std::printf("steps: %lld x (%lld x %lld micro-batches of %lld tokens) = %lld tokens per step; %d threads\n",
              static_cast<long long>(max_steps_), static_cast<long long>(accum_), static_cast<long long>(batch_),
              static_cast<long long>(seq_len_), static_cast<long long>(accum_ * batch_ * seq_len_), omp_get_max_threads());
  std::fflush(stdout);
}

int Trainer::run() {
  seq_len_ = cfg_.get<int64_t>("train.seq_len");
  batch_ = cfg_.get<int64_t>("train.batch_size");
  accum_ = cfg_.get<int64_t>("train.grad_accum");
  max_steps_ = cfg_.get<int64_t>("train.max_steps");
  seed_ = static_cast<uint64_t>(cfg_.get<int64_t>("train.seed"));
  TSTL_CHECK(seq_len_ >= 1, "train.seq_len must be >= 1, got ", seq_len_);
  TSTL_CHECK(batch_ >= 1, "train.batch_size must be >= 1, got ", batch_);
  TSTL_CHECK(accum_ >= 1, "train.grad_accum must be >= 1, got ", accum_);
  TSTL_CHECK(max_steps_ >= 1, "train.max_steps must be >= 1, got ", max_steps_);
  setup_threads();
  open_data();
  resolve_model_keys(cfg_, tokenizer_->vocab_size());
  const ModelConfig model_config = model_config_from(cfg_, tokenizer_->vocab_size());
  TSTL_CHECK(file_.vocab_size() == model_config.vocab_size, "the token file has vocabulary ", file_.vocab_size(),
             " but model.vocab_size is ", model_config.vocab_size);
  out_dir_ = cfg_.get<std::string>("train.out_dir");
  fs::create_directories(out_dir_);
  checkpoints_ = std::make_unique<CheckpointDir>((fs::path(out_dir_) / "checkpoints").string());
  const Device device = cfg_.get<std::string>("train.device") == "cuda" ? Device::CUDA : Device::CPU;
  if (device == Device::CUDA) {
    TSTL_CHECK(cuda_compiled(), "train.device = cuda, but this tstl was built without the CUDA backend");
    TSTL_CHECK(cuda_available(), "train.device = cuda, but no CUDA device is present");
  }
  model_ = std::make_unique<Decoder>(model_config, DType::F32, device);
  AdamWOptions adam;
  adam.lr = cfg_.get<double>("optim.lr");
  adam.beta1 = cfg_.get<double>("optim.beta1");
  adam.beta2 = cfg_.get<double>("optim.beta2");
  adam.eps = cfg_.get<double>("optim.eps");
  adam.weight_decay = cfg_.get<double>("optim.weight_decay");
  optimizer_ = std::make_unique<AdamW>(model_->named_parameters(), adam,
                                       make_decay_predicate(cfg_.get<std::vector<std::string>>("optim.no_decay")));
  restore();
  {
    std::ofstream out(fs::path(out_dir_) / "config.cfg");
    out << cfg_.dump();
    TSTL_CHECK(out.good(), "cannot write ", (fs::path(out_dir_) / "config.cfg").string());
  }
  log_startup();

  ScheduleOptions schedule;
  schedule.lr = adam.lr;
  schedule.min_lr = cfg_.get<double>("optim.min_lr");
  schedule.warmup_steps = cfg_.get<int64_t>("optim.warmup_steps");
  schedule.max_steps = max_steps_;
  schedule.decay = parse_decay_shape(cfg_.get<std::string>("optim.decay"));
  const double clip = cfg_.get<double>("optim.clip");
  const int64_t max_tokens = cfg_.get<int64_t>("train.max_tokens"), stop_at = cfg_.get<int64_t>("train.stop_at");
  const int64_t log_every = std::max<int64_t>(1, cfg_.get<int64_t>("train.log_every"));
  const int64_t eval_every = cfg_.get<int64_t>("train.eval_every"), save_every = cfg_.get<int64_t>("train.save_every");
  const bool skip_nonfinite = cfg_.get<bool>("train.skip_nonfinite");
  PeakFlops peak{cfg_.get<double>("train.peak_flops"), "configured (train.peak_flops)"};
  if (model_->device() == Device::CUDA && peak.flops <= 0) {
    peak = {gpu_peak_flops(cuda::device_name()), "the device's dense bf16 peak"};  // 0 for a device missing from the table
  } else if (model_->device() == Device::CPU) {
    peak = resolve_cpu_peak(peak.flops);
  }
  if (peak.flops > 0) {
    std::printf("MFU against %.1f GFLOP/s: %s\n", peak.flops * 1e-9, peak.source.c_str());
  } else {
    std::printf("MFU: not computed, %s is not in the table (set train.peak_flops)\n", cuda::device_name().c_str());
  }
  const double peak_gflops = peak.flops * 1e-9;
  const double flops_per_token = model_cost(model_->config(), batch_, seq_len_).flops_per_token;
  const int64_t tokens_per_step = accum_ * batch_ * seq_len_;

  MetricsLog metrics((fs::path(out_dir_) / "metrics.jsonl").string(), state_.step);
  Progress progress(state_.step, max_steps_);
  install_stop_handlers();
  clear_stop_request();
  const auto& params = model_->named_parameters();
  using Clock = std::chrono::steady_clock;

  while (state_.step < max_steps_ && !(max_tokens > 0 && state_.tokens_seen >= max_tokens)) {
    const auto t0 = Clock::now();
    // Micro-batches one at a time, so that a stop request mid-accumulation is honoured with the
    // gradients summed so far saved in the checkpoint.
    while (state_.micro_done < accum_) {
      state_.partial_loss +=
          accumulate_gradients(*model_, *sampler_, state_.step, batch_, accum_, state_.micro_done, state_.micro_done);
      ++state_.micro_done;
      if (stop_requested() && state_.micro_done < accum_) {
        save(/*partial=*/true);
        std::printf("stopped by signal %d during step %lld after %lld of %lld micro-batches; resume with the same command\n",
                    stop_signal(), static_cast<long long>(state_.step + 1), static_cast<long long>(state_.micro_done),
                    static_cast<long long>(accum_));
        return 0;
      }
    }
    const double loss = state_.partial_loss;
    const double norm = clip_grad_norm(params, clip);
    StepMetrics m;
    m.lr = learning_rate(state_.step, schedule);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      const std::string bad = first_nonfinite_gradient(params);
      const std::string what = tstl::str("non-finite ", std::isfinite(loss) ? "gradient" : "loss", " at step ",
                                         state_.step + 1, " (loss ", loss, ", gradient norm ", norm, ")",
                                         bad.empty() ? "" : "; first parameter with a non-finite gradient: " + bad);
      TSTL_CHECK(skip_nonfinite, what, "; the last checkpoint is kept (--train.skip_nonfinite true skips such steps)");
      ++state_.skipped;
      std::printf("skipping step: %s\n", what.c_str());
    } else {
      optimizer_->step(m.lr);
    }
    optimizer_->zero_grad();
    ++state_.step;
    state_.micro_done = 0;
    state_.partial_loss = 0;
    state_.tokens_seen += tokens_per_step;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    m.step = state_.step;
    m.tokens = state_.tokens_seen;
    m.loss = loss;
    m.grad_norm = norm;
    m.ms = seconds * 1e3;
    m.tokens_per_s = static_cast<double>(tokens_per_step) / seconds;
    m.mfu = peak_gflops > 0 ? flops_per_token * m.tokens_per_s / (peak_gflops * 1e9) : 0.0;
    m.skipped_steps = state_.skipped;
    const bool last = state_.step == max_steps_ || (max_tokens > 0 && state_.tokens_seen >= max_tokens);
    if ((eval_every > 0 && state_.step % eval_every == 0) || last) {
      const double val = evaluate();
      if (std::isfinite(val)) m.val_loss = val;
    }
    progress.update(state_.step);
    if (state_.step % log_every == 0 || m.val_loss || last) {
      metrics.write(m);
      std::printf("%s | %s\n", format_step_line(m, max_steps_).c_str(), progress.str().c_str());
      std::fflush(stdout);
    }
    const bool stop = stop_requested() || (stop_at > 0 && state_.step >= stop_at);
    if ((save_every > 0 && state_.step % save_every == 0) || last || stop) save(false);
    if (stop && !last) {
      if (stop_requested()) {
        std::printf("stopped by signal %d after step %lld; resume with the same command\n", stop_signal(),
                    static_cast<long long>(state_.step));
      } else {
        std::printf("stopped at train.stop_at = %lld; resume with the same command\n", static_cast<long long>(stop_at));
      }
      return 0;
    }
  }
  if (last_saved_step_ != state_.step) save(false);
  std::printf("done: %lld steps, %lld tokens; run directory %s\n", static_cast<long long>(state_.step),
              static_cast<long long>(state_.tokens_seen), out_dir_.c_str());
  return 0;
}

}  // namespace

int run_training(Config cfg) { return Trainer(std::move(cfg)).run(); }

}  // namespace tstl
