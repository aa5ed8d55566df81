// The [data], [train] and [optim] sections of a validated Config as typed structs, filled once
// (as model_config_from fills ModelConfig) so the trainer reads fields, not keys. Each *_from
// checks what the schema cannot: ranges and relations between keys, with errors naming the key,
// its value and what was expected. docs/config.md gives every key's meaning and default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/config.h"

namespace tstl {

struct DataConfig {
  std::string path;
  std::string tokenizer;  // data.tokenizer as given: byte, a SentencePiece model, hf:PATH, external:NAME (tokenizer_for_file)
  double passkey_fraction = 0;
};

enum class ResumeMode { Auto, Must, Never };

struct TrainConfig {
  std::string out_dir;
  uint64_t seed = 0;
  int64_t seq_len = 0, batch_size = 0, grad_accum = 0, max_steps = 0;  // each >= 1
  int64_t max_tokens = 0;  // 0: no limit
  int64_t stop_at = 0;     // 0: off
  int64_t log_every = 1;   // >= 1 (0 in the file means every step)
  bool tensorboard = false;  // the logged scalars also as a TensorBoard event file (train/tensorboard.h)
  int64_t eval_every = 0, eval_batches = 0, save_every = 0, keep_last = 0, keep_every = 0;
  ResumeMode resume = ResumeMode::Auto;
  std::string init_from;
  bool skip_nonfinite = false;
  int64_t threads = 0;  // 0: all cores
  Device device = Device::CPU;
  // The activations' dtype (docs/training.md, "Mixed precision"): f32, or bf16 with f32 master
  // weights; train.precision = auto resolves to bf16 on CUDA and f32 on the CPU.
  DType precision = DType::F32;
  double peak_flops = 0;  // FLOP/s; 0: the cached CPU peak or the GPU table (train/peak_flops.h)
  // Data parallel (docs/distributed.md).
  int64_t zero = 0;              // 0: every rank holds all AdamW moments; 1: ZeRO-1, sharded
  double bucket_mb = 25;         // MiB of f32 gradient per all-reduce bucket
  double comm_timeout_s = 600;   // a collective not complete after this ends the job
  // Per rank: the job's step is world x this.
  int64_t tokens_per_step() const { return grad_accum * batch_size * seq_len; }
};

struct OptimConfig {
  AdamWOptions adamw;
  ScheduleOptions schedule;  // max_steps is train.max_steps
  double clip = 0;           // 0: no clipping
  std::vector<std::string> no_decay;
};

DataConfig data_config_from(const Config& cfg);
TrainConfig train_config_from(const Config& cfg);
OptimConfig optim_config_from(const Config& cfg);

}  // namespace tstl
