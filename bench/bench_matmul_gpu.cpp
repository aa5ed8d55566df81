// tstl::matmul on CUDA (core/matmul_cuda.cu) against cuBLAS's own best at the same shapes, measured
// in the same run on the same data: the peer calls cublasLtMatmul directly, asks cuBLASLt's
// heuristic for up to 8 algorithms, times each and keeps the fastest (its own best, with a 64 MiB
// workspace). Both run in bf16 (f32 accumulation, bf16 out) and in f32 (CUBLAS_COMPUTE_32F: full
// fp32, no TF32, the math tstl's f32 matmul promises). Ratio = tstl TFLOP/s / cuBLAS TFLOP/s.
//
// Shapes: the GEMMs of one micro-batch of the 350M config (configs/350m.cfg: 8 x 512 = 4096
// tokens, hidden 1024, FFN 4096, vocabulary 50304) in the layouts training uses (forward x W^T,
// backward dy W and dy^T x), and a square 8192^3.
//
//   build/bench_matmul_gpu [repeats=20]
// Exits 0 with a message where there is no CUDA device (as bench_attention_gpu).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/autograd.h"
#include "core/cuda_backend.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

#ifdef TSTL_WITH_CUDA
#include "core/cuda_check.h"

namespace {

using tstl::DType;
using tstl::Device;
using tstl::Tensor;

// C (M, N) = op(A) op(B), row-major, as tstl::matmul(a, b, transpose_a, transpose_b) takes it:
// a is (M, K), or (K, M) when transpose_a; b is (K, N), or (N, K) when transpose_b.
struct GemmShape {
  const char* name;
  int64_t m, n, k;
  bool transpose_a, transpose_b;
};
const GemmShape kShapes[] = {
    {"qkv x W^T", 4096, 3072, 1024, false, true},    {"attn-out x W^T", 4096, 1024, 1024, false, true},
    {"fc1 x W^T", 4096, 4096, 1024, false, true},    {"fc2 x W^T", 4096, 1024, 4096, false, true},
    {"lm-head x W^T", 4096, 50304, 1024, false, true}, {"fc2 dx = dy W", 4096, 4096, 1024, false, false},
    {"fc1 dW = dy^T x", 4096, 1024, 4096, true, false}, {"square", 8192, 8192, 8192, false, false},
};

constexpr size_t kWorkspaceBytes = 64ull << 20;

// The same product through cublasLtMatmul. cuBLASLt is column-major: a row-major (r, c) buffer is
// the column-major (c x r) matrix, so C^T (N x M) = op(B)^T op(A)^T is computed with the b buffer
// as Lt's first operand and the a buffer as its second.
class LtPeer {
 public:
  LtPeer(const GemmShape& s, DType dtype, const Tensor& a, const Tensor& b, Tensor& c) : a_(a), b_(b), c_(c) {
    const cudaDataType_t type = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasLtCreate(&handle_));
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_first = s.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_second = s.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second));
    const uint64_t first_rows = static_cast<uint64_t>(s.transpose_b ? s.k : s.n);
    const uint64_t first_cols = static_cast<uint64_t>(s.transpose_b ? s.n : s.k);
    const uint64_t second_rows = static_cast<uint64_t>(s.transpose_a ? s.m : s.k);
    const uint64_t second_cols = static_cast<uint64_t>(s.transpose_a ? s.k : s.m);
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&first_, type, first_rows, first_cols, static_cast<int64_t>(first_rows)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&second_, type, second_rows, second_cols, static_cast<int64_t>(second_rows)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&out_, type, static_cast<uint64_t>(s.n), static_cast<uint64_t>(s.m), s.n));
    workspace_ = tstl::cuda::allocate(kWorkspaceBytes);
    cublasLtMatmulPreference_t preference = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const uint64_t workspace_bytes = kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes, sizeof workspace_bytes));
    cublasLtMatmulHeuristicResult_t results[8] = {};
    int returned = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, desc_, first_, second_, out_, out_, preference, 8, results,
                                                &returned));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
    for (int i = 0; i < returned; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) candidates_.push_back(results[i].algo);
    TSTL_CHECK(!candidates_.empty(), "cuBLASLt offers no algorithm for ", s.name);
  }
  ~LtPeer() {
    tstl::cuda::release(workspace_, kWorkspaceBytes);
    cublasLtMatrixLayoutDestroy(out_);
    cublasLtMatrixLayoutDestroy(second_);
    cublasLtMatrixLayoutDestroy(first_);
    cublasLtMatmulDescDestroy(desc_);
    cublasLtDestroy(handle_);
  }
  LtPeer(const LtPeer&) = delete;
  LtPeer& operator=(const LtPeer&) = delete;

  // Times every candidate (median of `repeats` calls of `calls` each) and keeps the fastest.
  void choose_fastest(int repeats, int calls) {
    double best = 1e30;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      chosen_ = i;
      const double t = time(repeats, calls);
      if (t < best) {
        best = t;
        fastest_ = i;
      }
    }
    chosen_ = fastest_;
  }
  void run() const {
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(handle_, desc_, &alpha, b_.raw(), first_, a_.raw(), second_, &beta, c_.raw(), out_,
                                c_.raw(), out_, &candidates_[chosen_], workspace_, kWorkspaceBytes, 0));
  }
  double time(int repeats, int calls) const {
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r)
      t.push_back(tstl::bench::seconds([&] {
                    for (int c = 0; c < calls; ++c) run();
                    tstl::cuda::synchronize();
                  }) /
                  calls);
    return tstl::bench::median(t);
  }
 private:
  const Tensor& a_;
  const Tensor& b_;
  Tensor& c_;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t first_ = nullptr, second_ = nullptr, out_ = nullptr;
  void* workspace_ = nullptr;
  std::vector<cublasLtMatmulAlgo_t> candidates_;
  size_t chosen_ = 0, fastest_ = 0;
};

