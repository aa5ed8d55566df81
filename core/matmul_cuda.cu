// CUDA gemm through cuBLAS: C_i (M, N) = op(A_i) (M, K) op(B_i) (K, N), all row-major, batched
// with strides (stride 0 for a shared operand). cuBLAS is column-major, so the row-major product
// is computed as its transpose: C^T (N, M) = op(B)^T op(A)^T, i.e. the operands are swapped.
// f32: fp32 inputs and compute (CUBLAS_COMPUTE_32F, no TF32); bf16: bf16 inputs and output with
// fp32 accumulation; f64: fp64. A shared C (the gradient of a shared weight) is the sum over
// the batch, accumulated with beta = 1 in a fixed order (into an fp32 scratch C for bf16, so the
// sum is not rounded to bf16 at every batch entry). C is overwritten.
#include <climits>

#include "core/cuda_context.h"
#include "core/kernels.h"

namespace tstl::kernels {

namespace {

struct GemmTypes {
  cudaDataType_t ab;  // A and B
  cudaDataType_t c;
  cublasComputeType_t compute;
};

GemmTypes gemm_types(DType dtype) {
  switch (dtype) {
    case DType::F32: return {CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F};
    case DType::BF16: return {CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F};
    case DType::F64: return {CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F};
    default: TSTL_FAIL("gemm (CUDA): expected dtype f32, bf16 or f64, got ", dtype_name(dtype));
  }
}

// One row-major strided-batched product; lda/ldb are the row lengths of A and B as stored.
struct RowMajorGemm {
  GemmTypes types;
  bool transpose_a = false, transpose_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t stride_c = 0;
  bool accumulate = false;  // beta = 1 (C += ...) instead of 0
};

int to_int(int64_t v, const char* what) {
  TSTL_CHECK(v >= 0 && v <= INT_MAX, "gemm (CUDA): ", what, " = ", v, " exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

void run(const RowMajorGemm& g) {
  const float alpha32 = 1.0f, beta32 = g.accumulate ? 1.0f : 0.0f;
  const double alpha64 = 1.0, beta64 = g.accumulate ? 1.0 : 0.0;
  const bool f64 = g.types.compute == CUBLAS_COMPUTE_64F;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  // Column-major view: C^T (n, m) = op(B)^T (n, k) op(A)^T (k, m); ldc = n.
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cuda::cublas_handle(), g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      to_int(g.n, "n"), to_int(g.m, "m"), to_int(g.k, "k"), alpha, g.b, g.types.ab, to_int(g.ldb, "ldb"),
      g.stride_b, g.a, g.types.ab, to_int(g.lda, "lda"), g.stride_a, beta, g.c, g.types.c, to_int(g.n, "ldc"),
      g.stride_c, to_int(g.batch, "batch"), g.types.compute, CUBLAS_GEMM_DEFAULT));
}

__global__ void f32_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = float_to_bf16(in[i]);
}

}  // namespace

void gemm_cuda(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c) {
  cuda::check_on_cuda(a, "gemm", "A");
  cuda::check_on_cuda(b, "gemm", "B");
  cuda::check_on_cuda(c, "gemm", "C");
  TSTL_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype(), "gemm (CUDA): dtypes differ: ", dtype_name(a.dtype()),
             ", ", dtype_name(b.dtype()), ", ", dtype_name(c.dtype()));
  TSTL_CHECK(!args.accumulate, "gemm (CUDA): accumulating into C (GemmArgs::accumulate) is CPU-only");
  const int64_t batch = args.batch, m = args.m, n = args.n, k = args.k;
  TSTL_CHECK(a.numel() == (args.a_shared ? 1 : batch) * m * k && b.numel() == (args.b_shared ? 1 : batch) * k * n &&
                 c.numel() == (args.c_shared ? 1 : batch) * m * n,
             "gemm (CUDA): operand sizes ", a.numel(), ", ", b.numel(), ", ", c.numel(), " do not fit batch ", batch,
             " of (", m, ", ", k, ") x (", k, ", ", n, ")");
  if (c.numel() == 0) return;
  if (k == 0 || batch == 0) {  // an empty contraction (or an empty sum over the batch) is zero
    cuda::memset_zero(c.raw(), c.nbytes());
    return;
  }
  RowMajorGemm g;
  g.types = gemm_types(a.dtype());
  g.transpose_a = args.transpose_a;
  g.transpose_b = args.transpose_b;
  g.m = m, g.n = n, g.k = k, g.batch = batch;
  g.a = a.raw(), g.lda = args.transpose_a ? m : k, g.stride_a = args.a_shared ? 0 : m * k;
  g.b = b.raw(), g.ldb = args.transpose_b ? k : n, g.stride_b = args.b_shared ? 0 : k * n;
  g.c = c.raw(), g.stride_c = m * n;

  if (!args.c_shared) {
    if (args.b_shared && !args.a_shared && !args.transpose_a) {  // (batch*M, K) x (K, N) in one product
      g.m = batch * m;
      g.batch = 1;
    }
    run(g);
    return;
  }

  // Shared C = sum_i op(A_i) op(B_i).
  if (!args.a_shared && !args.b_shared && args.transpose_a && !args.transpose_b) {
    // A_i (K, M) and B_i (K, N) stacked over the batch are (batch*K, M) and (batch*K, N): the sum
    // is one product with the contraction running over batch*K.
    g.k = batch * k;
    g.batch = 1;
    g.stride_a = g.stride_b = g.stride_c = 0;
    if (c.dtype() != DType::BF16) {
      run(g);
      return;
    }
  }
  const bool bf16_out = c.dtype() == DType::BF16;
  cuda::DeviceBuffer scratch(bf16_out ? static_cast<size_t>(m * n) * sizeof(float) : 0);  // (M, N) f32
  if (bf16_out) {
    g.types.c = CUDA_R_32F;  // bf16 inputs, f32 output, fp32 compute
    g.c = scratch.as<float>();
  }
  const size_t elem = dtype_size(a.dtype());
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  const int64_t entries = g.batch, stride_a = g.stride_a, stride_b = g.stride_b;
  g.batch = 1;
  g.stride_a = g.stride_b = g.stride_c = 0;
  for (int64_t i = 0; i < entries; ++i) {  // a fixed order: the sum is deterministic
    g.a = a0 + static_cast<size_t>(i * stride_a) * elem;
    g.b = b0 + static_cast<size_t>(i * stride_b) * elem;
    g.accumulate = i > 0;
    run(g);
  }
  if (bf16_out) {
    const int64_t count = m * n;
    f32_to_bf16_kernel<<<cuda::grid_for(count), cuda::kBlock, 0, cuda::stream()>>>(scratch.as<float>(),
                                                                                   static_cast<bf16*>(c.raw()), count);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tstl::kernels
