// CUDA gemm through cuBLASLt: C_i (M, N) = op(A_i) (M, K) op(B_i) (K, N), all row-major, batched
// with strides (stride 0 for a shared operand). cuBLASLt is column-major, so the row-major product
// is computed as its transpose: C^T (N, M) = op(B)^T op(A)^T, i.e. the operands are swapped.
//
// Types: f32 in and out with fp32 compute (CUBLAS_COMPUTE_32F; TF32 tensor cores only when
// cuda::tf32_allowed(), off by default); bf16 in and out with fp32 accumulation; f64 in fp64.
// A shared C (the gradient of a shared weight) is the sum over the batch, accumulated with
// beta = 1 in a fixed order (into an fp32 scratch C for bf16, so the sum is not rounded to bf16 at
// every batch entry). C is overwritten.
//
// Epilogues (the gemm_bias* kernels, core/kernels.h): the bias is CUBLASLT_EPILOGUE_BIAS (a vector
// along the rows of the column-major D, i.e. along N of the row-major C); the bias gradient of
// dW = dy^T x is CUBLASLT_EPILOGUE_BGRADB (the sum over K of cuBLASLt's B, which is dy). GELU is
// not fused: tstl's GELU is the exact erf form (the CPU reference, core/elementwise.h), and
// cuBLASLt does not document which GELU its epilogue computes, so gemm_bias_gelu runs the BIAS
// epilogue and then the exact GELU as one elementwise pass. When cuBLASLt has no algorithm for an
// epilogue (f64, some layouts), the same result comes from the plain product and the separate
// kernels (binary add, bias_gelu_forward, sum_rows).
//
// Algorithms: cublasLtMatmulAlgoGetHeuristic's first choice, cached per problem
// (core/gemm_plan.h), with up to kMaxWorkspace bytes of workspace; the workspace an algorithm
// needs is taken from the caching allocator for each call (a block reused on this stream, no
// cudaMalloc in steady state). Everything runs on cuda::stream().
#include <climits>
#include <cstdint>

#include "core/cuda_context.h"
#include "core/gemm_plan.h"
#include "core/kernels.h"

namespace tstl::kernels {

namespace {

constexpr uint64_t kMaxWorkspace = 32ull << 20;  // bytes; cuBLAS's recommendation for Hopper
constexpr size_t kPlanCapacity = 4096;

struct GemmTypes {
  cudaDataType_t ab;  // A and B
  cudaDataType_t c;
  cublasComputeType_t compute;
  cudaDataType_t scale;  // alpha and beta
};

GemmTypes gemm_types(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return {CUDA_R_32F, CUDA_R_32F, cuda::tf32_allowed() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
              CUDA_R_32F};
    case DType::BF16:
      return {CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case DType::F64:
      return {CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F};
    default:
      TSTL_FAIL("gemm (CUDA): expected dtype f32, bf16 or f64, got ", dtype_name(dtype));
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
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* vec = nullptr;  // the bias (EPILOGUE_BIAS, N) or the bias gradient (EPILOGUE_BGRADB, M)
};

struct LtPlan {
  bool found = false;  // false: cuBLASLt has no algorithm for this problem
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;  // bytes the algorithm needs
};

GemmPlanCache<LtPlan>& plans() {
  static GemmPlanCache<LtPlan>* cache = new GemmPlanCache<LtPlan>(kPlanCapacity);  // never destroyed
  return *cache;
}

int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// cuBLASLt descriptors, destroyed with the call.
struct LtLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  LtLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
    CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
    if (batch > 1) {
      TSTL_CHECK(batch <= INT32_MAX, "gemm (CUDA): batch ", batch, " exceeds cuBLASLt's int32 range");
      const int32_t count = static_cast<int32_t>(batch);
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                    sizeof stride));
    }
  }
  ~LtLayout() { cublasLtMatrixLayoutDestroy(layout); }
  LtLayout(const LtLayout&) = delete;
  LtLayout& operator=(const LtLayout&) = delete;
};

struct LtDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  LtDesc(const GemmTypes& types, cublasOperation_t op_a, cublasOperation_t op_b, cublasLtEpilogue_t epilogue,
         void* vec) {
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, types.compute, types.scale));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vec, sizeof vec));
    }
  }
  ~LtDesc() { cublasLtMatmulDescDestroy(desc); }
  LtDesc(const LtDesc&) = delete;
  LtDesc& operator=(const LtDesc&) = delete;
};

