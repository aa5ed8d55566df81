// Checkpoints: bitwise round trip (bf16 and integer tensors too), other files, formats and
// versions refused by name, temporaries ignored, a truncated newest file skipped, the retention
// rule, clear errors on unwritable directories and full disks with the old files kept, and a
// child killed with SIGKILL at random moments while saving (until enough kills land mid-write)
// never leaves a checkpoint that latest() would pick and load_checkpoint() fail on.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <csignal>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/hdf5.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "common/error_of.h"

namespace tstl {
namespace {

std::string fresh_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "tstl_ckpt_" + std::to_string(getpid()) + "_" + name;
  std::string cmd = "rm -rf '" + dir + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return dir;
}

// A state whose every value is a function of `step` (so a load can be checked against it).
CheckpointState make_state(int64_t step, int64_t rows = 3) {
  CheckpointState s;
  auto tensor = [&](const Shape& shape, double salt) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.1 * i + salt + step));
    return Tensor::from_vector(v, shape);
  };
  s.parameters = {{"gpt_neox.embed_in.weight", tensor({rows, 7}, 0.5)},
                  {"gpt_neox.layers.0.attention.query_key_value.bias", tensor({15}, 1.5)},
                  {"embed_out.weight", tensor({rows, 7}, 2.5)}};
  s.optimizer = {{"exp_avg.gpt_neox.embed_in.weight", tensor({rows, 7}, 3.5)},
                 {"exp_avg_sq.gpt_neox.embed_in.weight", tensor({rows, 7}, 4.5)}};
  s.step = step;
  s.optimizer_step = step - 1;
  s.tokens_seen = step * 4096;
  s.data_cursor = 0xFFFFFFFF00000000ull + static_cast<uint64_t>(step);
  s.rng_seed = 1234;
  s.rng_offset = 99u + static_cast<uint64_t>(step);
  s.config = "# resolved\n[train]\nmax_steps = 40\n";
  s.tokenizer = "byte";
  s.counters = {{"skipped_steps", 2}, {"micro_step", 0}};
  return s;
}

void expect_bitwise_equal(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << a[i].first;
    EXPECT_EQ(a[i].second.dtype(), b[i].second.dtype()) << a[i].first;
    ASSERT_EQ(a[i].second.nbytes(), b[i].second.nbytes());
    EXPECT_EQ(std::memcmp(a[i].second.raw(), b[i].second.raw(), a[i].second.nbytes()), 0) << a[i].first;
  }
}

void expect_matches(const CheckpointState& loaded, const CheckpointState& saved) {
  expect_bitwise_equal(loaded.parameters, saved.parameters);
  expect_bitwise_equal(loaded.optimizer, saved.optimizer);
  EXPECT_EQ(loaded.step, saved.step);
  EXPECT_EQ(loaded.optimizer_step, saved.optimizer_step);
  EXPECT_EQ(loaded.tokens_seen, saved.tokens_seen);
  EXPECT_EQ(loaded.data_cursor, saved.data_cursor);
  EXPECT_EQ(loaded.rng_seed, saved.rng_seed);
  EXPECT_EQ(loaded.rng_offset, saved.rng_offset);
  EXPECT_EQ(loaded.config, saved.config);
  EXPECT_EQ(loaded.tokenizer, saved.tokenizer);
  EXPECT_EQ(loaded.counters, saved.counters);
}

TEST(Checkpoint, RoundTripIsBitwise) {
  CheckpointDir dir(fresh_dir("roundtrip") + "/nested/checkpoints");
  CheckpointState s = make_state(40);
  s.parameters.emplace_back("scalar_f64", Tensor::full({}, -0.1, DType::F64));
  s.parameters.emplace_back("ids_i64", Tensor::from_vector(std::vector<int64_t>{-5, 1LL << 40, 7}, {3}));
  s.parameters[0].second.data<float>()[3] = std::nanf("");  // NaN bits survive too
  s.config = std::string(100000, 'x');                        // larger than an attribute may be
  const std::string path = dir.save(s);
  EXPECT_EQ(path, dir.dir() + "/step_00000040.h5");
  expect_matches(load_checkpoint(path), s);
  const CheckpointState weights_only = load_checkpoint(path, /*with_optimizer=*/false);
  EXPECT_TRUE(weights_only.optimizer.empty());
  expect_bitwise_equal(weights_only.parameters, s.parameters);
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{40}));
}

