// The token file most training tests run on, and readers of a run's metrics.jsonl. The token file: 24 State of the Union addresses of the bundled
// corpus, byte-level, 10% held out for validation; prepared once per build and shared by every
// test binary (common/shared_fixture.h).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

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

// The lines of a run's metrics.jsonl.
inline std::vector<std::string> metric_lines(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The text of one field of each metrics line ("" where a line lacks it).
inline std::vector<std::string> metric_field(const std::string& run_dir, const std::string& key) {
  std::vector<std::string> out;
  for (const std::string& line : metric_lines(run_dir)) {
    const size_t at = line.find("\"" + key + "\":");
    if (at == std::string::npos) {
      out.emplace_back();
      continue;
    }
    const size_t begin = at + key.size() + 3;
    out.push_back(line.substr(begin, line.find_first_of(",}", begin) - begin));
  }
  return out;
}

}  // namespace tstl::test
