// HDF5 checkpoints: layout (docs/checkpoints.md), the atomic write, validation, the directory
// of a run with its retention rule.
#include "train/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/atomic_file.h"
#include "core/hdf5.h"

namespace tstl {

namespace {

using h5::Handle;

// ---- Small typed HDF5 helpers ---------------------------------------------------------------

struct H5Types {
  hid_t file, memory;
};

H5Types h5_types(DType dtype) {
  switch (dtype) {
    case DType::F32: return {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT};
    case DType::F64: return {H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE};
    case DType::BF16: return {H5T_STD_U16LE, H5T_NATIVE_UINT16};  // raw bits; the dtype attribute says bf16
    case DType::I32: return {H5T_STD_I32LE, H5T_NATIVE_INT32};
    case DType::I64: return {H5T_STD_I64LE, H5T_NATIVE_INT64};
    case DType::U16: return {H5T_STD_U16LE, H5T_NATIVE_UINT16};
    case DType::U32: return {H5T_STD_U32LE, H5T_NATIVE_UINT32};
  }
  TSTL_FAIL("no HDF5 type for dtype ", dtype_name(dtype));
}

DType dtype_from_name(const std::string& name) {
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64, DType::U16, DType::U32})
    if (name == dtype_name(d)) return d;
  TSTL_FAIL("unknown dtype '", name, "'");
}

Handle string_type(size_t length) {
  Handle type(H5_CHECK(H5Tcopy(H5T_C_S1), "string type"));
  H5_CHECK(H5Tset_size(type, std::max<size_t>(length, 1)), "string type");
  H5_CHECK(H5Tset_strpad(type, H5T_STR_NULLPAD), "string type");
  return type;
}

template <class T>
void write_scalar_attr(hid_t obj, const char* name, T value, hid_t file_type, hid_t memory_type) {
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "attribute ", name));
  Handle attr(H5_CHECK(H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT), "attribute ", name));
  H5_CHECK(H5Awrite(attr, memory_type, &value), "attribute ", name);
}

template <class T>
T read_scalar_attr(hid_t obj, const char* name, hid_t memory_type) {
  TSTL_CHECK(H5Aexists(obj, name) > 0, "attribute '", name, "' is missing");
  Handle attr(H5_CHECK(H5Aopen(obj, name, H5P_DEFAULT), "attribute ", name));
  T value{};
  H5_CHECK(H5Aread(attr, memory_type, &value), "attribute ", name);
  return value;
}

void write_i64(hid_t obj, const char* name, int64_t v) { write_scalar_attr(obj, name, v, H5T_STD_I64LE, H5T_NATIVE_INT64); }
void write_f64(hid_t obj, const char* name, double v) { write_scalar_attr(obj, name, v, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE); }
double read_f64(hid_t obj, const char* name) { return read_scalar_attr<double>(obj, name, H5T_NATIVE_DOUBLE); }
void write_u64(hid_t obj, const char* name, uint64_t v) { write_scalar_attr(obj, name, v, H5T_STD_U64LE, H5T_NATIVE_UINT64); }
int64_t read_i64(hid_t obj, const char* name) { return read_scalar_attr<int64_t>(obj, name, H5T_NATIVE_INT64); }
uint64_t read_u64(hid_t obj, const char* name) { return read_scalar_attr<uint64_t>(obj, name, H5T_NATIVE_UINT64); }

void write_string_dataset(hid_t loc, const char* name, const std::string& value) {
  Handle type = string_type(value.size());
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "dataset ", name));
  Handle set(H5_CHECK(H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "dataset ", name));
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  H5_CHECK(H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, padded.data()), "dataset ", name);
}

std::string read_string_dataset(hid_t loc, const char* name) {
  Handle set(H5_CHECK(H5Dopen2(loc, name, H5P_DEFAULT), "dataset ", name));
  Handle file_type(H5_CHECK(H5Dget_type(set), "dataset ", name));
  const size_t size = H5Tget_size(file_type);
  Handle type = string_type(size);
  std::string value(size, '\0');
  H5_CHECK(H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, value.data()), "dataset ", name);
  value.erase(std::find(value.begin(), value.end(), '\0'), value.end());
  return value;
}

