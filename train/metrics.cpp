#include "train/metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace tstl {

namespace {
std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::string metrics_json(const StepMetrics& m) {
  std::ostringstream os;
  os << "{\"step\":" << m.step << ",\"tokens\":" << m.tokens << ",\"loss\":" << json_number(m.loss)
     << ",\"lr\":" << json_number(m.lr) << ",\"grad_norm\":" << json_number(m.grad_norm)
     << ",\"ms\":" << json_number(m.ms) << ",\"tokens_per_s\":" << json_number(m.tokens_per_s)
     << ",\"mfu\":" << json_number(m.mfu);
  if (m.val_loss) os << ",\"val_loss\":" << json_number(*m.val_loss);
  if (m.skipped_steps > 0) os << ",\"skipped_steps\":" << m.skipped_steps;
  if (!m.precision.empty()) os << ",\"precision\":\"" << m.precision << "\"";
  os << "}";
  return os.str();
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_until_step) : path_(path) {
  if (keep_until_step >= 0) {
    std::ifstream in(path);
    if (in) {
      std::string kept, line;
      while (std::getline(in, line)) {
        const size_t at = line.find("\"step\":");
        if (at != std::string::npos && std::strtoll(line.c_str() + at + 7, nullptr, 10) > keep_until_step) continue;
        kept += line + "\n";
      }
      in.close();
      write_file_atomically(path, kept);
    }
  }
  file_ = std::fopen(path.c_str(), "a");
  TSTL_CHECK(file_, "cannot open metrics log '", path, "': ", std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(static_cast<std::FILE*>(file_));
}

void MetricsLog::write(const StepMetrics& m) {
  const std::string line = metrics_json(m) + "\n";
  auto* f = static_cast<std::FILE*>(file_);
  TSTL_CHECK(std::fwrite(line.data(), 1, line.size(), f) == line.size() && std::fflush(f) == 0,
             "cannot write metrics log '", path_, "': ", std::strerror(errno));
}

std::string format_step_line(const StepMetrics& m, int64_t max_steps) {
  const int width = static_cast<int>(std::to_string(std::max<int64_t>(max_steps, 1)).size());
  char buf[256];
  std::snprintf(buf, sizeof buf, "step %*lld/%lld | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | MFU %.1f%%",
                width, static_cast<long long>(m.step), static_cast<long long>(max_steps), m.loss, m.lr, m.grad_norm,
                m.ms, m.tokens_per_s, 100.0 * m.mfu);
  std::string line = buf;
  if (m.val_loss) {
    std::snprintf(buf, sizeof buf, " | val %.4f", *m.val_loss);
    line += buf;
  }
  if (m.skipped_steps > 0) line += " | skipped " + std::to_string(m.skipped_steps);
  return line;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  return buf;
}

Progress::Progress(int64_t first_step, int64_t max_steps) : first_step_(first_step), max_steps_(max_steps), step_(first_step) {}

void Progress::update(int64_t step) { update(step, seconds_now()); }

void Progress::update(int64_t step, double now_seconds) {
  if (start_ < 0) start_ = now_seconds;  // the first update: the clock starts (no step timed yet)
  else if (second_ < 0) {
    second_ = now_seconds;  // the first step done: time from here on excludes it
    second_step_ = step;
  }
  step_ = step;
  now_ = now_seconds;
}

double Progress::eta_seconds() const {
  if (second_ < 0 || step_ <= second_step_) {
    if (start_ < 0 || step_ <= first_step_) return -1;
    return (now_ - start_) / static_cast<double>(step_ - first_step_) * static_cast<double>(max_steps_ - step_);
  }
  const double per_step = (now_ - second_) / static_cast<double>(step_ - second_step_);
  return per_step * static_cast<double>(std::max<int64_t>(max_steps_ - step_, 0));
}

std::string Progress::str() const {
  const double fraction = max_steps_ > 0 ? std::clamp(static_cast<double>(step_) / max_steps_, 0.0, 1.0) : 1.0;
  const int filled = static_cast<int>(fraction * 20);
  char buf[96];
  std::snprintf(buf, sizeof buf, "[%s%s] %5.1f%% ETA %s", std::string(filled, '#').c_str(),
                std::string(20 - filled, '-').c_str(), 100.0 * fraction, format_duration(eta_seconds()).c_str());
  return buf;
}

double gpu_peak_flops(const std::string& device_name) {
  // Dense bf16 tensor-core peaks from the vendors' data sheets (without sparsity).
  struct Peak {
    const char* name;
    double flops;
  };
  static const Peak table[] = {
      {"H200", 989e12}, {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H100", 989e12}, {"GH200", 989e12},
      {"A100", 312e12}, {"A10G", 70e12},       {"A10", 125e12},      {"L40S", 362e12}, {"L4", 121e12},
      {"RTX 4090", 165e12}, {"RTX 3090", 71e12}, {"V100", 125e12},   {"B200", 2250e12},
  };
  for (const Peak& p : table)  // first match wins: the more specific names come first
    if (device_name.find(p.name) != std::string::npos) return p.flops;
  return 0;
}

}  // namespace tstl
