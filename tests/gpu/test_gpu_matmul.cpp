// The cuBLASLt gemm (core/matmul_cuda.cu) against the CPU gemm, kernel by kernel: every
// transpose, batch layout (strided, shared A, shared B folded into rows, shared B under a
// transposed A, shared C summed over the batch both ways) and the three epilogue kernels
// (gemm_bias, gemm_bias_gelu, gemm_bias_grad), on odd shapes, in f32, bf16 and f64; the TF32
// switch; repeat calls bitwise equal and served by the caching allocator; the stream.
// For bf16 the inputs are rounded to bf16 once and the CPU runs f32 on exactly those values.
// Error measure: gpu_compare.h (max abs difference / max |reference|). Tolerances:
//   f32  1e-5   fp32 products on both sides; only the summation order differs
//   f64  1e-12
//   bf16 8e-3   the output is rounded to bf16 once (2^-9 relative to the element), twice for
//               gelu(h) of a rounded h; accumulation is fp32 on both sides
//   TF32 3e-3   (only when switched on) inputs rounded to 10 mantissa bits, 2^-11 relative each
// Skipped where no CUDA device is present; builds in the CPU-only configuration too.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/kernels.h"
#include "gpu/gpu_compare.h"

#ifdef TSTL_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace tstl {
namespace {

using gpu_test::expect_close;

#define SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

double matmul_tolerance(DType dtype) {
  switch (dtype) {
    case DType::BF16:
      return 8e-3;
    case DType::F64:
      return 1e-12;
    default:
      return 1e-5;
  }
}

// The CPU computes in f64 for f64 and in f32 otherwise.
DType reference_dtype(DType dtype) {
  return dtype == DType::F64 ? DType::F64 : DType::F32;
}

// A deterministic (n) CPU tensor in [-1, 1], already rounded to `dtype` (the values both sides use),
// stored in the reference dtype.
Tensor inputs(int64_t n, double phase, DType dtype) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = std::sin(0.61 * static_cast<double>(i) + phase);
  return Tensor::from_vector(v, {n}).to(dtype).to(reference_dtype(dtype));
}

Tensor on_gpu(const Tensor& cpu, DType dtype) {
  return cpu.to(dtype).to(Device::CUDA);
}

struct GemmCase {
  const char* name;
  kernels::GemmArgs args;
};

kernels::GemmArgs gemm_args(bool ta, bool tb, int64_t batch, int64_t m, int64_t n, int64_t k, bool a_shared = false,
                            bool b_shared = false, bool c_shared = false) {
  kernels::GemmArgs g;
  g.transpose_a = ta, g.transpose_b = tb, g.batch = batch, g.m = m, g.n = n, g.k = k;
  g.a_shared = a_shared, g.b_shared = b_shared, g.c_shared = c_shared;
  return g;
}

std::vector<GemmCase> gemm_cases() {
  return {
      {"nn", gemm_args(false, false, 1, 37, 67, 129)},
      {"tn", gemm_args(true, false, 1, 37, 67, 129)},
      {"nt", gemm_args(false, true, 1, 37, 67, 129)},
      {"tt", gemm_args(true, true, 1, 37, 67, 129)},
      {"batched_nn", gemm_args(false, false, 3, 5, 7, 9)},
      {"batched_tt", gemm_args(true, true, 3, 5, 7, 9)},
      {"shared_a", gemm_args(false, true, 3, 5, 7, 9, true)},
      {"shared_b_folded", gemm_args(false, false, 3, 5, 7, 9, false, true)},
      {"shared_b_transposed_a", gemm_args(true, false, 3, 5, 7, 9, false, true)},
      {"shared_c_k_folded", gemm_args(true, false, 3, 5, 7, 9, false, false, true)},
      {"shared_c_looped", gemm_args(false, true, 3, 5, 7, 9, false, false, true)},  // entries at odd offsets
      {"shared_c_shared_b", gemm_args(true, true, 4, 3, 5, 7, false, true, true)},
      {"empty_k", gemm_args(false, false, 2, 3, 5, 0)},
  };
}

int64_t a_numel(const kernels::GemmArgs& g) {
  return (g.a_shared ? 1 : g.batch) * g.m * g.k;
}
int64_t b_numel(const kernels::GemmArgs& g) {
  return (g.b_shared ? 1 : g.batch) * g.k * g.n;
}
int64_t c_numel(const kernels::GemmArgs& g) {
  return (g.c_shared ? 1 : g.batch) * g.m * g.n;
}