// The heuristic's first algorithm for the problem the descriptors describe, or found = false.
LtPlan choose_algorithm(const LtDesc& desc, const LtLayout& a, const LtLayout& b, const LtLayout& c,
                        const GemmPlanKey& key) {
  cublasLtMatmulPreference_t preference = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace = kMaxWorkspace;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                    sizeof workspace));
  const uint32_t aligns[4] = {key.align_a, key.align_b, key.align_c, key.align_c};  // D is C
  const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, align_attrs[i], &aligns[i], sizeof aligns[i]));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(cuda::cublaslt_handle(), desc.desc, a.layout, b.layout,
                                                               c.layout, c.layout, preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  LtPlan plan;
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && returned == 0)) return plan;
  CUBLAS_CHECK(status);
  CUBLAS_CHECK(result.state);
  plan.found = true;
  plan.algo = result.algo;
  plan.workspace = result.workspaceSize;
  return plan;
}

int64_t checked_ld(int64_t v, const char* what) {
  TSTL_CHECK(v >= 0 && v <= INT32_MAX, "gemm (CUDA): ", what, " = ", v, " exceeds cuBLASLt's range");
  return v;
}

// Runs g on cuda::stream(). Returns false, having done nothing, when cuBLASLt has no algorithm
// (callers with an epilogue then fall back; a plain product without one is an error).
bool run(const RowMajorGemm& g) {
  // Column-major view: D (n, m) = op(A') (n, k) op(B') (k, m) with A' = the row-major B and
  // B' = the row-major A, each read as column-major with its row length as leading dimension.
  const cublasOperation_t op_a = g.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t m = g.n, n = g.m, k = g.k;  // cuBLASLt's problem
  const LtLayout a(g.types.ab, g.transpose_b ? k : m, g.transpose_b ? m : k, checked_ld(g.ldb, "ldb"), g.batch,
                   g.stride_b);
  const LtLayout b(g.types.ab, g.transpose_a ? n : k, g.transpose_a ? k : n, checked_ld(g.lda, "lda"), g.batch,
                   g.stride_a);
  const LtLayout c(g.types.c, m, n, checked_ld(m, "ldc"), g.batch, g.stride_c);
  const LtDesc desc(g.types, op_a, op_b, g.epilogue, g.vec);

  GemmPlanKey key;
  key.device = current_device();
  key.ab_type = g.types.ab, key.c_type = g.types.c, key.compute_type = g.types.compute;
  key.epilogue = g.epilogue;
  key.transpose_a = op_a == CUBLAS_OP_T, key.transpose_b = op_b == CUBLAS_OP_T;
  key.m = m, key.n = n, key.k = k, key.batch = g.batch;
  key.lda = g.ldb, key.ldb = g.lda, key.ldc = m;
  key.stride_a = g.stride_b, key.stride_b = g.stride_a, key.stride_c = g.stride_c;
  key.align_a = gemm_alignment(g.b), key.align_b = gemm_alignment(g.a), key.align_c = gemm_alignment(g.c);
  key.align_bias = gemm_alignment(g.vec);
  const LtPlan plan = plans().get(key, [&] { return choose_algorithm(desc, a, b, c, key); });
  if (!plan.found) return false;

  const float alpha32 = 1.0f, beta32 = g.accumulate ? 1.0f : 0.0f;
  const double alpha64 = 1.0, beta64 = g.accumulate ? 1.0 : 0.0;
  const bool f64 = g.types.scale == CUDA_R_64F;
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  cuda::DeviceBuffer workspace(plan.workspace);  // released when the call is queued: reused on this stream only
  const cublasStatus_t status =
      cublasLtMatmul(cuda::cublaslt_handle(), desc.desc, alpha, g.b, a.layout, g.a, b.layout, beta, g.c, c.layout, g.c,
                     c.layout, &plan.algo, workspace.as<void>(), plan.workspace, cuda::stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return false;  // checked before anything is queued
  CUBLAS_CHECK(status);
  return true;
}

size_t type_bytes(cudaDataType_t type) {
  return type == CUDA_R_64F ? 8 : type == CUDA_R_32F ? 4 : 2;
}

// run(g), or, where cuBLASLt has no strided-batched algorithm (a stride-0 shared operand, say),
// one product per batch entry; a product it cannot do at all is an error.
void run_or_fail(const RowMajorGemm& g) {
  if (run(g)) return;
  TSTL_CHECK(g.batch > 1, "gemm (CUDA): cuBLASLt has no algorithm for the product (", g.m, ", ", g.k, ") x (", g.k,
             ", ", g.n, ") of element type ", static_cast<int>(g.types.ab));
  RowMajorGemm entry = g;
  entry.batch = 1;
  entry.stride_a = entry.stride_b = entry.stride_c = 0;
  const size_t ab = type_bytes(g.types.ab), c = type_bytes(g.types.c);
  for (int64_t i = 0; i < g.batch; ++i) {
    entry.a = static_cast<const char*>(g.a) + static_cast<size_t>(i * g.stride_a) * ab;
    entry.b = static_cast<const char*>(g.b) + static_cast<size_t>(i * g.stride_b) * ab;
    entry.c = static_cast<char*>(g.c) + static_cast<size_t>(i * g.stride_c) * c;
    run_or_fail(entry);
  }
}

__global__ void f32_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = float_to_bf16(in[i]);
}

