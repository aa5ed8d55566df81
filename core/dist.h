// Where this process sits in a data-parallel job: its rank, the world size and its rank on its
// node, read once from the launcher's environment (docs/distributed.md):
//   - OpenMPI's mpirun:  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK
//   - PMIx launchers:    PMIX_RANK with OMPI_COMM_WORLD_SIZE / SLURM_NTASKS for the size
//   - Slurm's srun:      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
//   - torchrun style:    RANK, WORLD_SIZE, LOCAL_RANK
// checked in that order; the first launcher whose rank variable is set wins, and its size must
// be set too. Nothing set: a single process (rank 0 of 1, launcher "none"), which needs no MPI.
// Slurm's variables count only inside an srun step (SLURM_STEP_ID set): a batch script's own
// shell carries SLURM_PROCID = 0 and the allocation's SLURM_NTASKS without being one of the tasks.
// A value that is not a number, or a rank outside [0, world), is an error naming
// the variable.
#pragma once

#include <functional>
#include <string>

namespace tstl {

struct DistEnv {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string launcher = "none";  // "mpirun", "pmix", "slurm", "env" or "none"
  bool distributed() const { return world > 1; }
  std::string str() const;  // "rank 1/4 (local 1, mpirun)"
};

// Reads the variables above through `getenv_fn` (tests pass a map).
DistEnv read_dist_env(const std::function<const char*(const char*)>& getenv_fn);

// The process's DistEnv, read from the real environment on the first call and fixed afterwards.
const DistEnv& dist_env();

}  // namespace tstl
