// TensorBoard event files: CRC-32C against its published check value, and the files read back by
// the tensorboard package's own reader (event accumulator, record reader with CRC checks), from
// the writer directly and from a training run, whose scalars must equal metrics.jsonl's.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/cli_test_util.h"
#include "common/python_readers.h"
#include "core/json.h"
#include "train/tensorboard.h"

namespace tstl {
namespace {

using test::ScratchDir;
using test::write_file;

// Writes {tag: [[step, value], ...]} of every scalar in the run directory, as TensorBoard's
// EventAccumulator (the UI's loader, with its restart purge) sees them.
constexpr const char* kScalarsReader = R"(import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
with open(sys.argv[2], "w") as out:
    json.dump({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}, out)
)";

// Reads every record of one file with the tensorboard package's record reader (which checks
// both CRCs) and prints the count, or the error it raised.
constexpr const char* kRecordReader = R"(import sys
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
r = pywrap_tensorflow.PyRecordReader_New(sys.argv[1], 0, None)
n = 0
try:
    while True:
        r.GetNext()
        n += 1
except errors.OutOfRangeError:
    print("records", n)
except errors.DataLossError as e:
    print("data loss:", e.message)
)";

JsonValue read_scalars(const std::string& python, const ScratchDir& dir, const std::string& run_dir) {
  write_file(dir / "scalars.py", kScalarsReader);
  const auto r = test::run_shell(python + " " + (dir / "scalars.py") + " " + run_dir + " " + (dir / "scalars.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir / "scalars.json");
  std::stringstream text;
  text << in.rdbuf();
  return parse_json(text.str(), dir / "scalars.json");
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(TensorBoard, Crc32cCheckValueAndMask) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value (RFC 3720, B.4)
  EXPECT_EQ(crc32c("", 0), 0u);
  const uint32_t c = crc32c("abc", 3);
  EXPECT_EQ(masked_crc32c("abc", 3), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

// Hand-encoded protobuf bytes: field keys, varints, a fixed64 double and a fixed32 float.
TEST(TensorBoard, EventBytesAreTheProtobufEncoding) {
  const std::string e = encode_scalar_event(1.0, 300, {{"lr", 0.5f}});
  const std::string expected("\x09\x00\x00\x00\x00\x00\x00\xf0\x3f"   // wall_time = 1.0 (field 1, fixed64)
                             "\x10\xac\x02"                             // step = 300 (field 2, varint)
                             "\x2a\x0b"                                 // summary (field 5), 11 bytes
                             "\x0a\x09"                                 //   value (field 1), 9 bytes
                             "\x0a\x02lr"                               //     tag = "lr"
                             "\x15\x00\x00\x00\x3f",                    //     simple_value = 0.5f (fixed32)
                             9 + 3 + 2 + 2 + 4 + 5);
  EXPECT_EQ(e, expected);
  const std::string record = tf_record("xyz");
  ASSERT_EQ(record.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(record.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(record.substr(12, 3), "xyz");
}

TEST(TensorBoard, TheTensorboardReaderSeesEveryScalarAndTheResumePurge) {
  TSTL_REQUIRE_PYTHON_READERS(python);
  ScratchDir dir;
  const std::string run = dir / "run";
  std::filesystem::create_directories(run);
  auto metrics = [](int64_t step, double base) {
    StepMetrics m;
    m.step = step;
    m.loss = base + 0.1 * step;
    m.lr = 1e-4 * step;
    m.grad_norm = 0.25 * step;
    m.tokens_per_s = 1000.0 + step;
    m.mfu = 0.01 * step;
    if (step % 2 == 0) m.val_loss = base - step;
    return m;
  };
  {
    TensorBoardWriter first(run);
    for (int64_t s = 1; s <= 5; ++s) first.write(metrics(s, 3.0));
  }
  {
    // Resumed from the checkpoint of step 3: steps 4 and 5 of the first file are superseded.
    TensorBoardWriter second(run, 3);
    for (int64_t s = 4; s <= 6; ++s) second.write(metrics(s, 7.0));
  }
  ASSERT_EQ(event_files(run).size(), 2u);
  const JsonValue scalars = read_scalars(python, dir, run);
  auto expect_series = [&](const std::string& tag, auto field, bool only_even) {
    const JsonValue* series = scalars.find(tag);
    ASSERT_NE(series, nullptr) << "no scalar '" << tag << "'";
    std::vector<std::pair<int64_t, float>> want;
    for (int64_t s = 1; s <= 6; ++s)
      if (!only_even || s % 2 == 0) want.emplace_back(s, static_cast<float>(field(metrics(s, s <= 3 ? 3.0 : 7.0))));
    ASSERT_EQ(series->array.size(), want.size()) << tag;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(series->array[i].array[0].number, want[i].first) << tag;
      EXPECT_EQ(series->array[i].array[1].number, static_cast<double>(want[i].second)) << tag << " step " << want[i].first;
    }
  };
  expect_series("loss", [](const StepMetrics& m) { return m.loss; }, false);
  expect_series("lr", [](const StepMetrics& m) { return m.lr; }, false);
  expect_series("grad_norm", [](const StepMetrics& m) { return m.grad_norm; }, false);
  expect_series("tokens_per_s", [](const StepMetrics& m) { return m.tokens_per_s; }, false);
  expect_series("mfu", [](const StepMetrics& m) { return m.mfu; }, false);
  expect_series("val_loss", [](const StepMetrics& m) { return *m.val_loss; }, true);
}

// The reader checks the CRCs: a file with one flipped byte is reported, the intact one is not.
TEST(TensorBoard, TheReaderChecksTheCrcs) {
  TSTL_REQUIRE_PYTHON_READERS(python);
  ScratchDir dir;
  std::string path;
  {
    TensorBoardWriter w(dir.path.string());
    StepMetrics m;
    m.step = 1;
    m.loss = 2.5;
    w.write(m);
    path = w.path();
  }
  write_file(dir / "records.py", kRecordReader);
  const auto intact = test::run_shell(python + " " + (dir / "records.py") + " " + path + " 2>" + (dir / "stderr.txt"));
  EXPECT_NE(intact.output.find("records 2"), std::string::npos) << intact.output;
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  bytes[bytes.size() - 10] ^= 0x01;  // inside the last event's data
  write_file(path, bytes);
  const auto broken = test::run_shell(python + " " + (dir / "records.py") + " " + path + " 2>" + (dir / "stderr.txt"));
  EXPECT_NE(broken.output.find("failed event crc32 check"), std::string::npos) << broken.output;
}

// `train.tensorboard = true`: the event file beside metrics.jsonl holds the same numbers.
TEST(TensorBoard, TrainingWritesTheMetricsLinesScalars) {
  TSTL_REQUIRE_PYTHON_READERS(python);
  ScratchDir dir;
  const std::string source = TSTL_SOURCE_DIR;
  auto r = test::run_tstl("prepare --input " + source + "/data/corpus/sotu --max-documents 6 --tokenizer byte"
                          " --val-fraction 0.2 --output " + (dir / "d.h5"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_tstl("train --config " + source + "/configs/tiny.cfg --data.path " + (dir / "d.h5") +
                     " --train.out_dir " + (dir / "run") + " --train.max_steps 4 --train.eval_every 2"
                     " --train.eval_batches 1 --train.threads 2 --train.peak_flops 1e11 --train.tensorboard true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(event_files(dir / "run").size(), 1u);
  const JsonValue scalars = read_scalars(python, dir, dir / "run");
  std::ifstream in(dir / "run/metrics.jsonl");
  int64_t lines = 0, val_lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const JsonValue m = parse_json(line, "metrics.jsonl");
    const int64_t step = static_cast<int64_t>(m.get_number("step"));
    for (const char* tag : {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss"}) {
      if (!m.find(tag)) continue;
      val_lines += std::string(tag) == "val_loss";
      const JsonValue& series = scalars.get_array(tag);
      bool found = false;
      for (const JsonValue& point : series.array)
        if (point.array[0].number == step) {
          found = true;
          EXPECT_EQ(point.array[1].number, static_cast<double>(static_cast<float>(m.get_number(tag)))) << tag << " step " << step;
        }
      EXPECT_TRUE(found) << tag << " step " << step;
    }
  }
  EXPECT_EQ(lines, 4);
  EXPECT_EQ(val_lines, 2);
  EXPECT_EQ(scalars.get_array("loss").array.size(), 4u);
}

}  // namespace
}  // namespace tstl
