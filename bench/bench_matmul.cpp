// tstl::matmul against the OpenBLAS sgemm it calls, measured in the same run on the same data:
// the op should add no copies, so its GFLOP/s should equal OpenBLAS's.
//   build/bench_matmul [size=1024] [repeats=20]
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"

using tstl::bench::median;
using tstl::bench::seconds;

int main(int argc, char** argv) {
  using namespace tstl;
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 20;
  Generator gen{1, 0};
  const Tensor a = randn({n, n}, gen), b = randn({n, n}, gen);
  Tensor c = Tensor::empty({n, n});
  NoGradGuard no_grad;
  const double flops = 2.0 * n * n * n;
  auto blas = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n, b.data<float>(), n,
                0.0f, c.data<float>(), n);
  };
  auto op = [&] { c = matmul(a, b); };
  auto op_bt = [&] { c = matmul(a, b, false, true); };
  blas(), op(), op_bt();  // warm-up: thread pool, page faults
  // Interleaved so that any load on the machine affects the three alike.
  std::vector<double> tb, to, tbt;
  for (int i = 0; i < repeats; ++i) {
    tb.push_back(seconds(blas));
    to.push_back(seconds(op));
    tbt.push_back(seconds(op_bt));
  }
  const double t_blas = median(tb), t_tstl = median(to), t_tstl_bt = median(tbt);
  std::printf("matmul %lldx%lldx%lld f32, median of %d, %d threads, %s\n", static_cast<long long>(n),
              static_cast<long long>(n), static_cast<long long>(n), repeats, openblas_get_num_threads(),
              tstl::bench::clock_name());
  std::printf("  openblas sgemm        %8.1f GFLOP/s\n", flops / t_blas * 1e-9);
  std::printf("  tstl::matmul          %8.1f GFLOP/s  (%.3f x openblas)\n", flops / t_tstl * 1e-9, t_blas / t_tstl);
  std::printf("  tstl::matmul (B^T)    %8.1f GFLOP/s  (%.3f x openblas)\n", flops / t_tstl_bt * 1e-9,
              t_blas / t_tstl_bt);
  return 0;
}
