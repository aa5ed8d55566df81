#include <gtest/gtest.h>

#include <limits>

#include "core/error.h"
#include "core/int_list.h"

namespace tstl {
namespace {

TEST(IntList, ParsesItemsInOrder) {
  EXPECT_EQ(parse_int_list("128,256,512", "--lengths"), (std::vector<int64_t>{128, 256, 512}));
  EXPECT_EQ(parse_int_list("7", "--lengths"), (std::vector<int64_t>{7}));
  EXPECT_EQ(parse_int_list("0,3", "--layers", 0), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(parse_int_list("-4,9", "eval.lengths", std::numeric_limits<int64_t>::min()), (std::vector<int64_t>{-4, 9}));
}

TEST(IntList, BadItemsAreErrorsNamingTheItem) {
  for (const char* bad : {"", "1,", ",1", "1,,2", "1, 2", "x", "1.5", "0", "-3", "99999999999999999999"}) {
    try {
      parse_int_list(bad, "--lengths");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--lengths '" + std::string(bad) + "'"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_int_list("-1", "--layers", 0), Error);
}

}  // namespace
}  // namespace tstl