// An interrupted accumulation: its own group, /accumulation, with grad.<name> datasets and the
// attributes micro_batches (integer) and loss_sum (a 64-bit float, not integer bits).
CheckpointState with_accumulation(int64_t step) {
  CheckpointState s = make_state(step);
  s.accumulation.micro_batches = 3;
  s.accumulation.loss_sum = 0.1 + 0.2;  // not a round number: must come back bit for bit
  s.accumulation.grads = {{"gpt_neox.embed_in.weight", Tensor::full({3, 7}, -0.75)},
                          {"embed_out.weight", Tensor::full({3, 7}, 1.0 / 3.0)}};
  return s;
}

void expect_same_accumulation(const Accumulation& a, const Accumulation& b) {
  EXPECT_EQ(a.micro_batches, b.micro_batches);
  EXPECT_EQ(std::memcmp(&a.loss_sum, &b.loss_sum, sizeof(double)), 0) << a.loss_sum << " vs " << b.loss_sum;
  expect_bitwise_equal(a.grads, b.grads);
}

TEST(Checkpoint, AccumulationHasItsOwnGroup) {
  CheckpointDir dir(fresh_dir("accumulation"));
  const CheckpointState s = with_accumulation(12);
  const std::string path = dir.save(s);
  const CheckpointState loaded = load_checkpoint(path);
  expect_matches(loaded, s);  // the optimizer group holds the moments only
  expect_same_accumulation(loaded.accumulation, s.accumulation);
  EXPECT_EQ(load_checkpoint(path, /*with_optimizer=*/false).accumulation.micro_batches, 0);
  // The layout, read with the HDF5 library directly.
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  int64_t version = 0;
  h5::Handle version_attr(H5Aopen(file, "version", H5P_DEFAULT));
  H5Aread(version_attr, H5T_NATIVE_INT64, &version);
  EXPECT_EQ(version, 2);
  h5::Handle group(H5Gopen2(file, "accumulation", H5P_DEFAULT));
  ASSERT_TRUE(group.valid());
  EXPECT_GT(H5Lexists(group, "grad.embed_out.weight", H5P_DEFAULT), 0);
  h5::Handle loss(H5Aopen(group, "loss_sum", H5P_DEFAULT));
  h5::Handle loss_type(H5Aget_type(loss));
  EXPECT_EQ(H5Tget_class(loss_type), H5T_FLOAT);
  EXPECT_EQ(H5Tget_size(loss_type), 8u);
  double loss_sum = 0;
  H5Aread(loss, H5T_NATIVE_DOUBLE, &loss_sum);
  EXPECT_EQ(loss_sum, 0.1 + 0.2);
  h5::Handle micro(H5Aopen(group, "micro_batches", H5P_DEFAULT));
  h5::Handle micro_type(H5Aget_type(micro));
  EXPECT_EQ(H5Tget_class(micro_type), H5T_INTEGER);
  // Without an interrupted accumulation there is no group.
  const std::string plain = dir.save(make_state(13));
  h5::Handle plain_file(H5Fopen(plain.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  EXPECT_EQ(H5Lexists(plain_file, "accumulation", H5P_DEFAULT), 0);
}

// Rewrites a version-2 file with an accumulation into the version-1 layout: the gradients under
// /optimizer as partial_grad.<name>, micro_done and the loss's integer bits in /counters.
void downgrade_to_version1(const std::string& path, const Accumulation& a) {
  h5::quiet();
  h5::Handle file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), path));
  const int64_t one = 1;
  h5::Handle version(H5_CHECK(H5Aopen(file, "version", H5P_DEFAULT), "version"));
  H5_CHECK(H5Awrite(version, H5T_NATIVE_INT64, &one), "version");
  for (const auto& [name, g] : a.grads)
    H5_CHECK(H5Lmove(file, ("accumulation/grad." + name).c_str(), file, ("optimizer/partial_grad." + name).c_str(),
                     H5P_DEFAULT, H5P_DEFAULT), name);
  H5_CHECK(H5Ldelete(file, "accumulation", H5P_DEFAULT), "accumulation");
  h5::Handle counters(H5_CHECK(H5Gopen2(file, "counters", H5P_DEFAULT), "counters"));
  int64_t bits = 0;
  std::memcpy(&bits, &a.loss_sum, sizeof bits);
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"micro_done", a.micro_batches}, {"partial_loss_bits", bits}}) {
    h5::Handle space(H5_CHECK(H5Screate(H5S_SCALAR), name));
    h5::Handle attr(H5_CHECK(H5Acreate2(counters, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), name));
    H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &value), name);
  }
}

