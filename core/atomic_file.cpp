#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace tstl {

namespace {

void fsync_path(const std::string& path, int flags, const char* what) {
  const int fd = ::open(path.c_str(), flags);
  TSTL_CHECK(fd >= 0, "cannot open ", what, " '", path, "' to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  TSTL_CHECK(rc == 0, "fsync of ", what, " '", path, "' failed: ", std::strerror(err));
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

void commit_file(const std::string& tmp, const std::string& path) {
  fsync_path(tmp, O_RDONLY, "file");
  TSTL_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path, "': ",
             std::strerror(errno));
  fsync_path(parent_dir(path), O_RDONLY | O_DIRECTORY, "directory");
}

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  TSTL_CHECK(out, "cannot write '", path, "' (via '", tmp, "'): ", std::strerror(errno),
             errno == ENOENT ? " (does its directory exist?)" : "");
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size();
  const int write_errno = errno;
  if (std::fclose(out) != 0 || !written) {
    std::remove(tmp.c_str());
    TSTL_FAIL("writing '", tmp, "' failed: ", std::strerror(write_errno));
  }
  try {
    commit_file(tmp, path);
  } catch (const Error&) {
    std::remove(tmp.c_str());
    throw;
  }
}

}  // namespace tstl
