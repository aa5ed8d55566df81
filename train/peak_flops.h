// The peak FLOP/s that MFU divides by, on the CPU: configured (train.peak_flops), or an sgemm at a
// large size measured once per machine and cached, so that a training run never re-measures it
// at startup (on a machine busy with other work a short measurement reads low and MFU high).
// `tstl bench peak` measures and caches it; a run that finds no cached value measures once and
// caches the result. The startup line says which of these the run uses.
//
// Cache: one text file, `$TSTL_CACHE_DIR/cpu-peak` (else `$XDG_CACHE_HOME/tstl/cpu-peak`, else
// `~/.cache/tstl/cpu-peak`), one line per machine: `key<TAB>flops<TAB>UTC date`, the key being
// the CPU model, the thread count and OpenBLAS's kernel family (a home directory may be shared
// by machines of different kinds). A later measurement of the same key replaces its line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tstl {

// The best rate of `repeats` single-precision (n, n) x (n, n) GEMMs through BLAS, in FLOP/s.
double measure_sgemm_flops(int64_t n = 2048, int repeats = 5);

// This machine's cache key: "CPU model | N threads | OpenBLAS CORE".
std::string cpu_peak_key();
std::string cpu_peak_cache_path();

// The cached peak of `key` in `path`; nullopt when the file or the key is absent. A malformed line
// is an error naming the file and the line.
std::optional<double> read_cached_peak(const std::string& path, const std::string& key);
// Stores `flops` for `key` in `path` (creating its folder), replacing that key's line; false
// (nothing thrown) when the file cannot be written.
bool write_cached_peak(const std::string& path, const std::string& key, double flops);

struct PeakFlops {
  double flops = 0;
  std::string source;  // for the startup line, e.g. "configured (train.peak_flops)"
};

// configured > 0: that value; else the cached peak of this machine; else measured now (sgemm at
// 2048) and cached.
PeakFlops resolve_cpu_peak(double configured);

}  // namespace tstl