// A group that remembers the order its members were created in (parameters load in save order).
Handle create_ordered_group(hid_t loc, const char* name) {
  Handle gcpl(H5_CHECK(H5Pcreate(H5P_GROUP_CREATE), "group ", name));
  H5_CHECK(H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "group ", name);
  return Handle(H5_CHECK(H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT), "group ", name));
}

void write_tensors(hid_t file, const char* group_name, const NamedTensors& tensors) {
  Handle group = create_ordered_group(file, group_name);
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    TSTL_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && seen.insert(name).second,
               "checkpoint: tensor name '", name, "' in /", group_name, " is empty, has a '/' or repeats");
    const Tensor host = tensor.device() == Device::CPU ? tensor : tensor.to(Device::CPU);
    const H5Types types = h5_types(host.dtype());
    std::vector<hsize_t> dims(host.shape().begin(), host.shape().end());
    Handle space(H5_CHECK(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                          "dataspace of ", name));
    Handle set(H5_CHECK(H5Dcreate2(group, name.c_str(), types.file, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                        "creating dataset /", group_name, "/", name));
    if (host.numel() > 0)
      H5_CHECK(H5Dwrite(set, types.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw()), "writing /", group_name, "/", name);
    h5::write_string_attribute(set, "dtype", dtype_name(host.dtype()));
  }
}

// Member names of a group, in creation order when it was tracked, else by name.
std::vector<std::string> member_names(hid_t group) {
  H5G_info_t info;
  H5_CHECK(H5Gget_info(group, &info), "group info");
  Handle gcpl(H5_CHECK(H5Gget_create_plist(group), "group property list"));
  unsigned order_flags = 0;
  H5_CHECK(H5Pget_link_creation_order(gcpl, &order_flags), "group creation order");
  const H5_index_t index = (order_flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t length = H5_CHECK(H5Lget_name_by_idx(group, ".", index, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT), "member name");
    std::string name(static_cast<size_t>(length) + 1, '\0');
    H5_CHECK(H5Lget_name_by_idx(group, ".", index, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT), "member name");
    name.resize(static_cast<size_t>(length));
    names.push_back(name);
  }
  return names;
}

NamedTensors read_tensors(hid_t file, const char* group_name) {
  Handle group(H5_CHECK(H5Gopen2(file, group_name, H5P_DEFAULT), "group /", group_name));
  NamedTensors tensors;
  for (const std::string& name : member_names(group)) {
    Handle set(H5_CHECK(H5Dopen2(group, name.c_str(), H5P_DEFAULT), "dataset /", group_name, "/", name));
    const DType dtype = dtype_from_name(h5::read_string_attribute(set, "dtype", "checkpoint"));
    Handle space(H5_CHECK(H5Dget_space(set), "dataspace of ", name));
    const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space), "rank of ", name);
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "dims of ", name);
    Tensor t = Tensor::empty(Shape(dims.begin(), dims.end()), dtype);
    if (t.numel() > 0)
      H5_CHECK(H5Dread(set, h5_types(dtype).memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()), "reading /", group_name, "/", name);
    tensors.emplace_back(name, t);
  }
  return tensors;
}

constexpr const char* kAccumulationGroup = "accumulation";
constexpr const char* kGradPrefix = "grad.";

void write_accumulation(hid_t file, const Accumulation& a) {
  NamedTensors grads;
  for (const auto& [name, g] : a.grads) grads.emplace_back(kGradPrefix + name, g);
  write_tensors(file, kAccumulationGroup, grads);
  Handle group(H5_CHECK(H5Gopen2(file, kAccumulationGroup, H5P_DEFAULT), "group /", kAccumulationGroup));
  write_i64(group, "micro_batches", a.micro_batches);
  write_f64(group, "loss_sum", a.loss_sum);
}

