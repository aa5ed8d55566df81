#include "train/peak_flops.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace tstl {

double measure_sgemm_flops(int64_t n, int repeats) {
  TSTL_CHECK(n >= 1 && repeats >= 1, "measure_sgemm_flops: size ", n, " and repeats ", repeats, " must be >= 1");
  const size_t count = static_cast<size_t>(n * n);
  std::vector<float> a(count, 0.5f), b(count, 0.25f), c(count);  // (n, n) each
  double best = 0;
  for (int i = 0; i <= repeats; ++i) {  // one more than asked: the first warms up threads and pages
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0 && dt > 0) best = std::max(best, 2.0 * static_cast<double>(n) * n * n / dt);
  }
  return best;
}

std::string cpu_peak_key() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      model = line.substr(line.find(':') + 1);
      model.erase(0, model.find_first_not_of(' '));
      break;
    }
  }
  return model + " | " + std::to_string(openblas_get_num_threads()) + " threads | OpenBLAS " +
         openblas_get_corename();
}

std::string cpu_peak_cache_path() {
  namespace fs = std::filesystem;
  if (const char* dir = std::getenv("TSTL_CACHE_DIR"); dir && *dir) return (fs::path(dir) / "cpu-peak").string();
  if (const char* dir = std::getenv("XDG_CACHE_HOME"); dir && *dir)
    return (fs::path(dir) / "tstl" / "cpu-peak").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : "/tmp") / ".cache" / "tstl" / "cpu-peak").string();
}

namespace {
struct CacheLine {
  std::string key;
  double flops = 0;
  std::string date;
};

std::vector<CacheLine> read_cache(const std::string& path) {
  std::vector<CacheLine> lines;
  std::ifstream in(path);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    const size_t tab1 = line.find('\t'), tab2 = tab1 == std::string::npos ? tab1 : line.find('\t', tab1 + 1);
    TSTL_CHECK(tab2 != std::string::npos, path, " line ", number,
               ": expected 'key<TAB>flops<TAB>date'; delete the file or run `tstl bench peak`");
    CacheLine entry;
    entry.key = line.substr(0, tab1);
    const std::string value = line.substr(tab1 + 1, tab2 - tab1 - 1);
    char* end = nullptr;
    entry.flops = std::strtod(value.c_str(), &end);
    TSTL_CHECK(!value.empty() && *end == '\0' && entry.flops > 0, path, " line ", number, ": '", value,
               "' is not a positive FLOP/s value; delete the file or run `tstl bench peak`");
    entry.date = line.substr(tab2 + 1);
    lines.push_back(entry);
  }
  return lines;
}

std::string utc_date() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}
}  // namespace

std::optional<double> read_cached_peak(const std::string& path, const std::string& key) {
  for (const CacheLine& line : read_cache(path))
    if (line.key == key) return line.flops;
  return std::nullopt;
}

bool write_cached_peak(const std::string& path, const std::string& key, double flops) {
  namespace fs = std::filesystem;
  std::vector<CacheLine> lines = read_cache(path);
  lines.erase(std::remove_if(lines.begin(), lines.end(), [&](const CacheLine& l) { return l.key == key; }),
              lines.end());
  lines.push_back({key, flops, utc_date()});
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  // Written to a temporary name and renamed: a concurrent reader sees the old or the new file.
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    for (const CacheLine& l : lines) {
      std::ostringstream value;
      value.precision(17);
      value << l.flops;
      out << l.key << '\t' << value.str() << '\t' << l.date << '\n';
    }
    if (!out.good()) return false;
  }
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
  return !ec;
}

PeakFlops resolve_cpu_peak(double configured) {
  if (configured > 0) return {configured, "configured (train.peak_flops)"};
  const std::string path = cpu_peak_cache_path(), key = cpu_peak_key();
  if (const std::optional<double> cached = read_cached_peak(path, key))
    return {*cached, "cached in " + path + " (`tstl bench peak` re-measures it)"};
  const double flops = measure_sgemm_flops();
  const bool stored = write_cached_peak(path, key, flops);
  return {flops, std::string("measured now (sgemm 2048) and ") + (stored ? "cached in " + path : "not cached: " + path +
                                                                                  " is not writable") +
                     "; on a busy machine it reads low: re-measure idle with `tstl bench peak`"};
}

}  // namespace tstl