TEST(Checkpoint, Version1AccumulationStillLoads) {
  CheckpointDir dir(fresh_dir("version1"));
  const CheckpointState s = with_accumulation(7);
  const std::string path = dir.save(s);
  downgrade_to_version1(path, s.accumulation);
  EXPECT_EQ(dir.latest()->path, path);  // verify_checkpoint accepts version 1
  const CheckpointState loaded = load_checkpoint(path);
  expect_matches(loaded, s);  // no partial_grad.* among the moments, no v1 keys among the counters
  expect_same_accumulation(loaded.accumulation, s.accumulation);
}

// The committed version-1 file tests/train/fixtures/checkpoint_v1.h5, written by the tstl of
// commit 842439a (tests/train/fixtures/make_checkpoint_v1.sh: tiny.cfg narrowed to 1 layer of
// width 16, seed 17, 64 micro-batches of one window per step, stopped by SIGTERM during step 4
// after 17 of them) loads with every part where this tstl keeps it: the 16 parameters and their
// 32 moments, the interrupted accumulation (17 micro-batches, a gradient per parameter, the loss
// so far), the loop state and the saved config. Trainer.ResumesTheCommittedVersion1Checkpoint
// resumes a run from it.
TEST(Checkpoint, CommittedVersion1FileStillLoads) {
  const std::string path = std::string(TSTL_SOURCE_DIR) + "/tests/train/fixtures/checkpoint_v1.h5";
  ASSERT_NO_THROW(verify_checkpoint(path));
  const CheckpointState s = load_checkpoint(path);
  EXPECT_EQ(s.step, 3);
  EXPECT_EQ(s.optimizer_step, 3);
  EXPECT_EQ(s.tokens_seen, 3 * 64 * 32);
  EXPECT_EQ(s.data_cursor, 3u * 64u + 17u);  // the sampler's position: step 4, micro-batch 18
  EXPECT_EQ(s.rng_seed, 17u);
  EXPECT_EQ(s.tokenizer, "byte:259");
  EXPECT_EQ(s.counters, (std::map<std::string, int64_t>{{"skipped_steps", 0}}));
  const Config config = parse_config(s.config, path);
  EXPECT_EQ(config.get<int64_t>("model.hidden"), 16);
  EXPECT_EQ(config.get<int64_t>("train.grad_accum"), 64);

  ASSERT_EQ(s.parameters.size(), 16u);
  int64_t numel = 0;
  for (const auto& [name, p] : s.parameters) {
    EXPECT_EQ(p.dtype(), DType::F32) << name;
    numel += p.numel();
    for (float v : p.to_vector<float>()) ASSERT_TRUE(std::isfinite(v)) << name;
  }
  EXPECT_EQ(numel, 10544);  // as `tstl train` reported for this model
  EXPECT_EQ(s.parameters.front().first, "gpt_neox.embed_in.weight");
  EXPECT_EQ(s.parameters.front().second.shape(), (Shape{259, 16}));

  ASSERT_EQ(s.optimizer.size(), 32u);  // the moments only: no partial_grad.* left among them
  std::map<std::string, Shape> shapes;
  for (const auto& [name, p] : s.parameters) shapes[name] = p.shape();
  for (const auto& [name, m] : s.optimizer) {
    const bool first = name.rfind("exp_avg.", 0) == 0, second = name.rfind("exp_avg_sq.", 0) == 0;
    ASSERT_TRUE(first || second) << name;
    const std::string param = name.substr(first ? 8 : 11);
    ASSERT_TRUE(shapes.count(param)) << name;
    EXPECT_EQ(m.shape(), shapes[param]) << name;
    if (second) {
      for (float v : m.to_vector<float>()) ASSERT_GE(v, 0.0f) << name;
    }
  }

  EXPECT_EQ(s.accumulation.micro_batches, 17);
  ASSERT_EQ(s.accumulation.grads.size(), 16u);
  for (const auto& [name, g] : s.accumulation.grads) {
    ASSERT_TRUE(shapes.count(name)) << name;
    EXPECT_EQ(g.shape(), shapes[name]) << name;
  }
  // 17 of 64 micro-batches, each weighted 1/64, of a loss near ln 259 = 5.56 at step 4.
  EXPECT_GT(s.accumulation.loss_sum, 17.0 / 64 * 4.5);
  EXPECT_LT(s.accumulation.loss_sum, 17.0 / 64 * 6.0);

  const CheckpointState weights = load_checkpoint(path, /*with_optimizer=*/false);
  EXPECT_TRUE(weights.optimizer.empty());
  EXPECT_EQ(weights.accumulation.micro_batches, 0);
  expect_bitwise_equal(weights.parameters, s.parameters);
}

