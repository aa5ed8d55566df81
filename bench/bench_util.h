// Timing helpers shared by the benchmarks: wall-clock seconds of one call and the median of runs
// (the median, not the mean, so that a run slowed by other load on the machine does not count).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace tstl::bench {

// Wall-clock seconds that fn() takes.
template <class Fn>
double seconds(Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The median of `v` (non-empty); the upper one of the two middle values for an even count.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace tstl::bench
