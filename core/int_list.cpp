#include "core/int_list.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace tstl {

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what, int64_t min_value) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    const bool integer = !item.empty() && item[0] != ' ' && end && *end == '\0' && errno == 0;
    TSTL_CHECK(integer && v >= min_value, what, " '", text, "': expected comma-separated integers",
               min_value == 1 ? " > 0" : min_value == 0 ? " >= 0" : "", ", got '", item, "'");
    values.push_back(v);
    start = comma + 1;
  }
  return values;
}

}  // namespace tstl