// Rewrites the root attribute `version` of a checkpoint in place.
void set_version(const std::string& path, int64_t version) {
  h5::quiet();
  h5::Handle file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), path));
  h5::Handle attr(H5_CHECK(H5Aopen(file, "version", H5P_DEFAULT), "version"));
  H5_CHECK(H5Awrite(attr, H5T_NATIVE_INT64, &version), "version");
}

// Replaces the root attribute `format` of a checkpoint with another fixed-length string.
void set_format(const std::string& path, const std::string& format) {
  h5::quiet();
  h5::Handle file(H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), path));
  H5_CHECK(H5Adelete(file, "format"), "format");
  h5::Handle type(H5_CHECK(H5Tcopy(H5T_C_S1), "type"));
  H5_CHECK(H5Tset_size(type, format.size()), "type");
  h5::Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "space"));
  h5::Handle attr(H5_CHECK(H5Acreate2(file, "format", type, space, H5P_DEFAULT, H5P_DEFAULT), "format"));
  H5_CHECK(H5Awrite(attr, type, format.data()), "format");
}

// Every kind of file that is not a checkpoint this tstl reads is refused by load_checkpoint and
// verify_checkpoint with an error naming the file and what is wrong, and latest() skips it with
// a warning naming it: a text file, a missing file, an HDF5 file without a format attribute
// (such as a token file), another format, version 0, and a version newer than this tstl's.
TEST(Checkpoint, RejectsOtherFilesAndFormats) {
  const std::string dir = fresh_dir("format");
  CheckpointDir cd(dir);
  std::ofstream(dir + "/text.h5") << "not hdf5";
  EXPECT_NE(error_of([&] { load_checkpoint(dir + "/text.h5"); }).find("not a readable HDF5 file"), std::string::npos);
  EXPECT_NE(error_of([&] { load_checkpoint(dir + "/missing.h5"); }).find("missing.h5"), std::string::npos);
  EXPECT_EQ(CheckpointDir::parse_name("step_00000040.h5"), std::optional<int64_t>(40));
  EXPECT_EQ(CheckpointDir::parse_name("step_00000040.h5.tmp-123"), std::nullopt);
  EXPECT_EQ(CheckpointDir::parse_name("step_x.h5"), std::nullopt);
  EXPECT_EQ(CheckpointDir::parse_name("step_.h5"), std::nullopt);

  const std::string good = cd.save(make_state(1));
  {  // an HDF5 file with no format attribute
    h5::quiet();
    h5::Handle file(H5Fcreate(cd.path_for(2).c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(file.valid());
  }
  set_format(cd.save(make_state(3)), "tstl-tokens");
  set_version(cd.save(make_state(4)), 0);
  set_version(cd.save(make_state(5)), kCheckpointVersion + 1);
  const std::string future = std::to_string(kCheckpointVersion + 1);
  const std::vector<std::pair<int64_t, std::vector<std::string>>> expected = {
      {2, {"is not a tstl checkpoint (no format attribute)"}},
      {3, {"has format 'tstl-tokens', expected 'tstl-checkpoint'"}},
      {4, {"has invalid version 0"}},
      {5, {"has version " + future, "newer than this tstl reads", "use a newer tstl"}},
  };
  for (const auto& [step, parts] : expected) {
    const std::string path = cd.path_for(step);
    for (const std::string& error : {error_of([&] { load_checkpoint(path); }), error_of([&] { verify_checkpoint(path); }),
                                     error_of([&] { load_checkpoint(path, /*with_optimizer=*/false); })}) {
      EXPECT_NE(error.find(path), std::string::npos) << "step " << step << ": " << error;
      for (const std::string& part : parts) EXPECT_NE(error.find(part), std::string::npos) << "step " << step << ": " << error;
    }
  }
  std::vector<std::string> warnings;
  const auto latest = cd.latest(&warnings);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->path, good);
  ASSERT_EQ(warnings.size(), 4u);
  for (int64_t step = 2; step <= 5; ++step)
    EXPECT_NE(warnings[static_cast<size_t>(5 - step)].find(cd.path_for(step)), std::string::npos) << warnings[static_cast<size_t>(5 - step)];
}

// Tensors of every integer dtype and bf16 come back with their dtype and every bit, extremes and
// special bf16 patterns (a NaN with a payload, -0, -inf, the smallest subnormal) included.
TEST(Checkpoint, Bf16AndIntegerTensorsRoundTripBitForBit) {
  auto raw_tensor = [](DType dtype, const auto& values) {
    Tensor t = Tensor::empty({static_cast<int64_t>(values.size())}, dtype);
    std::memcpy(t.raw(), values.data(), t.nbytes());
    return t;
  };
  CheckpointState s = make_state(9);
  s.parameters.emplace_back("bf16", raw_tensor(DType::BF16, std::vector<uint16_t>{0x3F80, 0x7FC1, 0x8000, 0xFF80, 0x0001, 0xC2F7}));
  s.parameters.emplace_back("i32", raw_tensor(DType::I32, std::vector<int32_t>{INT32_MIN, -1, 0, 1, INT32_MAX}));
  s.parameters.emplace_back("u16", raw_tensor(DType::U16, std::vector<uint16_t>{0, 1, 0x8000, 65535}));
  s.parameters.emplace_back("u32", raw_tensor(DType::U32, std::vector<uint32_t>{0, 1, 0x80000000u, 123456789u, 4294967295u}));
  const std::string path = CheckpointDir(fresh_dir("dtypes")).save(s);
  const CheckpointState loaded = load_checkpoint(path);
  expect_matches(loaded, s);  // names, shapes, dtypes and bytes
  for (const char* name : {"bf16", "i32", "u16", "u32"}) {
    bool found = false;
    for (const auto& [n, t] : loaded.parameters) found |= n == name;
    EXPECT_TRUE(found) << name;
  }
}

TEST(Checkpoint, TemporaryLeftoversAreIgnoredAndStaleOnesRemoved) {
  CheckpointDir dir(fresh_dir("tmp"));
  dir.save(make_state(10));
  // A leftover of a dead writer (pid 2^22+1 exceeds pid_max on default kernels: not running),
  // and one of a live process (ours): ignored both, only the dead one deleted.
  const std::string dead = dir.path_for(20) + ".tmp-4194305", live = dir.path_for(30) + ".tmp-" + std::to_string(getpid());
  std::ofstream(dead) << "half written";
  std::ofstream(live) << "being written";
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{10}));
  EXPECT_EQ(dir.latest()->step, 10);
  struct stat st;
  EXPECT_NE(stat(dead.c_str(), &st), 0);
  EXPECT_EQ(stat(live.c_str(), &st), 0);
  std::remove(live.c_str());
}