// Runs every gemm case on the GPU into `outputs` (allocated on the first call, reused after).
void run_gemm_cases(DType dtype, const std::vector<Tensor>& a, const std::vector<Tensor>& b,
                    std::vector<Tensor>& outputs) {
  const std::vector<GemmCase> cases = gemm_cases();
  if (outputs.empty())
    for (const GemmCase& c : cases) outputs.push_back(Tensor::empty({c_numel(c.args)}, dtype, Device::CUDA));
  for (size_t i = 0; i < cases.size(); ++i) TSTL_ON_DEVICE(a[i], gemm, cases[i].args, a[i], b[i], outputs[i]);
}

class GpuMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(GpuMatmul, GemmMatchesTheCpuForEveryLayout) {
  SKIP_WITHOUT_CUDA();
  const DType dtype = GetParam();
  std::vector<Tensor> a, b, gpu_a, gpu_b, gpu_c;
  for (const GemmCase& c : gemm_cases()) {
    a.push_back(inputs(a_numel(c.args), 0.3, dtype));
    b.push_back(inputs(b_numel(c.args), 1.1, dtype));
    gpu_a.push_back(on_gpu(a.back(), dtype));
    gpu_b.push_back(on_gpu(b.back(), dtype));
  }
  run_gemm_cases(dtype, gpu_a, gpu_b, gpu_c);
  const std::vector<GemmCase> cases = gemm_cases();
  for (size_t i = 0; i < cases.size(); ++i) {
    Tensor want = Tensor::empty({c_numel(cases[i].args)}, reference_dtype(dtype));
    if (cases[i].args.k == 0) {
      want = Tensor::zeros({c_numel(cases[i].args)}, reference_dtype(dtype));
    } else {
      TSTL_ON_DEVICE(a[i], gemm, cases[i].args, a[i], b[i], want);
    }
    expect_close(gpu_c[i], want, matmul_tolerance(dtype), std::string("gemm ") + cases[i].name);
  }
}

TEST_P(GpuMatmul, RepeatCallsAreBitwiseEqualAndAllocateNothing) {
  SKIP_WITHOUT_CUDA();
  const DType dtype = GetParam();
  std::vector<Tensor> gpu_a, gpu_b, first, second;
  for (const GemmCase& c : gemm_cases()) {
    gpu_a.push_back(on_gpu(inputs(a_numel(c.args), 0.5, dtype), dtype));
    gpu_b.push_back(on_gpu(inputs(b_numel(c.args), 0.9, dtype), dtype));
  }
  run_gemm_cases(dtype, gpu_a, gpu_b, first);
  run_gemm_cases(dtype, gpu_a, gpu_b, second);  // workspaces and scratch now come from the cache
  const uint64_t before = cuda::allocator_stats().device_allocations;
  run_gemm_cases(dtype, gpu_a, gpu_b, second);
  EXPECT_EQ(cuda::allocator_stats().device_allocations, before) << "a repeat call reached cudaMalloc";
  for (size_t i = 0; i < first.size(); ++i) {
    const Tensor x = first[i].to(Device::CPU), y = second[i].to(Device::CPU);
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << gemm_cases()[i].name << ": not bitwise repeatable";
  }
}

