// Errors: every failure in tstl is a tstl::Error carrying the file and line that detected it and
// a message naming the offending value. TSTL_CHECK(cond, parts...) streams the parts together.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tstl {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Parts>
std::string str(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

[[noreturn]] void fail_at(const char* file, int line, const std::string& message);

}  // namespace tstl

#define TSTL_CHECK(cond, ...)                                               \
  do {                                                                      \
    if (!(cond)) ::tstl::fail_at(__FILE__, __LINE__, ::tstl::str(__VA_ARGS__)); \
  } while (0)

#define TSTL_FAIL(...) ::tstl::fail_at(__FILE__, __LINE__, ::tstl::str(__VA_ARGS__))
