// The Communicator, checked on every rank of the job this binary runs in: ctest runs it once
// as one process (world 1, the local engine) and under `mpirun -np 1`, `-np 2` and `-np 3` (the
// MPI engine; NCCL for the CUDA cases on a machine with GPUs). Inputs are a pure function of (rank, element), so every rank computes the expected
// result of every collective itself. Values are multiples of 1/4 below 32 in magnitude: their
// sums over three ranks are exact in f32 and bf16, so sums are compared exactly whatever order
// the engine adds in.
#include <gtest/gtest.h>

#include "dist/dist_test_util.h"

#include <random>

#include "core/comm.h"
#include "core/rng.h"

namespace tstl {
namespace {

double value(int rank, int64_t i, uint64_t salt) {
  const uint32_t bits = philox_at(salt * 131 + static_cast<uint64_t>(rank), static_cast<uint64_t>(i)).v[0];
  return static_cast<double>(static_cast<int>(bits % 128) - 64) / 4.0;
}

Tensor rank_tensor(int rank, int64_t n, uint64_t salt, DType dtype, Device device) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(value(rank, i, salt));
  return Tensor::from_vector<float>(v, {n}).to(dtype).to(device);
}

std::vector<float> host(const Tensor& t) { return t.to(Device::CPU).to(DType::F32).to_vector<float>(); }

// Sizes: empty, one element, fewer than the ranks, non-multiples of 2 and 3, and random ones
// (the same on every rank: a fixed seed).
std::vector<int64_t> sizes() {
  std::vector<int64_t> s = {0, 1, 2, 3, 5, 7, 12, 1001};
  std::mt19937_64 gen(42);
  for (int k = 0; k < 4; ++k) s.push_back(static_cast<int64_t>(gen() % 70000));
  return s;
}

struct Case {
  DType dtype;
  Device device;
};

class Collectives : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (GetParam().device == Device::CUDA && !cuda_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(Collectives, AllReduceSumAndAvgMatchTheReference) {
  const int W = test_comm().world(), r = test_comm().rank();
  uint64_t salt = 1;
  for (int64_t n : sizes()) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
      Tensor t = rank_tensor(r, n, salt, GetParam().dtype, GetParam().device);
      test_comm().all_reduce(t, op);
      const std::vector<float> got = host(t);
      ASSERT_EQ(static_cast<int64_t>(got.size()), n);
      for (int64_t i = 0; i < n; ++i) {
        double sum = 0;
        for (int q = 0; q < W; ++q) sum += value(q, i, salt);
        if (op == ReduceOp::Sum) {
          ASSERT_EQ(got[static_cast<size_t>(i)], static_cast<float>(sum)) << "n " << n << " i " << i;
        } else {
          const double tol = GetParam().dtype == DType::BF16 ? 0.2 : 1e-5;
          ASSERT_NEAR(got[static_cast<size_t>(i)], sum / W, tol) << "n " << n << " i " << i;
        }
      }
      ++salt;
    }
  }
}

TEST_P(Collectives, ReduceScatterGivesEachRankItsSliceOfTheSum) {
  const int W = test_comm().world(), r = test_comm().rank();
  uint64_t salt = 100;
  for (int64_t n : sizes()) {
    const ShardRange mine = shard_range(n, W, r);
    Tensor in = rank_tensor(r, n, salt, GetParam().dtype, GetParam().device);
    Tensor out = Tensor::zeros({mine.size()}, GetParam().dtype, GetParam().device);
    test_comm().reduce_scatter(in, out, ReduceOp::Sum);
    const std::vector<float> got = host(out);
    for (int64_t i = mine.begin; i < mine.end; ++i) {
      double sum = 0;
      for (int q = 0; q < W; ++q) sum += value(q, i, salt);
      ASSERT_EQ(got[static_cast<size_t>(i - mine.begin)], static_cast<float>(sum)) << "n " << n << " i " << i;
    }
    ++salt;
  }
}