// Calls per timed sample: enough that launch latency does not count for the small shapes.
int calls_for(const GemmShape& s) {
  const double flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
  return std::max(1, static_cast<int>(2e12 / flops));
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 20;
  if (repeats < 1) {
    std::fprintf(stderr, "usage: bench_matmul_gpu [repeats >= 1]\n");
    return 2;
  }
  if (tstl::cuda::device_count() == 0) {
    std::printf("bench_matmul_gpu: no CUDA device present, nothing measured\n");
    return 0;
  }
  try {
    std::printf("matmul on %s, median of %d samples; cuBLAS = cublasLtMatmul, fastest of its heuristic's algorithms\n",
                tstl::cuda::device_name().c_str(), repeats);
    std::printf("%-16s %6s %6s %6s %4s | %10s %10s %6s\n", "shape", "M", "N", "K", "type", "tstl TF/s", "cuBLAS TF/s",
                "ratio");
    tstl::NoGradGuard no_grad;
    tstl::Generator gen{3, 0};
    for (DType dtype : {DType::BF16, DType::F32}) {
      for (const GemmShape& s : kShapes) {
        const tstl::Shape a_shape = s.transpose_a ? tstl::Shape{s.k, s.m} : tstl::Shape{s.m, s.k};
        const tstl::Shape b_shape = s.transpose_b ? tstl::Shape{s.n, s.k} : tstl::Shape{s.k, s.n};
        const Tensor a = tstl::randn(a_shape, gen, DType::F32, Device::CUDA).to(dtype);
        const Tensor b = tstl::randn(b_shape, gen, DType::F32, Device::CUDA).to(dtype);
        Tensor c = Tensor::empty({s.m, s.n}, dtype, Device::CUDA), tstl_out;
        LtPeer peer(s, dtype, a, b, c);
        const int calls = calls_for(s);
        const auto tstl_op = [&] {
          for (int i = 0; i < calls; ++i) tstl_out = tstl::matmul(a, b, s.transpose_a, s.transpose_b);
          tstl::cuda::synchronize();
        };
        tstl_op(), peer.run();  // warm-up: module loading, cuBLAS's and the allocator's caches
        peer.choose_fastest(3, calls);
        // Interleaved, so that clocks and other load affect both alike.
        std::vector<double> t_tstl, t_peer;
        for (int r = 0; r < repeats; ++r) {
          t_tstl.push_back(tstl::bench::seconds(tstl_op) / calls);
          t_peer.push_back(peer.time(1, calls));
        }
        const double flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
        const double tstl_tflops = flops / tstl::bench::median(t_tstl) * 1e-12;
        const double peer_tflops = flops / tstl::bench::median(t_peer) * 1e-12;
        std::printf("%-16s %6lld %6lld %6lld %4s | %10.1f %10.1f %6.2f\n", s.name, static_cast<long long>(s.m),
                    static_cast<long long>(s.n), static_cast<long long>(s.k), tstl::dtype_name(dtype), tstl_tflops,
                    peer_tflops, tstl_tflops / peer_tflops);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_matmul_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else  // built without the CUDA backend

int main() {
  std::printf("bench_matmul_gpu: built without CUDA, nothing measured\n");
  return 0;
}

#endif
