// Helpers shared by the command-line tests: scratch directories, files, and running the tstl binary.
#pragma once

#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>

namespace tstl::test {

// A fresh directory removed at the end of the test.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "tstl_test_XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~ScratchDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_file(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline void write_gz(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb9");
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
}

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs `cmd` through the shell, capturing stdout and stderr together.
inline RunResult run_shell(const std::string& cmd) {
  RunResult r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), p)) > 0;) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs `tstl ARGS` through the shell.
inline RunResult run_tstl(const std::string& args) { return run_shell(std::string(TSTL_BINARY) + " " + args); }

// A few paragraphs of English for training tiny SentencePiece models.
inline std::string sample_english() {
  std::string text;
  const char* lines[] = {
      "The committee met on Tuesday to discuss the budget for the coming year.",
      "Members agreed that the harbor needs new piers, and the roads need repair.",
      "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea.",
      "The whale rose from the deep water, and the sailors shouted from the mast.",
      "Our nation is strong because our people are free to work and to learn.",
      "In 1790 the first address was delivered to both houses of Congress.",
      "Trade with other nations grew each year, and the treasury grew with it.",
  };
  for (int rep = 0; rep < 30; ++rep)
    for (const char* l : lines) text += std::string(l) + (rep % 3 == 0 ? "\n\n" : "\n");
  return text;
}

}  // namespace tstl::test
