// The CPU peak behind MFU (train/peak_flops.h): configured, cached per machine key, or measured
// once and cached; and `tstl bench peak`, which measures and caches it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "common/cli_test_util.h"
#include "core/error.h"
#include "train/peak_flops.h"

namespace tstl {
namespace {

using test::ScratchDir;

int count_lines(const std::string& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// Points the cache at a scratch folder for the test's duration.
struct CacheDirGuard {
  ScratchDir dir;
  CacheDirGuard() { setenv("TSTL_CACHE_DIR", dir.path.c_str(), 1); }
  ~CacheDirGuard() { unsetenv("TSTL_CACHE_DIR"); }
};

TEST(PeakFlops, CacheKeepsOneLinePerMachineKey) {
  ScratchDir dir;
  const std::string path = dir / "sub/cpu-peak";
  EXPECT_FALSE(read_cached_peak(path, "cpu A | 2 threads | OpenBLAS Haswell").has_value());  // no file yet
  ASSERT_TRUE(write_cached_peak(path, "cpu A | 2 threads | OpenBLAS Haswell", 8.125e10));
  ASSERT_TRUE(write_cached_peak(path, "cpu B | 4 threads | OpenBLAS Zen", 1.5e11));
  ASSERT_TRUE(write_cached_peak(path, "cpu A | 2 threads | OpenBLAS Haswell", 9.0e10));  // re-measured
  EXPECT_EQ(count_lines(path), 2);
  EXPECT_EQ(read_cached_peak(path, "cpu A | 2 threads | OpenBLAS Haswell").value(), 9.0e10);
  EXPECT_EQ(read_cached_peak(path, "cpu B | 4 threads | OpenBLAS Zen").value(), 1.5e11);
  EXPECT_FALSE(read_cached_peak(path, "cpu A | 1 threads | OpenBLAS Haswell").has_value());
}

TEST(PeakFlops, MalformedCacheNamesFileAndLine) {
  ScratchDir dir;
  const std::string path = dir / "cpu-peak";
  test::write_file(path, "cpu A\t8e10\t2026-01-01 00:00 UTC\ncpu B\tfast\t2026-01-01 00:00 UTC\n");
  try {
    read_cached_peak(path, "cpu A");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path + " line 2"), std::string::npos) << what;
    EXPECT_NE(what.find("'fast'"), std::string::npos) << what;
  }
  test::write_file(path, "no tabs here\n");
  EXPECT_THROW(read_cached_peak(path, "cpu A"), Error);
}

TEST(PeakFlops, ConfiguredThenCachedThenMeasuredOnce) {
  CacheDirGuard guard;
  const std::string path = cpu_peak_cache_path();
  EXPECT_EQ(path, guard.dir / "cpu-peak");
  const PeakFlops configured = resolve_cpu_peak(3.5e10);
  EXPECT_EQ(configured.flops, 3.5e10);
  EXPECT_NE(configured.source.find("train.peak_flops"), std::string::npos);
  EXPECT_FALSE(std::ifstream(path).good()) << "a configured peak needs no cache";

  // No cache: measured now and cached under this machine's key.
  const PeakFlops measured = resolve_cpu_peak(0);
  EXPECT_GT(measured.flops, 0);
  EXPECT_NE(measured.source.find("measured now"), std::string::npos) << measured.source;
  ASSERT_EQ(read_cached_peak(path, cpu_peak_key()).value(), measured.flops);

  // A cached value is used as it is, not re-measured (a measurement would not give this value).
  ASSERT_TRUE(write_cached_peak(path, cpu_peak_key(), 1.234e11));
  const PeakFlops cached = resolve_cpu_peak(0);
  EXPECT_EQ(cached.flops, 1.234e11);
  EXPECT_NE(cached.source.find("cached in " + path), std::string::npos) << cached.source;
}

TEST(PeakFlops, BenchPeakCommandWritesTheCache) {
  ScratchDir dir;
  const test::RunResult run =
      test::run_shell("TSTL_CACHE_DIR=" + dir.path.string() + " " + TSTL_BINARY + " bench peak --size 256 --repeats 2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("sgemm 256: "), std::string::npos) << run.output;
  EXPECT_EQ(count_lines(dir / "cpu-peak"), 1);
  const test::RunResult bad = test::run_shell("TSTL_CACHE_DIR=" + dir.path.string() + " " + TSTL_BINARY + " bench pek");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("expected `tstl bench peak`"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace tstl