// The one product of a gemm_bias* kernel: batch 1, C (M, N) not shared.
RowMajorGemm single_product(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c) {
  RowMajorGemm g;
  g.types = gemm_types(a.dtype());
  g.transpose_a = args.transpose_a;
  g.transpose_b = args.transpose_b;
  g.m = args.m, g.n = args.n, g.k = args.k;
  g.a = a.raw(), g.lda = args.transpose_a ? args.m : args.k;
  g.b = b.raw(), g.ldb = args.transpose_b ? args.k : args.n;
  g.c = c.raw();
  return g;
}

void check_cuda_operands(const Tensor& a, const Tensor& b, const Tensor& c, const char* kernel) {
  cuda::check_on_cuda(a, kernel, "A");
  cuda::check_on_cuda(b, kernel, "B");
  cuda::check_on_cuda(c, kernel, "C");
}

}  // namespace

void gemm_cuda(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c) {
  check_cuda_operands(a, b, c, "gemm");
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
      g.stride_a = g.stride_c = 0;
    }
    run_or_fail(g);
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
      run_or_fail(g);
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
    run_or_fail(g);
  }
  if (bf16_out) {
    const int64_t count = m * n;
    f32_to_bf16_kernel<<<cuda::grid_for(count), cuda::kBlock, 0, cuda::stream()>>>(scratch.as<float>(),
                                                                                   static_cast<bf16*>(c.raw()), count);
    CUDA_CHECK_LAUNCH();
  }
}

void gemm_bias_cuda(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  check_cuda_operands(a, b, c, "gemm_bias");
  cuda::check_on_cuda(bias, "gemm_bias", "bias");
  check_gemm_epilogue_args(args, a, b, c, bias, args.n, "gemm_bias (CUDA)");
  if (args.m > 0 && args.n > 0 && args.k > 0) {
    RowMajorGemm g = single_product(args, a, b, c);
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
    g.vec = const_cast<void*>(bias.raw());  // read only: cuBLASLt takes one pointer for bias and bias gradient
    if (run(g)) return;
  }
  gemm_cuda(args, a, b, c);
  binary_cuda(Binary::Add, c, bias, c);
}

void gemm_bias_gelu_cuda(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& h,
                         Tensor& y) {
  check_cuda_operands(a, b, h, "gemm_bias_gelu");
  cuda::check_on_cuda(bias, "gemm_bias_gelu", "bias");
  cuda::check_on_cuda(y, "gemm_bias_gelu", "y");
  check_gemm_epilogue_args(args, a, b, h, bias, args.n, "gemm_bias_gelu (CUDA)");
  if (args.m > 0 && args.n > 0 && args.k > 0) {
    RowMajorGemm g = single_product(args, a, b, h);
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
    g.vec = const_cast<void*>(bias.raw());
    if (run(g)) {
      gelu_forward_cuda(h, y);  // the exact GELU (see the top of this file)
      return;
    }
  }
  gemm_cuda(args, a, b, h);
  bias_gelu_forward_cuda(h, bias, y);
}

void gemm_bias_grad_cuda(const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c, Tensor& bias_grad) {
  check_cuda_operands(a, b, c, "gemm_bias_grad");
  cuda::check_on_cuda(bias_grad, "gemm_bias_grad", "bias_grad");
  check_gemm_epilogue_args(args, a, b, c, bias_grad, args.m, "gemm_bias_grad (CUDA)");
  TSTL_CHECK(args.transpose_a, "gemm_bias_grad (CUDA): A must be transposed (A (K, M) holds the rows to sum)");
  if (args.m > 0 && args.n > 0 && args.k > 0) {
    // The row-major A (K, M) is cuBLASLt's B; BGRADB sums it over K into a vector along M.
    RowMajorGemm g = single_product(args, a, b, c);
    g.epilogue = CUBLASLT_EPILOGUE_BGRADB;
    g.vec = bias_grad.raw();
    if (run(g)) return;
  }
  gemm_cuda(args, a, b, c);
  sum_rows_cuda(a, bias_grad);
}

}  // namespace tstl::kernels