TEST(Checkpoint, TruncatedOrCorruptNewestIsSkipped) {
  CheckpointDir dir(fresh_dir("truncated"));
  dir.save(make_state(2));
  dir.save(make_state(4, 301));  // big enough that truncation cuts into tensor data
  dir.save(make_state(6));
  const std::string newest = dir.path_for(6);
  struct stat st;
  ASSERT_EQ(stat(newest.c_str(), &st), 0);
  ASSERT_EQ(truncate(newest.c_str(), st.st_size / 2), 0);
  std::vector<std::string> warnings;
  auto latest = dir.latest(&warnings);
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->step, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step_00000006.h5"), std::string::npos) << warnings[0];
  expect_matches(load_checkpoint(latest->path), make_state(4, 301));
  // Garbage under a final name is skipped the same way; a truncated file also fails to load.
  std::ofstream(dir.path_for(8)) << "garbage";
  EXPECT_EQ(dir.latest()->step, 4);
  EXPECT_FALSE(error_of([&] { load_checkpoint(newest); }).empty());
  // Truncating inside the data of the step-4 file (keeping the HDF5 superblock end) is caught too.
  ASSERT_EQ(stat(dir.path_for(4).c_str(), &st), 0);
  ASSERT_EQ(truncate(dir.path_for(4).c_str(), st.st_size - 2000), 0);
  EXPECT_EQ(dir.latest()->step, 2);
}

