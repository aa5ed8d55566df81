// The message of the tstl::Error that a callable throws, for tests that check what an error says.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace tstl {

// The message of the Error fn throws; fails the test (and returns "") when it throws none.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error was thrown";
  return "";
}

}  // namespace tstl
