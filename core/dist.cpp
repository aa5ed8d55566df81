#include "core/dist.h"

#include <cerrno>
#include <cstdlib>

#include "core/error.h"

namespace tstl {

namespace {

int parse_int(const char* name, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  TSTL_CHECK(end != value && *end == '\0' && errno == 0 && v >= 0 && v <= 1 << 30, "environment variable ", name,
             " = '", value, "' is not a non-negative integer");
  return static_cast<int>(v);
}

struct Launcher {
  const char* name;
  const char* rank;
  const char* world;
  const char* local_rank;  // may be unset: local rank 0
};

}  // namespace

std::string DistEnv::str() const {
  return tstl::str("rank ", rank, "/", world, " (local ", local_rank, ", ", launcher, ")");
}

DistEnv read_dist_env(const std::function<const char*(const char*)>& getenv_fn) {
  static const Launcher launchers[] = {
      {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"pmix", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
      {"env", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
  };
  DistEnv env;
  for (const Launcher& l : launchers) {
    const char* rank = getenv_fn(l.rank);
    if (!rank) continue;
    const char* world = getenv_fn(l.world);
    // Under PMIx without OpenMPI's variables, Slurm's task count is the size.
    if (!world && std::string(l.name) == "pmix") world = getenv_fn("SLURM_NTASKS");
    // A batch script's own environment carries SLURM_PROCID=0 with SLURM_NTASKS of the whole
    // allocation; only srun's tasks carry SLURM_STEP_ID, so without it Slurm did not launch us.
    if (std::string(l.name) == "slurm" && !getenv_fn("SLURM_STEP_ID")) continue;
    TSTL_CHECK(world, "environment variable ", l.rank, " = ", rank, " is set but ", l.world,
               " is not: cannot tell the world size (launch with mpirun, srun or set both)");
    env.launcher = l.name;
    env.rank = parse_int(l.rank, rank);
    env.world = parse_int(l.world, world);
    const char* local = getenv_fn(l.local_rank);
    env.local_rank = local ? parse_int(l.local_rank, local) : 0;
    TSTL_CHECK(env.world >= 1, "environment variable ", l.world, " = ", world, ": the world size must be >= 1");
    TSTL_CHECK(env.rank < env.world, "environment variable ", l.rank, " = ", env.rank, " is not below ", l.world,
               " = ", env.world);
    return env;
  }
  return env;
}

const DistEnv& dist_env() {
  static const DistEnv env = read_dist_env([](const char* name) { return std::getenv(name); });
  return env;
}

}  // namespace tstl
