#include "train/trainer.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "core/autograd.h"
#include "core/comm.h"
#include "core/cuda_backend.h"
#include "core/ops.h"
#include "data/tokenizer.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "optim/zero1.h"
#include "train/checkpoint.h"
#include "train/grad_buckets.h"
#include "train/metrics.h"
#include "train/model_config.h"
#include "train/model_cost.h"
#include "train/model_io.h"
#include "train/peak_flops.h"
#include "train/run_config.h"
#include "train/signals.h"
#include "train/tensorboard.h"

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

Tensor micro_batch_backward(const Decoder& model, const TrainSampler& sampler, uint64_t first_sample,
                            int64_t micro_batch, double weight) {
  const int64_t window = sampler.window();
  std::vector<int32_t> rows(static_cast<size_t>(micro_batch * window));
  sampler.fill_batch(first_sample, micro_batch, rows.data());
  Tensor inputs, targets;
  split_window_batch(rows, micro_batch, window, inputs, targets);
  Tensor loss = scale(model.loss(inputs, targets), weight);
  loss.backward();
  return cast(loss.detach(), DType::F64);
}

double accumulate_gradients(const Decoder& model, const TrainSampler& sampler, int64_t step, int64_t micro_batch,
                            int64_t grad_accum, int64_t first_micro, int64_t last_micro) {
  if (last_micro < 0) last_micro = grad_accum - 1;
  double weighted = 0;
  for (int64_t micro = first_micro; micro <= last_micro; ++micro) {
    const uint64_t first = global_sample_index(static_cast<uint64_t>(step), micro, 0, 1, micro_batch, grad_accum);
    // Every micro-batch scores micro_batch * (window - 1) tokens, the step grad_accum times that:
    // the token weight of each micro-batch's mean loss is 1 / grad_accum.
    weighted += micro_batch_backward(model, sampler, first, micro_batch, 1.0 / static_cast<double>(grad_accum)).item();
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
using Clock = std::chrono::steady_clock;

struct RunState {
  int64_t step = 0, tokens_seen = 0, skipped = 0;
  int64_t micro_done = 0;   // micro-batches of the current step already run
  double partial_loss = 0;  // their weighted losses, summed
  Tensor partial_loss_on_device;  // () f64: the same sum, not yet read, between accumulate_step and apply_update
  uint64_t cursor = 0;      // global sample index where step `step` starts (the data cursor)
};

// FNV-1a over bytes: a checksum for comparing ranks' state, not a cryptographic hash.
uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void print_config_changes(const Config& saved, const Config& now) {
  for (const auto& d : saved.diff(now, {"model.", "data.", "train.", "optim.", "eval."}))
    std::printf("resume: %s changed: %s -> %s\n", d.key.c_str(), d.value.c_str(), d.other_value.c_str());
}

// The keys whose 0 means "derive it" (model_config_from derives them) take the derived values,
// so the saved config is explicit.
void write_back_derived_model_keys(Config& cfg, const ModelConfig& m) {
  if (cfg.get<int64_t>("model.vocab_size") == 0) cfg.set("model.vocab_size", std::to_string(m.vocab_size), "the tokenizer");
  if (cfg.get<int64_t>("model.ffn") == 0) cfg.set("model.ffn", std::to_string(m.ffn), "model.ffn = 0 (4 x hidden)");
}

class Trainer {
 public:
  explicit Trainer(Config cfg)
      : cfg_(std::move(cfg)), data_(data_config_from(cfg_)), train_(train_config_from(cfg_)),
        optim_(optim_config_from(cfg_)) {}
  int run();

 private:
  // Setup, in order: ranks, threads, data, model and optimizer, the checkpoint to resume, the
  // start state checked across ranks, the startup log.
  void setup();
  void setup_ranks();
  void setup_threads();
  void open_data();
  ModelConfig resolve_model_config();  // also writes the derived model keys back into the config
  void build_model(const ModelConfig& model_config);
  void build_optimizer();  // AdamW, or ZeRO-1 and the gradient buckets (docs/distributed.md)
  bool restore();  // true when resuming
  void synchronize_start();  // rank 0's state everywhere, checked by checksum
  void write_config() const;
  void log_startup();
  void start_metrics();  // peak FLOP/s for MFU, the metrics log (rank 0), progress, signals
  // The micro-batches of the current step not yet run; false when a stop request came between
  // two of them (the partial step is then saved).
  bool accumulate_step();
  // Clipping and the AdamW update of the accumulated gradients (or the skip of a non-finite step).
  StepMetrics apply_update();
  double clip_gradients(bool& finite);  // returns the global norm before clipping
  void optimizer_step(double lr);
  NamedTensors optimizer_state();  // full, unsharded (a collective under ZeRO-1)
  bool stop_agreed() const;        // a signal on any rank stops every rank after the same step
  // After a step: evaluation, the metrics line, the checkpoint; true when the run stops here.
  bool after_step(StepMetrics& m);
  bool finished() const {
    return state_.step >= train_.max_steps || (train_.max_tokens > 0 && state_.tokens_seen >= train_.max_tokens);
  }
  void save(bool partial);
  double evaluate();
  bool lead() const { return comm_->rank() == 0; }
  int world() const { return comm_->world(); }
  int64_t samples_per_step() const { return world() * train_.grad_accum * train_.batch_size; }  // the global batch
  int64_t tokens_per_step() const { return world() * train_.tokens_per_step(); }

  Config cfg_;
  DataConfig data_;
  TrainConfig train_;
  OptimConfig optim_;
  std::unique_ptr<Tokenizer> tokenizer_;
  TokenFile file_;
  TokenSplit train_split_, val_split_;
  std::unique_ptr<TrainSampler> sampler_;
  std::vector<std::vector<int32_t>> val_windows_;
  std::unique_ptr<Decoder> model_;
  std::unique_ptr<AdamW> optimizer_;      // train.zero = 0
  std::unique_ptr<Zero1AdamW> zero_;      // train.zero = 1
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<GradBucketPlan> bucket_plan_;
  std::unique_ptr<GradBuckets> buckets_;  // world > 1 or ZeRO-1
  std::unique_ptr<CheckpointDir> checkpoints_;
  std::unique_ptr<MetricsLog> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // when train.tensorboard
  std::unique_ptr<Progress> progress_;
  RunState state_;
  double peak_gflops_ = 0, flops_per_token_ = 0;
  int64_t last_saved_step_ = -1;
};

void Trainer::setup_ranks() {
  comm_ = std::make_unique<Communicator>(dist_env(), CommOptions{train_.comm_timeout_s});
  // One log per job: ranks other than 0 keep stdout quiet (their errors still go to stderr).
  if (!lead()) TSTL_CHECK(std::freopen("/dev/null", "w", stdout), "rank ", comm_->rank(), ": cannot silence stdout");
}

void Trainer::setup_threads() {
  if (train_.threads > 0) {
    omp_set_num_threads(static_cast<int>(train_.threads));
    openblas_set_num_threads(static_cast<int>(train_.threads));
  }
}

void Trainer::open_data() {
  const std::string& path = data_.path;
  TSTL_CHECK(!path.empty(), "data.path is not set: make a token file with `tstl prepare` and pass --data.path FILE.h5");
  TSTL_CHECK(fs::exists(path), "data.path: token file '", path, "' does not exist (make it with `tstl prepare`)");
  file_.open(path);
  tokenizer_ = tokenizer_for_file(data_.tokenizer, file_);
  check_tokenizer_matches(file_, *tokenizer_);
  train_split_ = file_.split("train");
  if (file_.has_split("val")) val_split_ = file_.split("val");
  const int64_t window = train_.seq_len + 1;
  TSTL_CHECK(train_split_.n_tokens() >= window, path, ": the train split has ", train_split_.n_tokens(),
             " tokens, fewer than one window of train.seq_len + 1 = ", window);
  SamplerOptions options;
  options.passkey_fraction = data_.passkey_fraction;
  options.tokenizer = tokenizer_.get();
  sampler_ = std::make_unique<TrainSampler>(train_split_, window, train_.seed, options);
  const int64_t eval_count = train_.eval_batches * train_.batch_size;
  if (val_split_.n_tokens() >= window && eval_count > 0) val_windows_ = validation_windows(val_split_, window, eval_count);
}

ModelConfig Trainer::resolve_model_config() {
  const ModelConfig model_config = model_config_from(cfg_, tokenizer_->vocab_size());
  write_back_derived_model_keys(cfg_, model_config);
  TSTL_CHECK(file_.vocab_size() == model_config.vocab_size, "the token file has vocabulary ", file_.vocab_size(),
             " but model.vocab_size is ", model_config.vocab_size);
  return model_config;
}

void Trainer::build_model(const ModelConfig& model_config) {
  if (train_.device == Device::CUDA) {
    TSTL_CHECK(cuda_compiled(), "train.device = cuda, but this tstl was built without the CUDA backend");
    TSTL_CHECK(cuda_available(), "train.device = cuda, but no CUDA device is present");
    if (world() > 1) cuda::select_device(comm_->env().local_rank);  // one GPU per rank, before any allocation
  }
  // The parameters are the f32 master weights in either precision; bf16 runs on copies made per
  // step (cast_weights in accumulate_step and evaluate).
  model_ = std::make_unique<Decoder>(model_config, DType::F32, train_.device);
  if (cfg_.get<std::string>("train.precision") == "auto")  // the saved config says what ran
    cfg_.set("train.precision", dtype_name(train_.precision),
             str("train.precision = auto on ", device_name(train_.device)));
}

void Trainer::build_optimizer() {
  const DecayPredicate decays = make_decay_predicate(optim_.no_decay);
  const bool sharded = train_.zero == 1;
  if (world() > 1 || sharded) {
    bucket_plan_ = std::make_unique<GradBucketPlan>(model_->named_parameters(), train_.bucket_mb);
    buckets_ = std::make_unique<GradBuckets>(model_->named_parameters(), *bucket_plan_, *comm_, sharded);
  }
  if (sharded) {
    zero_ = std::make_unique<Zero1AdamW>(model_->named_parameters(), bucket_plan_->buckets(), optim_.adamw, decays, *comm_);
  } else {
    optimizer_ = std::make_unique<AdamW>(model_->named_parameters(), optim_.adamw, decays);
  }
}

bool Trainer::restore() {
  std::vector<std::string> warnings;
  const auto latest = checkpoints_->latest(&warnings);
  if (train_.resume == ResumeMode::Never) {
    TSTL_CHECK(!latest, "train.resume = never, but ", checkpoints_->dir(), " already holds checkpoints (newest: step ",
               latest ? latest->step : 0, "); use --train.resume auto to continue that run or choose another train.out_dir");
  }
  if (train_.resume == ResumeMode::Must) {
    TSTL_CHECK(latest, "train.resume = must, but ", checkpoints_->dir(), " holds no complete checkpoint to resume from");
  }
  if (!latest) {
    model_->initialize(train_.seed);
    if (!train_.init_from.empty()) {
      TSTL_CHECK(fs::exists(train_.init_from), "train.init_from: checkpoint '", train_.init_from, "' does not exist");
      CheckpointState init = load_checkpoint(train_.init_from, /*with_optimizer=*/false);
      load_parameters(*model_, init.parameters, train_.init_from);
      std::printf("init_from: weights of %s (step %lld)\n", train_.init_from.c_str(), static_cast<long long>(init.step));
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
  load_parameters(*model_, ck.parameters, latest->path);
  if (zero_) {
    zero_->load_state(ck.optimizer, ck.optimizer_step);
  } else {
    optimizer_->load_state(ck.optimizer, ck.optimizer_step);
  }
  state_.step = ck.step;
  state_.tokens_seen = ck.tokens_seen;
  state_.skipped = ck.counters.count("skipped_steps") ? ck.counters.at("skipped_steps") : 0;
  state_.micro_done = ck.accumulation.micro_batches;
  state_.partial_loss = ck.accumulation.loss_sum;
  // The cursor is global: the same sample sequence continues at any world size.
  state_.cursor = ck.data_cursor - static_cast<uint64_t>(state_.micro_done * train_.batch_size);
  TSTL_CHECK(state_.micro_done == 0 || (world() == 1 && !buckets_), "cannot resume from ", latest->path, " with ",
             world(), " ranks", buckets_ ? " or ZeRO-1" : "", ": it was saved by one process in the middle of step ",
             state_.step + 1, " (", state_.micro_done, " micro-batches done); resume it with one process and",
             " train.zero = 0 to complete that step, then at any world size");
  for (auto& [name, g] : ck.accumulation.grads) model_->parameter(name).set_grad(g.to(model_->device()));
  last_saved_step_ = state_.step;
  std::printf("resumed from %s: step %lld%s, %lld tokens seen\n", latest->path.c_str(), static_cast<long long>(state_.step),
              state_.micro_done ? (" (+" + std::to_string(state_.micro_done) + " micro-batches)").c_str() : "",
              static_cast<long long>(state_.tokens_seen));
  return true;
}

void Trainer::save(bool partial) {
  CheckpointState ck;
  ck.optimizer = optimizer_state();  // every rank: a collective under ZeRO-1
  if (!lead()) {  // one writer; the others wait until the file is complete
    comm_->barrier();
    last_saved_step_ = state_.step;
    return;
  }
  ck.parameters = model_->named_parameters();
  if (partial) {  // an interrupted accumulation: keep the gradients summed so far
    for (const auto& [name, p] : model_->named_parameters())
      if (p.grad().defined()) ck.accumulation.grads.emplace_back(name, p.grad());
    ck.accumulation.micro_batches = state_.micro_done;
    ck.accumulation.loss_sum = state_.partial_loss;
  }
  ck.step = state_.step;
  ck.optimizer_step = zero_ ? zero_->step_count() : optimizer_->step_count();
  ck.tokens_seen = state_.tokens_seen;
  ck.data_cursor = state_.cursor + static_cast<uint64_t>(state_.micro_done * train_.batch_size);
  ck.rng_seed = train_.seed;
  ck.config = cfg_.dump();
  ck.tokenizer = tokenizer_->identity();
  ck.counters["skipped_steps"] = state_.skipped;
  const std::string path = checkpoints_->save(ck);
  checkpoints_->prune(train_.keep_last, train_.keep_every);
  last_saved_step_ = state_.step;
  std::printf("checkpoint %s\n", path.c_str());
  std::fflush(stdout);
  comm_->barrier();
}

double Trainer::evaluate() {
  if (val_windows_.empty()) return NAN;
  // Announced before it starts, so that a long evaluation does not look like a hang (and a test
  // can send a signal while it runs).
  std::printf("step %lld: validation loss over %zu windows\n", static_cast<long long>(state_.step), val_windows_.size());
  std::fflush(stdout);
  if (train_.precision != DType::F32) {  // copies of this step's weights, without a graph
    NoGradGuard no_grad;
    model_->cast_weights(train_.precision);
  }
  if (world() == 1) return validation_loss(*model_, val_windows_, train_.batch_size);
  // Each rank scores its slice of the fixed windows; the mean is over all of them.
  const int64_t n = static_cast<int64_t>(val_windows_.size());
  const ShardRange mine = shard_range(n, world(), comm_->rank());
  const std::vector<std::vector<int32_t>> part(val_windows_.begin() + mine.begin, val_windows_.begin() + mine.end);
  const double total =
      part.empty() ? 0.0 : validation_loss(*model_, part, train_.batch_size) * static_cast<double>(part.size());
  return comm_->sum(total) / static_cast<double>(n);
}

NamedTensors Trainer::optimizer_state() { return zero_ ? zero_->gather_state() : optimizer_->named_state(); }

void Trainer::synchronize_start() {
  if (world() == 1) return;
  // Rank 0's parameters and (unsharded) moments everywhere: every rank initialised or loaded the
  // same values, and this makes it so even if a file changed between their reads.
  for (auto& [name, p] : model_->named_parameters()) comm_->broadcast(const_cast<Tensor&>(p), 0);
  if (optimizer_)
    for (auto& [name, m] : optimizer_->named_state()) comm_->broadcast(const_cast<Tensor&>(m), 0);
  uint64_t h = 14695981039346656037ull;
  for (const auto& [name, p] : model_->named_parameters()) {
    const Tensor host = p.to(Device::CPU);
    h = fnv1a(h, host.raw(), host.nbytes());
  }
  const std::string config = cfg_.dump();
  h = fnv1a(h, config.data(), config.size());
  const int64_t counters[] = {state_.step, static_cast<int64_t>(state_.cursor), state_.tokens_seen};
  h = fnv1a(h, counters, sizeof counters);
  Tensor all = Tensor::zeros({world()}, DType::I64);
  Tensor mine = Tensor::from_vector<int64_t>({static_cast<int64_t>(h)}, {1});
  comm_->all_gather(mine, all);
  std::string differ;
  for (int r = 1; r < world(); ++r)
    if (all.data<int64_t>()[r] != all.data<int64_t>()[0]) differ += " " + std::to_string(r);
  TSTL_CHECK(differ.empty(), "the start state (parameters, config, step, data cursor) of rank(s)", differ,
             " differs from rank 0's: launch every rank with the same command line and files");
}

void Trainer::log_startup() {
  const ModelConfig& m = model_->config();
  const int64_t batch = train_.batch_size, seq_len = train_.seq_len, accum = train_.grad_accum;
  const ModelCost cost = model_cost(m, batch, seq_len);
  std::printf("tstl train: %s\n", train_.out_dir.c_str());
  std::printf("model: %s, %lld layers, hidden %lld, %lld heads, ffn %lld, vocab %lld: %lld parameters (%lld without embeddings)\n",
              variant_name(m.variant), static_cast<long long>(m.layers), static_cast<long long>(m.hidden),
              static_cast<long long>(m.heads), static_cast<long long>(m.ffn), static_cast<long long>(m.vocab_size),
              static_cast<long long>(cost.parameters), static_cast<long long>(cost.non_embedding));
  std::printf("memory: weights %.1f MiB, gradients %.1f MiB, AdamW %.1f MiB, activations ~%.1f MiB per micro-batch\n",
              cost.weight_bytes / 1048576.0, cost.gradient_bytes / 1048576.0, cost.optimizer_bytes / 1048576.0,
              cost.activation_bytes / 1048576.0);
  std::printf("optimizer: AdamW%s; %s\n", zero_ ? " with ZeRO-1 (moments sharded over the ranks)" : "",
              (zero_ ? zero_->decay_summary() : optimizer_->decay_summary()).str().c_str());
  std::printf("ranks: %s, %d in all; collectives: %s%s%s\n", comm_->env().str().c_str(), world(),
              comm_->engine_name(model_->device()).c_str(), bucket_plan_ ? "; " : "",
              bucket_plan_ ? bucket_plan_->summary().c_str() : "");
  std::printf("data: %s (%s): %lld train tokens, %llu windows of %lld per epoch; %zu validation windows\n",
              file_.path().c_str(), tokenizer_->identity().c_str(), static_cast<long long>(train_split_.n_tokens()),
              static_cast<unsigned long long>(sampler_->windows_per_epoch()), static_cast<long long>(seq_len + 1),
              val_windows_.size());
  const std::string device = model_->device() == Device::CUDA ? cuda::device_name() : std::string("cpu");
  if (train_.precision == DType::BF16) {
    std::printf("device: %s; precision bf16: f32 master weights, AdamW moments and gradients, bf16 weight copies"
                " (one cast per step) and activations\n", device.c_str());
  } else {
    std::printf("device: %s; precision f32\n", device.c_str());
  }
  const std::string ranks = world() > 1 ? str(world(), " ranks x ") : "";
  std::printf("steps: %lld x (%s%lld x %lld micro-batches of %lld tokens) = %lld tokens per step; %d threads%s\n",
              static_cast<long long>(train_.max_steps), ranks.c_str(), static_cast<long long>(accum),
              static_cast<long long>(batch), static_cast<long long>(seq_len), static_cast<long long>(tokens_per_step()),
              omp_get_max_threads(), world() > 1 ? " per rank" : "");
  std::fflush(stdout);
}

void Trainer::write_config() const {
  if (!lead()) return;  // one writer per job
  std::ofstream out(fs::path(train_.out_dir) / "config.cfg");
  out << cfg_.dump();
  TSTL_CHECK(out.good(), "cannot write ", (fs::path(train_.out_dir) / "config.cfg").string());
}

void Trainer::start_metrics() {
  PeakFlops peak{train_.peak_flops, "configured (train.peak_flops)"};
  if (model_->device() == Device::CUDA && peak.flops <= 0) {
    peak = {gpu_peak_flops(cuda::device_name()), "the device's dense bf16 peak"};  // 0 for a device missing from the table
  } else if (model_->device() == Device::CPU && lead()) {  // only rank 0 reports MFU
    peak = resolve_cpu_peak(peak.flops);
  }
  if (peak.flops > 0) {
    std::printf("MFU against %.1f GFLOP/s per rank: %s\n", peak.flops * 1e-9, peak.source.c_str());
  } else if (lead()) {
    std::printf("MFU: not computed, %s is not in the table (set train.peak_flops)\n", cuda::device_name().c_str());
  }
  peak_gflops_ = peak.flops * 1e-9 * world();  // MFU of the job: every rank's peak
  flops_per_token_ = model_cost(model_->config(), train_.batch_size, train_.seq_len).flops_per_token;
  if (lead()) {
    metrics_ = std::make_unique<MetricsLog>((fs::path(train_.out_dir) / "metrics.jsonl").string(), state_.step);
    if (train_.tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>(train_.out_dir, state_.step);
  }
  progress_ = std::make_unique<Progress>(state_.step, train_.max_steps);
  install_stop_handlers();
  clear_stop_request();
}

void Trainer::setup() {
  setup_ranks();
  setup_threads();
  open_data();
  const ModelConfig model_config = resolve_model_config();
  fs::create_directories(train_.out_dir);
  checkpoints_ = std::make_unique<CheckpointDir>((fs::path(train_.out_dir) / "checkpoints").string());
  build_model(model_config);
  build_optimizer();
  restore();
  synchronize_start();
  write_config();
  log_startup();
  start_metrics();
}

bool Trainer::accumulate_step() {
  // Micro-batches one at a time, so that a stop request mid-accumulation is honoured with the
  // gradients summed so far saved in the checkpoint.
  const int64_t accum = train_.grad_accum;
  const int64_t batch = train_.batch_size;
  // Every micro-batch's mean loss weighs 1 / (grad_accum x world) of the step: the ranks' summed
  // gradients are then the global batch's mean-loss gradient.
  const double weight = 1.0 / static_cast<double>(accum * world());
  // Mixed precision: this step's bf16 copies of the weights, cast once for all its micro-batches;
  // each micro-batch's backward runs through the casts into the masters' f32 gradients.
  if (train_.precision != DType::F32) model_->cast_weights(train_.precision);
  // The weighted losses are summed on the model's device, starting from what a resumed step had
  // summed (the same f64 additions in the same order as summing on the host), and read once: when
  // the step ends (apply_update) or is saved half-way.
  Tensor loss_sum = Tensor::from_vector(std::vector<double>{state_.partial_loss}, {}).to(model_->device());  // ()
  while (state_.micro_done < accum) {
    // The last micro-batch's backward launches the gradient buckets as they complete.
    if (buckets_ && state_.micro_done == accum - 1) buckets_->begin();
    const uint64_t first = state_.cursor + static_cast<uint64_t>((comm_->rank() * accum + state_.micro_done) * batch);
    loss_sum = add(loss_sum, micro_batch_backward(*model_, *sampler_, first, batch, weight));
    ++state_.micro_done;
    // With several ranks (or ZeRO-1) a stop waits for the step's end, where all ranks agree on it.
    if (!buckets_ && stop_requested() && state_.micro_done < accum) {
      state_.partial_loss = loss_sum.item();
      save(/*partial=*/true);
      std::printf("stopped by signal %d during step %lld after %lld of %lld micro-batches; resume with the same command\n",
                  stop_signal(), static_cast<long long>(state_.step + 1), static_cast<long long>(state_.micro_done),
                  static_cast<long long>(accum));
      return false;
    }
  }
  state_.partial_loss_on_device = loss_sum;
  return true;
}

StepMetrics Trainer::apply_update() {
  const auto& params = model_->named_parameters();
  if (buckets_) buckets_->finish();
  bool finite_grad = true;
  const double norm = clip_gradients(finite_grad);  // reads the statistics and the loss: the step's wait
  const double loss = world() > 1 ? comm_->sum(state_.partial_loss) : state_.partial_loss;
  StepMetrics m;
  m.lr = learning_rate(state_.step, optim_.schedule);
  if (!std::isfinite(loss) || !finite_grad) {  // the same values, so the same decision, on every rank
    const std::string bad = zero_ ? "" : first_nonfinite_gradient(params);
    const std::string what = tstl::str("non-finite ", std::isfinite(loss) ? "gradient" : "loss", " at step ",
                                       state_.step + 1, " (loss ", loss, ", gradient norm ", norm, ")",
                                       bad.empty() ? "" : "; first parameter with a non-finite gradient: " + bad);
    TSTL_CHECK(train_.skip_nonfinite, what, "; the last checkpoint is kept (--train.skip_nonfinite true skips such steps)");
    ++state_.skipped;
    std::printf("skipping step: %s\n", what.c_str());
  } else {
    optimizer_step(m.lr);
  }
  model_->drop_cast_weights();  // stale now: the next step (or evaluation) casts the new weights
  for (const auto& [name, p] : params) Tensor(p).zero_grad();  // the same parameter, its gradient dropped
  ++state_.step;
  state_.micro_done = 0;
  state_.partial_loss = 0;
  state_.cursor += static_cast<uint64_t>(samples_per_step());
  state_.tokens_seen += tokens_per_step();
  m.step = state_.step;
  m.tokens = state_.tokens_seen;
  m.loss = loss;
  m.grad_norm = norm;
  m.skipped_steps = state_.skipped;
  m.precision = dtype_name(train_.precision);
  return m;
}

double Trainer::clip_gradients(bool& finite) {
  // The step's loss sum (accumulate_step) is read here too, into state_.partial_loss.
  Tensor loss_sum = std::exchange(state_.partial_loss_on_device, Tensor());  // () f64
  if (!loss_sum.defined())
    loss_sum = Tensor::from_vector(std::vector<double>{state_.partial_loss}, {}).to(model_->device());
  if (!zero_) {  // one device read for the norm and the loss
    const double norm =
        clip_grad_norm_reading(model_->named_parameters(), optim_.clip, loss_sum, state_.partial_loss);
    finite = std::isfinite(norm);
    return norm;
  }
  // ZeRO-1: each rank holds a slice of the reduced gradient; the norm is over all slices (read
  // inside clip_shard_grads, after its all-reduce), then the loss (a second, short read on CUDA).
  const GradStats all = zero_->clip_shard_grads(buckets_->shard_grads(), optim_.clip);
  state_.partial_loss = loss_sum.item();
  const double norm = std::sqrt(all.sum_squares);
  finite = std::isfinite(norm) && all.nonfinite == 0;
  return norm;
}

void Trainer::optimizer_step(double lr) {
  if (zero_) {
    zero_->step(lr, buckets_->shard_grads());
  } else {
    optimizer_->step(lr);
  }
}

bool Trainer::stop_agreed() const { return world() > 1 ? comm_->any(stop_requested()) : stop_requested(); }

bool Trainer::after_step(StepMetrics& m) {
  const bool last = finished();
  if ((train_.eval_every > 0 && state_.step % train_.eval_every == 0) || last) {
    const double val = evaluate();
    if (std::isfinite(val)) m.val_loss = val;
  }
  progress_->update(state_.step);
  if (lead() && (state_.step % train_.log_every == 0 || m.val_loss || last)) {
    metrics_->write(m);
    if (tensorboard_) tensorboard_->write(m);
    std::printf("%s | %s\n", format_step_line(m, train_.max_steps).c_str(), progress_->str().c_str());
    std::fflush(stdout);
  }
  const bool signalled = stop_agreed();
  const bool stop = signalled || (train_.stop_at > 0 && state_.step >= train_.stop_at);
  if ((train_.save_every > 0 && state_.step % train_.save_every == 0) || last || stop) save(false);
  if (!stop || last) return false;
  if (signalled) {
    const std::string by = stop_requested() ? str("signal ", stop_signal()) : std::string("a signal to another rank");
    std::printf("stopped by %s after step %lld; resume with the same command\n", by.c_str(),
                static_cast<long long>(state_.step));
  } else {
    std::printf("stopped at train.stop_at = %lld; resume with the same command\n", static_cast<long long>(train_.stop_at));
  }
  return true;
}

int Trainer::run() {
  setup();
  while (!finished()) {
    const auto t0 = Clock::now();
    if (!accumulate_step()) return 0;
    StepMetrics m = apply_update();
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    m.ms = seconds * 1e3;
    m.tokens_per_s = static_cast<double>(tokens_per_step()) / seconds;
    m.mfu = peak_gflops_ > 0 ? flops_per_token_ * m.tokens_per_s / (peak_gflops_ * 1e9) : 0.0;
    if (after_step(m)) return 0;
  }
  if (last_saved_step_ != state_.step) save(false);
  comm_->barrier();  // no rank exits 0 before the last checkpoint is complete
  std::printf("done: %lld steps, %lld tokens; run directory %s\n", static_cast<long long>(state_.step),
              static_cast<long long>(state_.tokens_seen), train_.out_dir.c_str());
  return 0;
}

}  // namespace

int run_training(Config cfg) { return Trainer(std::move(cfg)).run(); }

}  // namespace tstl
