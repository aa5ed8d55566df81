// The training loop behind `tstl train` (docs/training.md): data, model, AdamW, schedule,
// gradient accumulation, evaluation, checkpoints with exact resume, signals and metrics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/sampler.h"
#include "layers/decoder.h"
#include "train/config.h"

namespace tstl {

// Forward and backward of the micro-batch of global samples [first_sample, first_sample +
// micro_batch), its mean loss weighted by `weight`; gradients accumulate into the parameters'
// .grad. Returns the weighted loss as a detached f64 scalar on the model's device: on CUDA reading
// it is a synchronisation, so the trainer sums the step's losses there and reads them once.
Tensor micro_batch_backward(const Decoder& model, const TrainSampler& sampler, uint64_t first_sample,
                            int64_t micro_batch, double weight);

// One optimizer step's forward and backward passes: micro-batches first_micro..grad_accum-1 of
// `step`, each of micro_batch samples (single rank). Gradients accumulate into the parameters'
// .grad; every micro-batch's mean loss is weighted by its share of the step's tokens, so
// accumulation a x batch b gives the gradient of one batch of a*b. Returns the sum of the
// weighted losses of the micro-batches run.
double accumulate_gradients(const Decoder& model, const TrainSampler& sampler, int64_t step, int64_t micro_batch,
                            int64_t grad_accum, int64_t first_micro = 0, int64_t last_micro = -1);

// Mean validation loss over `windows` (each seq_len + 1 tokens), in batches of `batch`.
double validation_loss(const Decoder& model, const std::vector<std::vector<int32_t>>& windows, int64_t batch);

// Runs the whole training described by `cfg`. Returns the process exit code (0 also when
// stopped by a signal or train.stop_at after saving a checkpoint).
int run_training(Config cfg);

}  // namespace tstl
