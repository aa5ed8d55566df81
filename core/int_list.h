// Comma-separated integer lists as the command line and the config write them ("128,256,512").
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace tstl {

// Each item a decimal integer >= min_value, no spaces, no empty items. Anything else is an error
// naming `what`, the whole text and the offending item.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what, int64_t min_value = 1);

}  // namespace tstl