// The three epilogue kernels against their CPU twins: x (R, in), W (out, in), bias (out), and the
// bias gradient of dW = dy^T x with dy (R, out).
TEST_P(GpuMatmul, EpiloguesMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  const DType dtype = GetParam();
  const DType ref = reference_dtype(dtype);
  const double tol = matmul_tolerance(dtype);
  struct Sizes {
    int64_t rows, in, out;
  };
  for (const Sizes& sizes : {Sizes{37, 129, 67}, Sizes{301, 45, 19}}) {
    const int64_t rows = sizes.rows, in = sizes.in, out = sizes.out;
    const std::string shape =
        " R=" + std::to_string(rows) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
    const Tensor x = inputs(rows * in, 0.2, dtype).reshape({rows, in});
    const Tensor w = inputs(out * in, 0.8, dtype).reshape({out, in});
    const Tensor bias = inputs(out, 2.0, dtype);
    const Tensor dy = inputs(rows * out, 1.4, dtype).reshape({rows, out});
    kernels::GemmArgs fwd;
    fwd.m = rows, fwd.n = out, fwd.k = in, fwd.transpose_b = true;

    Tensor y_cpu = Tensor::empty({rows, out}, ref), y_gpu = Tensor::empty({rows, out}, dtype, Device::CUDA);
    kernels::gemm_bias_cpu(fwd, x, w, bias, y_cpu);
    TSTL_ON_DEVICE(y_gpu, gemm_bias, fwd, on_gpu(x, dtype), on_gpu(w, dtype), on_gpu(bias, dtype), y_gpu);
    expect_close(y_gpu, y_cpu, tol, "gemm_bias" + shape);

    Tensor h_cpu = Tensor::empty({rows, out}, ref), a_cpu = Tensor::empty({rows, out}, ref);
    Tensor h_gpu = Tensor::empty({rows, out}, dtype, Device::CUDA),
           a_gpu = Tensor::empty({rows, out}, dtype, Device::CUDA);
    kernels::gemm_bias_gelu_cpu(fwd, x, w, bias, h_cpu, a_cpu);
    TSTL_ON_DEVICE(h_gpu, gemm_bias_gelu, fwd, on_gpu(x, dtype), on_gpu(w, dtype), on_gpu(bias, dtype), h_gpu, a_gpu);
    expect_close(h_gpu, h_cpu, tol, "gemm_bias_gelu h" + shape);
    expect_close(a_gpu, a_cpu, 2 * tol, "gemm_bias_gelu gelu(h)" + shape);

    kernels::GemmArgs grad;
    grad.m = out, grad.n = in, grad.k = rows, grad.transpose_a = true;
    Tensor dw_cpu = Tensor::empty({out, in}, ref), db_cpu = Tensor::empty({out}, ref);
    Tensor dw_gpu = Tensor::empty({out, in}, dtype, Device::CUDA), db_gpu = Tensor::empty({out}, dtype, Device::CUDA);
    kernels::gemm_bias_grad_cpu(grad, dy, x, dw_cpu, db_cpu);
    TSTL_ON_DEVICE(dw_gpu, gemm_bias_grad, grad, on_gpu(dy, dtype), on_gpu(x, dtype), dw_gpu, db_gpu);
    expect_close(dw_gpu, dw_cpu, tol, "gemm_bias_grad dW" + shape);
    expect_close(db_gpu, db_cpu, tol, "gemm_bias_grad db" + shape);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuMatmul, ::testing::Values(DType::F32, DType::BF16, DType::F64),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(dtype_name(info.param));
                         });

TEST(GpuMatmulTf32, OffByDefaultAndWithinTf32ToleranceWhenOn) {
  SKIP_WITHOUT_CUDA();
  const char* env = std::getenv("TSTL_ALLOW_TF32");
  if (!env || std::string(env) == "0") {
    EXPECT_FALSE(cuda::tf32_allowed()) << "TF32 must be off by default";
  }
  const bool was = cuda::tf32_allowed();
  const kernels::GemmArgs g = gemm_args(false, true, 1, 64, 96, 256);
  const Tensor a = inputs(g.m * g.k, 0.4, DType::F32), b = inputs(g.n * g.k, 1.7, DType::F32);
  Tensor want = Tensor::empty({g.m * g.n}), got = Tensor::empty({g.m * g.n}, DType::F32, Device::CUDA);
  TSTL_ON_DEVICE(a, gemm, g, a, b, want);
  cuda::set_tf32_allowed(true);
  TSTL_ON_DEVICE(got, gemm, g, on_gpu(a, DType::F32), on_gpu(b, DType::F32), got);
  cuda::set_tf32_allowed(was);
  expect_close(got, want, 3e-3, "f32 gemm with TF32 allowed");
}

TEST(GpuStream, WorkIsQueuedOnANonBlockingStream) {
  SKIP_WITHOUT_CUDA();
#ifdef TSTL_WITH_CUDA
  const cudaStream_t s = cuda::stream();
  ASSERT_NE(s, nullptr) << "the legacy default stream";
  unsigned int flags = 0;
  ASSERT_EQ(cudaStreamGetFlags(s, &flags), cudaSuccess);
  EXPECT_EQ(flags & cudaStreamNonBlocking, static_cast<unsigned int>(cudaStreamNonBlocking));
  EXPECT_EQ(cuda::stream(), s) << "one stream per device, created once";
#endif
  // A product queued on the stream, read back at once: the copy to the host waits for it.
  const kernels::GemmArgs g = gemm_args(false, false, 1, 256, 256, 512);
  const Tensor a = inputs(g.m * g.k, 0.1, DType::F32), b = inputs(g.k * g.n, 0.6, DType::F32);
  Tensor want = Tensor::empty({g.m * g.n}), got = Tensor::empty({g.m * g.n}, DType::F32, Device::CUDA);
  TSTL_ON_DEVICE(a, gemm, g, a, b, want);
  TSTL_ON_DEVICE(got, gemm, g, on_gpu(a, DType::F32), on_gpu(b, DType::F32), got);
  expect_close(got, want, 1e-5, "gemm read back right after it was queued");
}

}  // namespace
}  // namespace tstl
