// Rank discovery from the launchers' environment variables and the shard layout (pure functions).
#include <gtest/gtest.h>

#include <map>

#include "core/comm.h"
#include "core/dist.h"

namespace tstl {
namespace {

DistEnv read(const std::map<std::string, std::string>& vars) {
  return read_dist_env([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(DistEnv, NoLauncherIsOneProcess) {
  const DistEnv e = read({});
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world, 1);
  EXPECT_EQ(e.launcher, "none");
  EXPECT_FALSE(e.distributed());
}

TEST(DistEnv, EachLauncherIsRead) {
  DistEnv e = read({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}});
  EXPECT_EQ(e.str(), "rank 2/4 (local 0, mpirun)");
  e = read({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(e.str(), "rank 5/8 (local 1, slurm)");
  e = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}});
  EXPECT_EQ(e.str(), "rank 1/2 (local 1, env)");
  e = read({{"PMIX_RANK", "3"}, {"SLURM_NTASKS", "4"}});
  EXPECT_EQ(e.str(), "rank 3/4 (local 0, pmix)");
}

TEST(DistEnv, MpirunWinsOverSlurmAndABatchShellIsNotATask) {
  // mpirun inside a Slurm allocation: OpenMPI's variables are the process's.
  DistEnv e = read({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"},
                    {"SLURM_NTASKS", "16"}, {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(e.str(), "rank 1/2 (local 0, mpirun)");
  // The batch script's own shell: SLURM_PROCID without a step is not a task of a parallel job.
  e = read({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "16"}});
  EXPECT_EQ(e.world, 1);
}

TEST(DistEnv, BadValuesAreErrorsNamingTheVariable) {
  auto message = [](const std::map<std::string, std::string>& vars) {
    try {
      read(vars);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"RANK", "x1"}, {"WORLD_SIZE", "2"}}).find("RANK = 'x1' is not a non-negative integer"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}}).find("RANK = 2 is not below WORLD_SIZE = 2"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}}).find("WORLD_SIZE is not"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("must be >= 1"), std::string::npos);
}

TEST(ShardRange, CoversEveryElementOnceInRankOrder) {
  for (int64_t n : {0, 1, 2, 3, 7, 10, 12, 1000, 1001}) {
    for (int world = 1; world <= 5; ++world) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const ShardRange s = shard_range(n, world, r);
        EXPECT_EQ(s.begin, std::min(next, n)) << n << " " << world << " " << r;
        EXPECT_LE(s.size(), (n + world - 1) / world);
        EXPECT_GE(s.size(), 0);
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
  }
  // Hand-computed: 10 over 4 ranks in chunks of 3: [0,3) [3,6) [6,9) [9,10).
  EXPECT_EQ(shard_range(10, 4, 3).begin, 9);
  EXPECT_EQ(shard_range(10, 4, 3).size(), 1);
  // 2 over 3 ranks: the last rank owns nothing.
  EXPECT_EQ(shard_range(2, 3, 2).size(), 0);
}

}  // namespace
}  // namespace tstl