TEST(Checkpoint, RetentionKeepsLastKAndEveryMth) {
  EXPECT_EQ(checkpoint_steps_to_keep({10, 20, 30, 40, 50, 60, 70}, 2, 30), (std::vector<int64_t>{30, 60, 70}));
  EXPECT_EQ(checkpoint_steps_to_keep({10, 20, 30}, 0, 0), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(checkpoint_steps_to_keep({10, 20, 30}, 5, 0), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(checkpoint_steps_to_keep({}, 2, 10), (std::vector<int64_t>{}));
  CheckpointDir dir(fresh_dir("retention"));
  for (int64_t step = 5; step <= 50; step += 5) {
    dir.save(make_state(step));
    dir.prune(3, 20);
  }
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{20, 40, 45, 50}));
  EXPECT_EQ(dir.prune(1, 0), (std::vector<int64_t>{20, 40, 45}));
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{50}));
}

TEST(Checkpoint, UnwritableDirectoryIsAClearErrorAndKeepsOldFiles) {
  const std::string root = fresh_dir("unwritable");
  CheckpointDir dir(root);
  dir.save(make_state(10));
  // A path through a regular file: the directory cannot exist.
  std::ofstream(root + "/plainfile") << "x";
  const std::string message = error_of([&] { CheckpointDir bad(root + "/plainfile/checkpoints"); });
  EXPECT_NE(message.find("plainfile"), std::string::npos) << message;
  expect_matches(load_checkpoint(dir.path_for(10)), make_state(10));
}

