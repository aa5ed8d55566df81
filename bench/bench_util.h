// Timing helpers shared by the benchmarks: the seconds of one call and the median of runs (the
// median, not the mean, so that a run slowed by other load on the machine does not count).
//
// Seconds are wall-clock, or with TSTL_BENCH_CPU_TIME=1 in the environment the CPU time of the
// whole process (all its threads): on a machine loaded by other work, a one-thread run's CPU time
// leaves out the time it waited for a core, which wall-clock time does not. With several threads
// it also counts threads spinning at barriers, so use it with OMP_NUM_THREADS=1.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace tstl::bench {

inline bool cpu_time_clock() {
  static const bool on = [] {
    const char* v = std::getenv("TSTL_BENCH_CPU_TIME");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// "wall-clock" or "process CPU time": the clock seconds() reads, for the benchmarks' headers.
inline const char* clock_name() { return cpu_time_clock() ? "process CPU time" : "wall-clock"; }

// Seconds that fn() takes, on the clock above.
template <class Fn>
double seconds(Fn&& fn) {
  if (cpu_time_clock()) {
    timespec t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
    fn();
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
    return static_cast<double>(t1.tv_sec - t0.tv_sec) + 1e-9 * static_cast<double>(t1.tv_nsec - t0.tv_nsec);
  }
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
