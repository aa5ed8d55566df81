// Token ids checked on the host before upload (core/token_ids.h): the first bad id is named with
// its position, with the CPU kernels' messages; ignore_index passes as a target.
#include <gtest/gtest.h>

#include <string>

#include "core/token_ids.h"
#include "common/error_of.h"

namespace tstl {
namespace {

TEST(TokenIds, EmbeddingIdsOutsideTheVocabularyAreNamedWithTheirPosition) {
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 2, 11, 4, -1}, {5});
  EXPECT_NE(error_of([&] { check_embedding_ids(ids, 11); }).find("embedding: id 11 at position 2 outside [0, 11)"),
            std::string::npos);
  const Tensor wide = Tensor::from_vector(std::vector<int64_t>{1, 2, 11, 4, -1}, {5});
  EXPECT_NE(error_of([&] { check_embedding_ids(wide, 12); })
                .find("embedding: id -1 at position 4 outside [0, 12)"),
            std::string::npos);
  EXPECT_NO_THROW(check_embedding_ids(Tensor::from_vector(std::vector<int64_t>{0, 5, 9}, {1, 3}), 10));
}

TEST(TokenIds, TargetsOutsideTheVocabularyAreNamedAndIgnoreIndexPasses) {
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, -1, 5, 6}, {4});
  EXPECT_NE(error_of([&] { check_target_ids(t, 6, -1); }).find("cross_entropy: target 6 at row 3 outside [0, 6)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_target_ids(t, 7, -100); }).find("target -1 at row 1 outside [0, 7)"),
            std::string::npos);
  EXPECT_NO_THROW(check_target_ids(t, 7, -1));
}

TEST(TokenIds, FloatIdsAreRejected) {
  EXPECT_NE(error_of([&] { check_embedding_ids(Tensor::zeros({3}), 10); }).find("must be i32 or i64"),
            std::string::npos);
}

}  // namespace
}  // namespace tstl
