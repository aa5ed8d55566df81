#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.h"

namespace tstl {

namespace {

// Reflected CRC-32C table (polynomial 0x1EDC6F41, reversed 0x82F63B78).
const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (c & 1 ? 0x82F63B78u : 0u);
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// Protobuf wire format: varints, and keys (field number << 3 | wire type).
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_key(std::string& out, int field, int wire_type) { put_varint(out, static_cast<uint64_t>(field << 3 | wire_type)); }
void put_fixed(std::string& out, const void* p, size_t n) {  // little-endian hosts only (x86, ARM)
  out.append(static_cast<const char*>(p), n);
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

enum EventField { kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7 };

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_key(e, kWallTime, 1);
  put_fixed(e, &wall_time, 8);
  if (step != 0) {  // proto3: a default value is not written
    put_key(e, kStep, 0);
    put_varint(e, static_cast<uint64_t>(step));
  }
  return e;
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  const auto& table = crc32c_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);
    put_key(v, 2, 5);
    put_fixed(v, &value, 4);
    put_bytes(summary, 1, v);
  }
  std::string e = event_header(wall_time, step);
  put_bytes(e, kSummary, summary);
  return e;
}

std::string encode_file_version_event(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes(e, kFileVersion, "brain.Event:2");
  return e;
}

std::string encode_session_start_event(double wall_time, int64_t step) {
  std::string log;
  put_key(log, 1, 0);
  put_varint(log, 1);  // SessionLog.START
  std::string e = event_header(wall_time, step);
  put_bytes(e, kSessionLog, log);
  return e;
}

std::string tf_record(const std::string& data) {
  std::string r;
  const uint64_t length = data.size();
  put_fixed(r, &length, 8);
  const uint32_t length_crc = masked_crc32c(&length, 8), data_crc = masked_crc32c(data.data(), data.size());
  put_fixed(r, &length_crc, 4);
  r += data;
  put_fixed(r, &data_crc, 4);
  return r;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t resume_step) {
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const double now = unix_seconds();
  const std::string base = str(dir, "/events.out.tfevents.", static_cast<long long>(now), ".", host, ".", static_cast<long>(getpid()));
  // A second writer of the same process in the same second gets a suffix that sorts after the
  // first file's name, the order TensorBoard reads a directory's files in.
  for (int n = 0; !file_; ++n) {
    path_ = n == 0 ? base : str(base, ".", n);
    file_ = std::fopen(path_.c_str(), "wbx");
    TSTL_CHECK(file_ != nullptr || (errno == EEXIST && n < 1000), "cannot create the TensorBoard event file '", path_,
               "': ", std::strerror(errno));
  }
  append(encode_file_version_event(now));
  if (resume_step >= 0) append(encode_session_start_event(now, resume_step + 1));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::append(const std::string& data) {
  const std::string record = tf_record(data);
  TSTL_CHECK(std::fwrite(record.data(), 1, record.size(), file_) == record.size() && std::fflush(file_) == 0,
             "writing the TensorBoard event file '", path_, "' failed: ", std::strerror(errno));
}

void TensorBoardWriter::write(const StepMetrics& m) {
  std::vector<std::pair<std::string, float>> scalars = {
      {"loss", static_cast<float>(m.loss)}, {"lr", static_cast<float>(m.lr)},
      {"grad_norm", static_cast<float>(m.grad_norm)}, {"tokens_per_s", static_cast<float>(m.tokens_per_s)},
      {"mfu", static_cast<float>(m.mfu)}};
  if (m.val_loss) scalars.emplace_back("val_loss", static_cast<float>(*m.val_loss));
  append(encode_scalar_event(unix_seconds(), m.step, scalars));
}

}  // namespace tstl
