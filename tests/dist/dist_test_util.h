// Shared by the tests of tests/dist, which run as one process and again under mpirun -np 2 and 3:
// the binary's one Communicator (its world is the launcher's) and seeded random tensors that every
// rank can recompute for any seed.
#pragma once

#include <vector>

#include "core/comm.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tstl {

inline Communicator& test_comm() {
  static Communicator c(dist_env(), CommOptions{120});
  return c;
}

// Uniform in [-0.5, 0.5), element i a function of (seed, i) alone.
inline Tensor seeded(const Shape& shape, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = uniform_from_bits(philox_at(seed, i).v[0]) - 0.5f;
  return Tensor::from_vector<float>(v, shape);
}

}  // namespace tstl
