#include "core/error.h"

#include <cstring>

namespace tstl {

void fail_at(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(str(message, " [", base ? base + 1 : file, ":", line, "]"));
}

}  // namespace tstl
