// The attention variants as a GoogleTest parameter: the values and a test-name printer.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "layers/decoder.h"

namespace tstl::testing {

inline auto all_variants() {
  return ::testing::Values(Variant::Rope, Variant::Alibi, Variant::KeyNorm, Variant::Coca, Variant::CocaStrict);
}

// "coca-strict" -> "coca_strict" (test names allow no '-').
inline std::string variant_test_name(const ::testing::TestParamInfo<Variant>& info) {
  std::string name = variant_name(info.param);
  for (char& ch : name)
    if (ch == '-') ch = '_';
  return name;
}

}  // namespace tstl::testing