// Strips `prefix` from the names that carry it, moving those tensors to `out`.
void take_prefixed(NamedTensors& from, const std::string& prefix, NamedTensors& out) {
  NamedTensors rest;
  for (auto& [name, t] : from) {
    if (name.rfind(prefix, 0) == 0) {
      out.emplace_back(name.substr(prefix.size()), t);
    } else {
      rest.emplace_back(name, t);
    }
  }
  from = std::move(rest);
}

Accumulation read_accumulation(hid_t file) {
  Accumulation a;
  if (H5Lexists(file, kAccumulationGroup, H5P_DEFAULT) <= 0) return a;
  NamedTensors grads = read_tensors(file, kAccumulationGroup);
  take_prefixed(grads, kGradPrefix, a.grads);
  TSTL_CHECK(grads.empty(), "/", kAccumulationGroup, "/", grads.empty() ? "" : grads[0].first,
             ": expected only grad.<parameter> datasets");
  Handle group(H5_CHECK(H5Gopen2(file, kAccumulationGroup, H5P_DEFAULT), "group /", kAccumulationGroup));
  a.micro_batches = read_i64(group, "micro_batches");
  a.loss_sum = read_f64(group, "loss_sum");
  return a;
}

// Version 1 kept the accumulation under /optimizer (partial_grad.<name>) and in /counters
// (micro_done, and the loss as the integer bits of a double).
Accumulation take_version1_accumulation(CheckpointState& s) {
  Accumulation a;
  take_prefixed(s.optimizer, "partial_grad.", a.grads);
  if (auto it = s.counters.find("micro_done"); it != s.counters.end()) {
    a.micro_batches = it->second;
    s.counters.erase(it);
  }
  if (auto it = s.counters.find("partial_loss_bits"); it != s.counters.end()) {
    std::memcpy(&a.loss_sum, &it->second, sizeof a.loss_sum);
    s.counters.erase(it);
  }
  return a;
}

Handle open_and_check_header(const std::string& path) {
  h5::quiet();
  struct stat st;
  TSTL_CHECK(stat(path.c_str(), &st) == 0, "checkpoint '", path, "' cannot be read: ", std::strerror(errno));
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  TSTL_CHECK(id >= 0, "checkpoint '", path, "' is not a readable HDF5 file (truncated or corrupt?): ",
             h5::last_error_message());
  Handle file(id);
  TSTL_CHECK(H5Aexists(file, "format") > 0, "'", path, "' is not a tstl checkpoint (no format attribute)");
  const std::string format = h5::read_string_attribute(file, "format", "checkpoint");
  TSTL_CHECK(format == kCheckpointFormat, "'", path, "' has format '", format, "', expected '", kCheckpointFormat, "'");
  const int64_t version = read_i64(file, "version");
  TSTL_CHECK(version <= kCheckpointVersion, "checkpoint '", path, "' has version ", version,
             ", newer than this tstl reads (", kCheckpointVersion, "): use a newer tstl");
  TSTL_CHECK(version >= 1, "checkpoint '", path, "' has invalid version ", version);
  return file;
}

}  // namespace

// ---- Save, load, verify ---------------------------------------------------------------------

void save_checkpoint(const std::string& path, const CheckpointState& state) {
  h5::quiet();
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  // Create the file ourselves first: the OS error (permission, missing directory, read-only file
  // system) is clearer than HDF5's.
  const int probe = ::open(tmp.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  TSTL_CHECK(probe >= 0, "cannot write checkpoint '", tmp, "': ", std::strerror(errno),
             " (earlier checkpoints are kept)");
  ::close(probe);
  try {
    {
      Handle file(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "creating checkpoint ", tmp));
      h5::write_string_attribute(file, "format", kCheckpointFormat);
      write_i64(file, "version", kCheckpointVersion);
      write_i64(file, "step", state.step);
      write_i64(file, "optimizer_step", state.optimizer_step);
      write_i64(file, "tokens_seen", state.tokens_seen);
      write_u64(file, "data_cursor", state.data_cursor);
      write_u64(file, "rng_seed", state.rng_seed);
      write_u64(file, "rng_offset", state.rng_offset);
      h5::write_string_attribute(file, "tokenizer", state.tokenizer);
      write_string_dataset(file, "config", state.config);
      {
        Handle counters = create_ordered_group(file, "counters");
        for (const auto& [name, value] : state.counters) write_i64(counters, name.c_str(), value);
      }
      write_tensors(file, "parameters", state.parameters);
      write_tensors(file, "optimizer", state.optimizer);
      if (state.accumulation.micro_batches > 0) write_accumulation(file, state.accumulation);
      H5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL), "flushing checkpoint ", tmp);
      // Close now, checked (the handle's own close ignores errors); its destructor then finds
      // an invalid id and does nothing.
      H5_CHECK(H5Fclose(file.get()), "closing checkpoint ", tmp);
    }
    struct stat st;
    TSTL_CHECK(stat(tmp.c_str(), &st) == 0 && st.st_size > 0, "checkpoint '", tmp, "' is empty after writing");
    commit_file(tmp, path);
  } catch (const Error& e) {
    std::remove(tmp.c_str());
    TSTL_FAIL("saving checkpoint '", path, "' failed (earlier checkpoints are kept): ", e.what());
  }
}