TEST(Checkpoint, PermissionDeniedIsAClearErrorAndKeepsOldFiles) {
  const std::string root = fresh_dir("readonly");
  CheckpointDir dir(root);
  dir.save(make_state(10));
  // A directory without write permission (root ignores permissions: then this part is skipped).
  ASSERT_EQ(chmod(root.c_str(), 0555), 0);
  const std::string probe = root + "/probe";
  const bool permissions_enforced = !std::ofstream(probe);
  std::remove(probe.c_str());
  if (permissions_enforced) {
    const std::string e = error_of([&] { dir.save(make_state(20)); });
    EXPECT_NE(e.find("step_00000020.h5"), std::string::npos) << e;
    EXPECT_NE(e.find("Permission denied"), std::string::npos) << e;
    EXPECT_NE(e.find("earlier checkpoints are kept"), std::string::npos) << e;
  }
  chmod(root.c_str(), 0755);
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{10}));
  expect_matches(load_checkpoint(dir.path_for(10)), make_state(10));
  if (!permissions_enforced) GTEST_SKIP() << "running as root: permission part not enforceable";
}

TEST(Checkpoint, DiskFullIsAClearErrorAndKeepsOldFiles) {
  // RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails with ENOSPC.
  CheckpointDir dir(fresh_dir("full"));
  dir.save(make_state(10));
  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old_limit;
  small.rlim_cur = 16 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string e = error_of([&] { dir.save(make_state(20, 2000)); });  // ~56 KB of tensors
  setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(e.find("step_00000020.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("earlier checkpoints are kept"), std::string::npos) << e;
  EXPECT_EQ(dir.list(), (std::vector<int64_t>{10}));
  struct stat st;
  EXPECT_NE(stat((dir.path_for(20) + ".tmp-" + std::to_string(getpid())).c_str(), &st), 0);  // cleaned up
  expect_matches(load_checkpoint(dir.latest()->path), make_state(10));
}

// A writer saving as fast as it can is killed with SIGKILL at a random moment, round after round.
// Rounds continue (at least 20) until 8 kills have landed mid-write (the writer's temporary file
// is left behind), so the property is tested where it matters; after every round latest() must
// name a checkpoint that loads with the expected contents.
TEST(Checkpoint, SigkillDuringSavesNeverLeavesABadLatest) {
  const std::string root = fresh_dir("sigkill");
  CheckpointDir dir(root);
  std::mt19937 rng(7);
  constexpr int kMinRounds = 20, kMinMidWrite = 8, kMaxRounds = 400;
  int rounds = 0, killed_mid_write = 0;
  for (; rounds < kMaxRounds && (rounds < kMinRounds || killed_mid_write < kMinMidWrite); ++rounds) {
    const auto before = dir.latest();
    const int64_t first_step = before ? before->step + 1 : 1;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // writer: saves and prunes as fast as it can until killed
      try {
        for (int64_t step = first_step;; ++step) {
          dir.save(make_state(step, 20000));  // ~1.7 MB per file
          dir.prune(2, 0);
        }
      } catch (...) {
      }
      _exit(3);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, 80)(rng)));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself (status " << status << ")";
    for (int64_t s = first_step; s < first_step + 1000; ++s) {
      struct stat st;
      if (stat((dir.path_for(s) + ".tmp-" + std::to_string(child)).c_str(), &st) == 0) {
        ++killed_mid_write;
        break;
      }
    }
    const auto latest = dir.latest();
    if (!latest) continue;  // killed before the first save completed
    CheckpointState loaded;
    ASSERT_NO_THROW(loaded = load_checkpoint(latest->path)) << latest->path;
    expect_matches(loaded, make_state(latest->step, 20000));
  }
  EXPECT_GE(killed_mid_write, kMinMidWrite) << "only " << killed_mid_write << " of " << rounds
                                            << " kills landed while a checkpoint was being written";
  EXPECT_TRUE(dir.latest().has_value());
}

}  // namespace
}  // namespace tstl
