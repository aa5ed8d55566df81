// The independent Python readers (tensorboard, safetensors, tokenizers) in a virtualenv under the
// build directory, installed on first use by scripts/python-readers. A test that needs them
// skips, with the installer's reason, where they cannot be installed (no network): never passes.
#pragma once

#include <filesystem>
#include <string>

#include "common/cli_test_util.h"

namespace tstl::test {

// The virtualenv's python, or "" with `why` set.
inline std::string readers_python(std::string* why) {
  const std::filesystem::path build_dir = std::filesystem::path(TSTL_BINARY).parent_path();
  const std::string venv = (build_dir / "python-readers").string();
  const RunResult r = run_shell(std::string(TSTL_SOURCE_DIR) + "/scripts/python-readers " + venv);
  if (r.exit_code != 0) {
    *why = "the Python readers could not be installed: " + r.output;
    return "";
  }
  return venv + "/bin/python";
}

}  // namespace tstl::test

// Sets `python` to the readers' interpreter or skips the test with the reason.
#define TSTL_REQUIRE_PYTHON_READERS(python)               \
  std::string python;                                     \
  do {                                                    \
    std::string why_;                                     \
    python = ::tstl::test::readers_python(&why_);         \
    if (python.empty()) GTEST_SKIP() << why_;             \
  } while (0)