TEST_P(Collectives, AllGatherConcatenatesTheShards) {
  const int W = test_comm().world(), r = test_comm().rank();
  uint64_t salt = 200;
  for (int64_t n : sizes()) {
    // Element i of the whole vector comes from its owner's tensor.
    const ShardRange mine = shard_range(n, W, r);
    Tensor whole_mine = rank_tensor(r, n, salt, DType::F32, Device::CPU);
    Tensor in = (mine.size() ? whole_mine.flat_slice(mine.begin, mine.size()).clone() : Tensor::zeros({0}))
                    .to(GetParam().dtype).to(GetParam().device);
    Tensor out = Tensor::zeros({n}, GetParam().dtype, GetParam().device);
    test_comm().all_gather(in, out);
    const std::vector<float> got = host(out);
    for (int q = 0; q < W; ++q) {
      const ShardRange theirs = shard_range(n, W, q);
      for (int64_t i = theirs.begin; i < theirs.end; ++i)
        ASSERT_EQ(got[static_cast<size_t>(i)], static_cast<float>(value(q, i, salt))) << "n " << n << " i " << i;
    }
    ++salt;
  }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  const int W = test_comm().world(), r = test_comm().rank();
  uint64_t salt = 300;
  for (int64_t n : sizes()) {
    for (int root = 0; root < W; ++root) {
      Tensor t = rank_tensor(r, n, salt, GetParam().dtype, GetParam().device);
      test_comm().broadcast(t, root);
      const std::vector<float> got = host(t);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[static_cast<size_t>(i)], static_cast<float>(value(root, i, salt))) << "root " << root;
    }
    ++salt;
  }
  test_comm().barrier();
}

// The asynchronous calls of the gradient buckets and ZeRO-1: several collectives in flight at
// once (on CUDA queued on NCCL's stream, their temporaries kept until join), then one join; the
// results must be those of the blocking calls.
TEST_P(Collectives, AsynchronousCallsJoinedOnceMatchTheReference) {
  const int W = test_comm().world(), r = test_comm().rank();
  const Device device = GetParam().device;
  uint64_t salt = 400;
  for (int64_t n : sizes()) {
    const ShardRange mine = shard_range(n, W, r);
    Tensor summed = rank_tensor(r, n, salt, GetParam().dtype, device);
    Tensor scatter_in = rank_tensor(r, n, salt + 1, GetParam().dtype, device);
    Tensor scatter_out = Tensor::zeros({mine.size()}, GetParam().dtype, device);
    Tensor whole_mine = rank_tensor(r, n, salt + 2, DType::F32, Device::CPU);
    Tensor gather_in = (mine.size() ? whole_mine.flat_slice(mine.begin, mine.size()).clone() : Tensor::zeros({0}))
                           .to(GetParam().dtype).to(device);
    Tensor gathered = Tensor::zeros({n}, GetParam().dtype, device);
    test_comm().all_reduce_async(summed, ReduceOp::Sum);
    test_comm().reduce_scatter_async(scatter_in, scatter_out, ReduceOp::Sum);
    test_comm().all_gather_async(gather_in, gathered);
    test_comm().join(device);
    const std::vector<float> got_sum = host(summed), got_scatter = host(scatter_out), got_gather = host(gathered);
    for (int64_t i = 0; i < n; ++i) {
      double sum = 0, scattered = 0;
      for (int q = 0; q < W; ++q) {
        sum += value(q, i, salt);
        scattered += value(q, i, salt + 1);
      }
      ASSERT_EQ(got_sum[static_cast<size_t>(i)], static_cast<float>(sum)) << "all_reduce n " << n << " i " << i;
      if (i >= mine.begin && i < mine.end) {
        ASSERT_EQ(got_scatter[static_cast<size_t>(i - mine.begin)], static_cast<float>(scattered))
            << "reduce_scatter n " << n << " i " << i;
      }
    }
    for (int q = 0; q < W; ++q) {
      const ShardRange theirs = shard_range(n, W, q);
      for (int64_t i = theirs.begin; i < theirs.end; ++i)
        ASSERT_EQ(got_gather[static_cast<size_t>(i)], static_cast<float>(value(q, i, salt + 2)))
            << "all_gather n " << n << " i " << i;
    }
    salt += 3;
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, Collectives,
                         ::testing::Values(Case{DType::F32, Device::CPU}, Case{DType::BF16, Device::CPU},
                                           Case{DType::F32, Device::CUDA}, Case{DType::BF16, Device::CUDA}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(device_name(info.param.device)) + "_" + dtype_name(info.param.dtype);
                         });

TEST(Communicator, HostValueReductionsAgreeOnEveryRank) {
  const int W = test_comm().world(), r = test_comm().rank();
  EXPECT_EQ(test_comm().sum(r + 1.0), W * (W + 1) / 2.0);
  EXPECT_EQ(test_comm().max(r == W - 1 ? 7.5 : -1.0), 7.5);
  EXPECT_TRUE(test_comm().any(r == W - 1));
  EXPECT_FALSE(test_comm().any(false));
  EXPECT_EQ(test_comm().engine_name(Device::CPU), test_comm().env().launcher == "none" ? "local" : "mpi");
}

TEST(Communicator, MismatchedShardSizesAreErrorsNamingTheRank) {
  Tensor in = Tensor::zeros({10});
  Tensor out = Tensor::zeros({11});
  try {
    test_comm().reduce_scatter(in, out);
    FAIL() << "accepted a wrong output size";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(test_comm().rank()) + " owns"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tstl