CheckpointState load_checkpoint(const std::string& path, bool with_optimizer) {
  try {
    Handle file = open_and_check_header(path);
    CheckpointState s;
    s.step = read_i64(file, "step");
    s.optimizer_step = read_i64(file, "optimizer_step");
    s.tokens_seen = read_i64(file, "tokens_seen");
    s.data_cursor = read_u64(file, "data_cursor");
    s.rng_seed = read_u64(file, "rng_seed");
    s.rng_offset = read_u64(file, "rng_offset");
    s.tokenizer = h5::read_string_attribute(file, "tokenizer", "checkpoint");
    s.config = read_string_dataset(file, "config");
    {
      Handle counters(H5_CHECK(H5Gopen2(file, "counters", H5P_DEFAULT), "group /counters"));
      H5O_info_t info;
      H5_CHECK(H5Oget_info(counters, &info), "group /counters");
      for (hsize_t i = 0; i < info.num_attrs; ++i) {
        char name[256] = {0};
        H5_CHECK(H5Aget_name_by_idx(counters, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT), "counter name");
        s.counters[name] = read_i64(counters, name);
      }
    }
    s.parameters = read_tensors(file, "parameters");
    if (with_optimizer) {
      s.optimizer = read_tensors(file, "optimizer");
      s.accumulation = read_i64(file, "version") == 1 ? take_version1_accumulation(s) : read_accumulation(file);
    }
    return s;
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.find(path) != std::string::npos) throw;
    TSTL_FAIL("loading checkpoint '", path, "': ", message);
  }
}

void verify_checkpoint(const std::string& path) {
  Handle file = open_and_check_header(path);
  struct stat st;
  TSTL_CHECK(stat(path.c_str(), &st) == 0, "checkpoint '", path, "': ", std::strerror(errno));
  for (const char* group_name : {"parameters", "optimizer", kAccumulationGroup}) {
    const bool optional = std::strcmp(group_name, kAccumulationGroup) == 0;  // only after a stop mid-step
    if (optional && H5Lexists(file, group_name, H5P_DEFAULT) <= 0) continue;
    TSTL_CHECK(H5Lexists(file, group_name, H5P_DEFAULT) > 0, "checkpoint '", path, "' has no /", group_name);
    Handle group(H5_CHECK(H5Gopen2(file, group_name, H5P_DEFAULT), "group /", group_name));
    for (const std::string& name : member_names(group)) {
      Handle set(H5_CHECK(H5Dopen2(group, name.c_str(), H5P_DEFAULT), "checkpoint ", path, ": dataset /", group_name, "/", name));
      const haddr_t offset = H5Dget_offset(set);
      const hsize_t bytes = H5Dget_storage_size(set);
      TSTL_CHECK(offset == HADDR_UNDEF || offset + bytes <= static_cast<hsize_t>(st.st_size), "checkpoint '", path,
                 "': /", group_name, "/", name, " extends past the end of the file (truncated)");
    }
  }
  TSTL_CHECK(H5Lexists(file, "config", H5P_DEFAULT) > 0, "checkpoint '", path, "' has no /config");
}

