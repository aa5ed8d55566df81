// write_file_atomically and commit_file: the final name gets exactly the bytes, no temporary is
// left behind, and failures name the path.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace tstl {
namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

fs::path fresh_dir(const char* name) {
  const fs::path dir = fs::temp_directory_path() / (std::string("tstl_atomic_") + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(AtomicFile, WritesTheBytesAndReplacesAnOldFile) {
  const fs::path dir = fresh_dir("write");
  const fs::path path = dir / "out.json";
  std::string bytes = "first";
  write_file_atomically(path.string(), bytes);
  EXPECT_EQ(read_all(path), "first");
  bytes = std::string("second\0with a zero byte", 23);
  write_file_atomically(path.string(), bytes);
  EXPECT_EQ(read_all(path), bytes);
  EXPECT_FALSE(fs::exists(dir / "out.json.tmp"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(AtomicFile, MissingDirectoryIsAnErrorNamingThePath) {
  const fs::path dir = fresh_dir("missing");
  const std::string path = (dir / "no" / "such" / "out.txt").string();
  try {
    write_file_atomically(path, "x");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("directory exist"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(AtomicFile, CommitMovesTheTemporaryAndAMissingOneIsAnError) {
  const fs::path dir = fresh_dir("commit");
  { std::ofstream(dir / "a.tmp-1") << "payload"; }
  commit_file((dir / "a.tmp-1").string(), (dir / "a").string());
  EXPECT_EQ(read_all(dir / "a"), "payload");
  EXPECT_FALSE(fs::exists(dir / "a.tmp-1"));
  EXPECT_THROW(commit_file((dir / "gone.tmp").string(), (dir / "gone").string()), Error);
  EXPECT_FALSE(fs::exists(dir / "gone"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tstl
