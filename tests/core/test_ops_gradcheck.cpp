// One table of the generic ops, each checked against float64 finite differences on random
// inputs of odd sizes (after ggml's test-backend-ops).
#include <gtest/gtest.h>

#include "common/gradcheck.h"

namespace tstl {
namespace {

using testing::expect_gradients_match;
using testing::random_input;

struct OpCase {
  const char* name;
  std::function<std::vector<Tensor>()> make_inputs;
  testing::OpFn fn;
};

Tensor ids_tensor(const std::vector<int64_t>& ids, const Shape& shape) { return Tensor::from_vector(ids, shape); }

std::vector<OpCase> op_table() {
  return {
      {"matmul", [] { return std::vector<Tensor>{random_input({3, 5}, 1), random_input({5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }},
      {"matmul_batched", [] { return std::vector<Tensor>{random_input({3, 4, 5}, 1), random_input({3, 5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }},
      {"matmul_shared_weight_transposed",
       [] { return std::vector<Tensor>{random_input({3, 4, 5}, 1), random_input({7, 5}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); }},
      {"matmul_transposed_a", [] { return std::vector<Tensor>{random_input({3, 5, 4}, 1), random_input({3, 5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], true, false); }},
      {"matmul_both_transposed",
       [] { return std::vector<Tensor>{random_input({2, 5, 3}, 1), random_input({2, 7, 5}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], true, true); }},
      {"matmul_transposed_a_shared_b",
       [] { return std::vector<Tensor>{random_input({3, 5, 4}, 1), random_input({5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], true, false); }},
      {"add", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1), random_input({3, 5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }},
      {"add_row", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1), random_input({7}, 2)}; },
       [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }},
      {"sub_row", [] { return std::vector<Tensor>{random_input({5, 7}, 1), random_input({7}, 2)}; },
       [](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }},
      {"mul", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1), random_input({3, 5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }},
      {"mul_row", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1), random_input({7}, 2)}; },
       [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }},
      {"scale", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return scale(in[0], -1.7); }},
      {"gelu", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1, 2.0)}; },
       [](const std::vector<Tensor>& in) { return gelu(in[0]); }},
      {"sum", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return sum(in[0]); }},
      {"mean", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return mean(in[0]); }},
      {"permute", [] { return std::vector<Tensor>{random_input({3, 5, 7, 2}, 1)}; },
       [](const std::vector<Tensor>& in) { return permute(in[0], {2, 0, 3, 1}); }},
      {"narrow", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return narrow(in[0], 1, 1, 3); }},
      {"concat", [] { return std::vector<Tensor>{random_input({3, 2, 7}, 1), random_input({3, 5, 7}, 2)}; },
       [](const std::vector<Tensor>& in) { return concat({in[0], in[1], in[0]}, 1); }},
      {"reshape", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return mul(in[0].reshape({15, 7}), in[0].reshape({15, 7})); }},
      {"embedding", [] { return std::vector<Tensor>{random_input({11, 5}, 1)}; },
       [](const std::vector<Tensor>& in) {
         return embedding(in[0], ids_tensor({3, 0, 10, 3, 7, 3, 1}, {7}));  // repeated ids accumulate
       }},
      {"cross_entropy", [] { return std::vector<Tensor>{random_input({3, 5, 13}, 1, 3.0)}; },
       [](const std::vector<Tensor>& in) {
         return cross_entropy(in[0], ids_tensor({0, 12, 5, -1, 3, 3, 7, 1, 2, -1, 11, 4, 6, 8, 9}, {3, 5}));
       }},
      {"dropout", [] { return std::vector<Tensor>{random_input({3, 5, 7}, 1)}; },
       [](const std::vector<Tensor>& in) { return dropout(in[0], 0.3, 42, 5); }},
      {"chain_used_twice", [] { return std::vector<Tensor>{random_input({5, 7}, 1), random_input({7, 7}, 2)}; },
       [](const std::vector<Tensor>& in) {
         Tensor h = gelu(matmul(in[0], in[1]));
         return add(h, mul(h, in[0]));  // h reaches the output along two paths
       }},
  };
}

class OpGradcheck : public ::testing::TestWithParam<size_t> {};

TEST_P(OpGradcheck, BackwardMatchesFiniteDifferences) {
  const OpCase c = op_table()[GetParam()];
  SCOPED_TRACE(c.name);
  expect_gradients_match(c.fn, c.make_inputs());
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpGradcheck, ::testing::Range<size_t>(0, op_table().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) { return op_table()[info.param].name; });

}  // namespace
}  // namespace tstl
