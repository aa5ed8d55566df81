// The typed [data] [train] [optim] structs: filled from a Config, with the relations the schema
// cannot check.
#include <gtest/gtest.h>

#include "core/error.h"
#include "train/run_config.h"

namespace tstl {
namespace {

Config config_with(const std::vector<std::string>& overrides) { return parse_config("", "test", overrides); }

TEST(RunConfig, FieldsComeFromTheirKeys) {
  const Config cfg = config_with({"--train.seq_len", "64", "--train.batch_size", "3", "--train.grad_accum", "2",
                                  "--train.log_every", "0", "--train.resume", "must", "--train.device", "cuda",
                                  "--optim.lr", "0.002", "--optim.min_lr", "0.0002", "--optim.decay", "cosine",
                                  "--optim.no_decay", "*.bias", "--data.tokenizer", "tok.model",
                                  "--data.passkey_fraction", "0.25"});
  const TrainConfig t = train_config_from(cfg);
  EXPECT_EQ(t.seq_len, 64);
  EXPECT_EQ(t.tokens_per_step(), 64 * 3 * 2);
  EXPECT_EQ(t.log_every, 1);  // 0 in the file: every step
  EXPECT_EQ(t.resume, ResumeMode::Must);
  EXPECT_EQ(t.device, Device::CUDA);
  EXPECT_EQ(t.seed, 1234u);  // the schema default
  const OptimConfig o = optim_config_from(cfg);
  EXPECT_EQ(o.adamw.lr, 0.002);
  EXPECT_EQ(o.schedule.lr, 0.002);
  EXPECT_EQ(o.schedule.min_lr, 0.0002);
  EXPECT_EQ(o.schedule.max_steps, 1000);  // train.max_steps
  EXPECT_EQ(o.schedule.decay, DecayShape::Cosine);
  EXPECT_EQ(o.no_decay, std::vector<std::string>{"*.bias"});
  const DataConfig d = data_config_from(cfg);
  EXPECT_EQ(d.tokenizer, "tok.model");
  EXPECT_EQ(d.passkey_fraction, 0.25);
}

TEST(RunConfig, MinLrAboveLrAndEmptyBatchesAreErrors) {
  try {
    optim_config_from(config_with({"--optim.lr", "1e-4", "--optim.min_lr", "1e-3"}));
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optim.min_lr = 0.001 is greater than optim.lr = 0.0001"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(optim_config_from(config_with({"--optim.lr", "1e-4", "--optim.min_lr", "1e-4"})));
  for (const char* key : {"--train.seq_len", "--train.batch_size", "--train.grad_accum", "--train.max_steps"}) {
    try {
      train_config_from(config_with({key, "0"}));
      ADD_FAILURE() << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(key + 2) + " must be >= 1, got 0"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace tstl
