// The token file most training tests run on: 24 State of the Union addresses of the bundled
// corpus, byte-level, 10% held out for validation; prepared once per build and shared by every
// test binary (common/shared_fixture.h).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "common/cli_test_util.h"
#include "common/shared_fixture.h"

namespace tstl::test {

inline const std::string& sotu_24_byte_file() {
  static const std::string path = shared_fixture("sotu-24-byte.h5", [](const std::string& out) {
    const RunResult r = run_tstl("prepare --input " + std::string(TSTL_SOURCE_DIR) +
                                 "/data/corpus/sotu --max-documents 24 --tokenizer byte --val-fraction 0.1 --output " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
  });
  return path;
}

}  // namespace tstl::test
