// Files that several tests need (a prepared corpus, a trained tokenizer) made once and kept in
// the build tree, so that the suite gets faster as it grows. ctest runs every test in a process
// of its own, so a static in the test binary or a suite-level SetUp would still redo the work
// once per test; a file under <build>/test-fixtures/ is made by the first test that asks for it
// and reused by every later one, in any test binary.
//
// A cached file is reused only when it is newer than both the running test binary and the tstl
// binary, so a rebuild that could change how it is made (the tokenizer, `tstl prepare`) remakes
// it. It is made under a temporary name and renamed into place, so test processes that run at
// the same time (ctest -j) never see a half-written file: at worst two of them make it.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

namespace tstl::test {

namespace detail {
inline bool newer_than(const std::string& path, const std::string& other) {
  struct stat a, b;
  if (stat(path.c_str(), &a) != 0) return false;
  if (stat(other.c_str(), &b) != 0) return true;
  return a.st_mtim.tv_sec > b.st_mtim.tv_sec ||
         (a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec >= b.st_mtim.tv_nsec);
}
}  // namespace detail

// The path of the cached file `name` (e.g. "sotu-24-byte.h5"); when it is missing or stale,
// make(path) writes it first (at a temporary path with the same file name). `make` reports
// failure by throwing or by a gtest failure without writing the file; then nothing is cached.
inline std::string shared_fixture(const std::string& name, const std::function<void(const std::string&)>& make) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(TSTL_BINARY).parent_path() / "test-fixtures";
  const std::string path = (dir / name).string();
  if (detail::newer_than(path, "/proc/self/exe") && detail::newer_than(path, TSTL_BINARY)) return path;
  // Made in a directory of this process under the final name (commands may care about the
  // extension), then renamed into place.
  const fs::path work = dir / (".tmp-" + std::to_string(getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  make((work / name).string());
  if (fs::exists(work / name)) fs::rename(work / name, path);
  fs::remove_all(work);
  return path;
}

}  // namespace tstl::test
