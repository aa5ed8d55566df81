// Running a computation at a chosen thread count, for the tests that every CPU reduction gives
// the same bits for any number of threads (docs/training.md, core/reduce.h).
#pragma once

#include <cblas.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tstl::test {

// 1 (sequential), 2, and counts that do not divide the usual sizes evenly.
inline constexpr int kThreadCounts[] = {1, 2, 3, 7};

// Calls fn() with OpenMP and OpenBLAS set to `threads` threads (as `train.threads` does) and
// restores the previous counts afterwards.
template <class Fn>
auto with_threads(int threads, Fn&& fn) {
  const int omp_before = omp_get_max_threads(), blas_before = openblas_get_num_threads();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  struct Restore {
    int omp, blas;
    ~Restore() {
      omp_set_num_threads(omp);
      openblas_set_num_threads(blas);
    }
  } restore{omp_before, blas_before};
  return fn();
}

// The raw bytes of a CPU tensor, for bit-for-bit comparisons that also tell NaN payloads and
// signed zeros apart (== on floats would not).
inline std::string tensor_bytes(const Tensor& t) {
  const Tensor host = t.device() == Device::CPU ? t : t.to(Device::CPU);
  return std::string(static_cast<const char*>(host.raw()), host.nbytes());
}

}  // namespace tstl::test
