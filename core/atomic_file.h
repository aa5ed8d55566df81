// Files that appear complete or not at all. A writer fills a temporary file next to the final
// name; commit_file() then flushes it to disk (fsync), renames it over the final name (atomic on
// POSIX file systems) and fsyncs the directory, so that after a crash the final name holds either
// the old file or the whole new one, never a prefix.
#pragma once

#include <string>

namespace tstl {

// Makes the closed, complete file `tmp` the file `path`: fsync(tmp), rename(tmp, path),
// fsync(directory of path). Errors name the paths and the OS's reason; `tmp` is left in place
// on failure (the caller decides whether to remove it).
void commit_file(const std::string& tmp, const std::string& path);

// Writes `bytes` to `path`.tmp and commits it to `path`; the directory must exist. On failure
// the temporary is removed and the error names the path.
void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace tstl
