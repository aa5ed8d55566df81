// TensorBoard event files, written without TensorFlow: the run's scalars (loss, val_loss, lr,
// grad_norm, tokens_per_s, mfu) per logged step, beside metrics.jsonl (`train.tensorboard`).
//
// A file is a sequence of TFRecords:
//   uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
// little-endian; masked_crc(x) = ((c >> 15) | (c << 17)) + 0xa282ead8 with c = CRC-32C (Castagnoli)
// of x. Each record's data is a serialized tensorflow.Event protobuf:
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//                Summary summary = 5; SessionLog session_log = 7; }  (6: a deprecated log message)
//   Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }   (START = 1)
// The first record carries file_version "brain.Event:2". A resumed run opens a new file and
// writes SessionLog START at the first step it will log: TensorBoard then drops the events of
// later steps that the interrupted run logged past its last checkpoint, as metrics.jsonl does.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "train/metrics.h"

namespace tstl {

uint32_t crc32c(const void* data, size_t n);
uint32_t masked_crc32c(const void* data, size_t n);

// The protobuf encodings above, field by field (exposed for tests).
std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
std::string encode_file_version_event(double wall_time);
std::string encode_session_start_event(double wall_time, int64_t step);
// One record around `data`.
std::string tf_record(const std::string& data);

class TensorBoardWriter {
 public:
  // Creates `dir`/events.out.tfevents.<unix seconds>.<host>.<pid> (dir must exist). With
  // resume_step >= 0 the file starts with SessionLog START at resume_step + 1.
  explicit TensorBoardWriter(const std::string& dir, int64_t resume_step = -1);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
  // loss, lr, grad_norm, tokens_per_s, mfu, and val_loss when present; flushed.
  void write(const StepMetrics& m);
  const std::string& path() const { return path_; }

 private:
  void append(const std::string& data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace tstl