// ---- The checkpoint directory ---------------------------------------------------------------

namespace {
void make_directories(const std::string& dir) {
  std::string partial;
  for (size_t pos = 0; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      TSTL_FAIL("cannot create directory '", partial, "': ", std::strerror(errno));
  }
  struct stat st;
  TSTL_CHECK(stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "'", dir, "' is not a directory");
}

std::vector<std::string> directory_entries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  TSTL_CHECK(d != nullptr, "cannot list checkpoint directory '", dir, "': ", std::strerror(errno));
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  return names;
}
}  // namespace

CheckpointDir::CheckpointDir(std::string dir) : dir_(std::move(dir)) {
  TSTL_CHECK(!dir_.empty(), "checkpoint directory name is empty");
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  make_directories(dir_);
}

std::string CheckpointDir::path_for(int64_t step) const {
  TSTL_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  char name[40];
  std::snprintf(name, sizeof name, "step_%08lld.h5", static_cast<long long>(step));
  return dir_ + "/" + name;
}

std::optional<int64_t> CheckpointDir::parse_name(const std::string& file_name) {
  const std::string prefix = "step_", suffix = ".h5";
  if (file_name.size() <= prefix.size() + suffix.size() || file_name.compare(0, prefix.size(), prefix) != 0 ||
      file_name.compare(file_name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = file_name.substr(prefix.size(), file_name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

std::vector<int64_t> CheckpointDir::list() const {
  std::vector<int64_t> steps;
  for (const std::string& name : directory_entries(dir_)) {
    if (auto step = parse_name(name)) {
      steps.push_back(*step);
      continue;
    }
    // A temporary "<final>.tmp-<pid>": delete it when its writer is gone (killed mid-save).
    const size_t tmp = name.rfind(".tmp-");
    if (tmp == std::string::npos || !parse_name(name.substr(0, tmp))) continue;
    const std::string pid_text = name.substr(tmp + 5);
    if (pid_text.empty() || !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    const long pid = std::stol(pid_text);
    const bool writer_alive = pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
    if (!writer_alive) std::remove((dir_ + "/" + name).c_str());
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<CheckpointEntry> CheckpointDir::latest(std::vector<std::string>* warnings) const {
  const std::vector<int64_t> steps = list();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string path = path_for(*it);
    try {
      verify_checkpoint(path);
      return CheckpointEntry{*it, path};
    } catch (const Error& e) {
      const std::string warning = "skipping checkpoint '" + path + "': " + e.what();
      std::fprintf(stderr, "warning: %s\n", warning.c_str());
      if (warnings) warnings->push_back(warning);
    }
  }
  return std::nullopt;
}

std::string CheckpointDir::save(const CheckpointState& state) const {
  const std::string path = path_for(state.step);
  save_checkpoint(path, state);
  return path;
}

std::vector<int64_t> checkpoint_steps_to_keep(const std::vector<int64_t>& steps, int64_t keep_last, int64_t keep_every) {
  std::vector<int64_t> sorted = steps;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> keep;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const bool recent = keep_last <= 0 || i + static_cast<size_t>(keep_last) >= sorted.size();
    const bool milestone = keep_every > 0 && sorted[i] % keep_every == 0;
    if (recent || milestone) keep.push_back(sorted[i]);
  }
  return keep;
}

std::vector<int64_t> CheckpointDir::prune(int64_t keep_last, int64_t keep_every) const {
  const std::vector<int64_t> steps = list();
  const std::vector<int64_t> keep = checkpoint_steps_to_keep(steps, keep_last, keep_every);
  std::vector<int64_t> removed;
  for (int64_t step : steps) {
    if (std::binary_search(keep.begin(), keep.end(), step)) continue;
    const std::string path = path_for(step);
    TSTL_CHECK(std::remove(path.c_str()) == 0 || errno == ENOENT, "cannot delete old checkpoint '", path, "': ",
               std::strerror(errno));
    removed.push_back(step);
  }
  return removed;
}

}  // namespace tstl
