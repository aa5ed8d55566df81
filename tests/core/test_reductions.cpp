// Every CPU reduction gives the same bits for any thread count (core/reduce.h): sum and mean
// follow the documented fixed-block contract (a hand-computed value that any other partition
// misses), and sum, mean and the cross-entropy mean give identical bytes at 1, 2, 3 and 7
// threads above their parallel threshold, on data whose sum depends on the order of additions.
// Also the cross-entropy mean over several non-ignored rows, checked by value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/threads.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/reduce.h"

namespace tstl {
namespace {

using test::kThreadCounts;
using test::tensor_bytes;
using test::with_threads;

// Values over 60 binades with both signs: float sums of these depend on the order of additions
// (a large term swallows small ones until it is cancelled), which is what the tests need.
template <class T>
std::vector<T> wide_range_values(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> exponent(-20, 40);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = static_cast<T>(std::ldexp(normal(rng), exponent(rng)));
  return v;
}

// 2^53 and then ones: within a block each 1 is lost to rounding (2^53 + 1 rounds to even), so
// block 0 sums to 2^53 and each later block to exactly 4096; the block totals then add exactly.
// A sequential sum would give 2^53, and OpenMP's reduction(+) a value that depends on the
// thread count (the ones lost are those sharing a thread's chunk with 2^53).
TEST(Reductions, SumFollowsTheFixedBlockContract) {
  const int64_t blocks = 20, n = blocks * kReduceBlock;
  ASSERT_GE(n, kReduceParallelMin);  // the parallel path
  std::vector<double> v(static_cast<size_t>(n), 1.0);
  v[0] = std::ldexp(1.0, 53);
  const Tensor x = Tensor::from_vector(v, {n});
  const double expected = std::ldexp(1.0, 53) + static_cast<double>((blocks - 1) * kReduceBlock);
  for (int threads : kThreadCounts) {
    EXPECT_EQ(with_threads(threads, [&] { return sum(x).item(); }), expected) << threads << " threads";
    EXPECT_EQ(with_threads(threads, [&] { return mean(x).item(); }), expected * (1.0 / static_cast<double>(n)))
        << threads << " threads";
  }
}

template <class T>
void expect_sum_and_mean_thread_independent(DType dtype) {
  const int64_t n = 3 * kReduceParallelMin + 123;  // above the threshold, not a whole number of blocks
  const std::vector<T> v = wide_range_values<T>(n, 7);
  const Tensor x = Tensor::from_vector(v, {n});
  long double exact = 0, magnitude = 0;
  for (T e : v) exact += e, magnitude += std::fabs(static_cast<long double>(e));
  const std::string sum1 = with_threads(1, [&] { return tensor_bytes(sum(x)); });
  const std::string mean1 = with_threads(1, [&] { return tensor_bytes(mean(x)); });
  for (int threads : kThreadCounts) {
    EXPECT_EQ(with_threads(threads, [&] { return tensor_bytes(sum(x)); }), sum1) << dtype_name(dtype) << ", " << threads;
    EXPECT_EQ(with_threads(threads, [&] { return tensor_bytes(mean(x)); }), mean1) << dtype_name(dtype) << ", " << threads;
  }
  // And the sum is right: double accumulation, so within a few double ulps of the total magnitude
  // (plus the final rounding to T).
  const double tolerance = 1e-14 * static_cast<double>(magnitude) + std::fabs(static_cast<double>(exact)) *
                                                                         std::numeric_limits<T>::epsilon();
  EXPECT_NEAR(sum(x).item(), static_cast<double>(exact), tolerance) << dtype_name(dtype);
}

TEST(Reductions, SumAndMeanSameBitsForAnyThreadCount) {
  expect_sum_and_mean_thread_independent<double>(DType::F64);
  expect_sum_and_mean_thread_independent<float>(DType::F32);
}

TEST(Reductions, CrossEntropyMeanSameBitsForAnyThreadCount) {
  // Rows above the sum's parallel threshold; logits over a wide range so that the per-row losses
  // span many binades; every 5th row ignored.
  const int64_t rows = kReduceParallelMin + 4321, vocab = 5;
  const std::vector<double> logits_v = wide_range_values<double>(rows * vocab, 11);
  std::vector<double> scaled(logits_v.size());
  for (size_t i = 0; i < scaled.size(); ++i) scaled[i] = logits_v[i] * 1e-9;  // up to ~1e3
  std::vector<int64_t> targets_v(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) targets_v[static_cast<size_t>(r)] = r % 5 == 4 ? -1 : (r * 7) % vocab;
  const Tensor targets = Tensor::from_vector(targets_v, {rows});
  auto run = [&] {
    Tensor logits = Tensor::from_vector(scaled, {rows, vocab}).set_requires_grad(true);
    Tensor loss = cross_entropy(logits, targets);
    loss.backward();
    return std::make_pair(tensor_bytes(loss), tensor_bytes(logits.grad()));
  };
  const auto reference = with_threads(1, run);
  for (int threads : kThreadCounts) {
    const auto got = with_threads(threads, run);
    EXPECT_EQ(got.first, reference.first) << "loss, " << threads << " threads";
    EXPECT_EQ(got.second, reference.second) << "gradient, " << threads << " threads";
  }
  // The value against a naive long double mean of -log softmax.
  long double total = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = targets_v[static_cast<size_t>(r)];
    if (t < 0) continue;
    const double* row = scaled.data() + r * vocab;
    long double top = row[0], s = 0;
    for (int64_t j = 1; j < vocab; ++j) top = std::max<long double>(top, row[j]);
    for (int64_t j = 0; j < vocab; ++j) s += std::exp(static_cast<long double>(row[j]) - top);
    total += top + std::log(s) - row[t];
    ++count;
  }
  double loss;
  std::memcpy(&loss, reference.first.data(), sizeof loss);
  EXPECT_NEAR(loss, static_cast<double>(total / count), 1e-12 * static_cast<double>(total / count));
}

// Three non-ignored rows with hand-computed losses ln 3, ln(8/5), ln(10/3) (their mean is
// ln(16) / 3) and an ignored row that must count for nothing, neither in the sum nor in the
// divisor; the gradient is (softmax - onehot) / 3 on the counted rows and 0 on the ignored one.
TEST(CrossEntropy, MeanOverSeveralTargetsByValue) {
  const double ln2 = std::log(2.0), ln3 = std::log(3.0), ln5 = std::log(5.0), ln6 = std::log(6.0);
  Tensor logits = Tensor::from_vector<double>({0, 0, 0,         // softmax 1/3 each, target 1
                                               0, ln2, ln5,     // softmax (1, 2, 5) / 8, target 2
                                               7, -3, 1,        // ignored
                                               ln6, ln3, 0},    // softmax (6, 3, 1) / 10, target 1
                                              {4, 3})
                      .set_requires_grad(true);
  const Tensor targets = Tensor::from_vector<int64_t>({1, 2, -1, 1}, {4});
  Tensor loss = cross_entropy(logits, targets);
  EXPECT_NEAR(loss.item(), std::log(16.0) / 3.0, 1e-15);
  loss.backward();
  const std::vector<double> expected = {1.0 / 9, -2.0 / 9, 1.0 / 9,                //
                                        1.0 / 24, 2.0 / 24, -3.0 / 24,             //
                                        0, 0, 0,                                   //
                                        0.6 / 3, -0.7 / 3, 0.1 / 3};
  const std::vector<double> grad = logits.grad().to_vector<double>();
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(grad[i], expected[i], 1e-15) << "element " << i;
  // The per-row form gives the three losses themselves.
  const std::vector<double> per_row = cross_entropy_rows(logits.detach(), targets).to_vector<double>();
  EXPECT_NEAR(per_row[0], ln3, 1e-15);
  EXPECT_NEAR(per_row[1], std::log(1.6), 1e-15);
  EXPECT_EQ(per_row[2], 0.0);
  EXPECT_NEAR(per_row[3], std::log(10.0 / 3.0), 1e-15);
}

}  // namespace
}  // namespace tstl
