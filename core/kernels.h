// The backend kernels behind core/ops.h. Each takes already-allocated tensors on one device and
// has a CPU twin (`name_cpu`, in *_cpu.cpp) and a CUDA twin (`name_cuda`, in *_cuda.cu, compiled
// with the CUDA backend). TSTL_ON_DEVICE picks one by the device of its first tensor argument.
// Gradient contract: every *_backward kernel writes (=) its outputs unless its comment says +=.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tstl::kernels {

enum class Binary : uint8_t { Add, Sub, Mul };

#define TSTL_DECLARE_KERNEL(ret, name, ...) \
  ret name##_cpu(__VA_ARGS__);              \
  ret name##_cuda(__VA_ARGS__);

// C_i = op(A_i) op(B_i) for i < batch, op(A_i) (M, K), op(B_i) (K, N). A shared operand is one
// matrix used by every batch entry; a shared C receives the sum over the batch. C is overwritten
// unless `accumulate` is set.
struct GemmArgs {
  bool transpose_a = false, transpose_b = false;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool a_shared = false, b_shared = false, c_shared = false;
  // C += op(A) op(B) (beta = 1) instead of C = op(A) op(B): on the CPU only (the CUDA gemm rejects
  // it); with beta = 0 OpenBLAS first zeroes C in a pass of its own.
  bool accumulate = false;
};
TSTL_DECLARE_KERNEL(void, gemm, const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c)
// The gemm with what follows it in an affine layer, for batch 1 and an unshared C (M, N). On
// CUDA the bias and the bias gradient are cuBLASLt epilogues of the product (core/matmul_cuda.cu);
// on the CPU the bias is copied into C and the gemm adds onto it (beta = 1), then a gelu pass; the
// bias gradient is a sum_rows pass.
//   gemm_bias:      C = op(A) op(B) + bias (N) on every row
//   gemm_bias_gelu: h = op(A) op(B) + bias (N) on every row, y = gelu(h) (exact erf form)
//   gemm_bias_grad: C = op(A) op(B) with A (K, M) transposed, and bias_grad (M) = sum over the K
//                   rows of A: dW = dy^T x and db = sum over rows of dy in one call
TSTL_DECLARE_KERNEL(void, gemm_bias, const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& bias,
                    Tensor& c)
TSTL_DECLARE_KERNEL(void, gemm_bias_gelu, const GemmArgs& args, const Tensor& a, const Tensor& b,
                    const Tensor& bias, Tensor& h, Tensor& y)
TSTL_DECLARE_KERNEL(void, gemm_bias_grad, const GemmArgs& args, const Tensor& a, const Tensor& b, Tensor& c,
                    Tensor& bias_grad)

// out = a (op) b; b is a's shape or a row of a's last size (broadcast over rows).
TSTL_DECLARE_KERNEL(void, binary, Binary op, const Tensor& a, const Tensor& b, Tensor& out)
// out (C) = sum over rows of x (R, C): the backward of a broadcast row.
TSTL_DECLARE_KERNEL(void, sum_rows, const Tensor& x, Tensor& out)
TSTL_DECLARE_KERNEL(void, scale, const Tensor& x, double s, Tensor& out)
// h (R, F) += bias (F) in place, then y = gelu(h): the MLP's first bias and activation in one pass.
TSTL_DECLARE_KERNEL(void, bias_gelu_forward, Tensor& h, const Tensor& bias, Tensor& y)
// y = gelu(x) and dx = dy gelu'(x) in one pass: the MLP backward needs both (y for dW_out).
TSTL_DECLARE_KERNEL(void, gelu_with_backward, const Tensor& x, const Tensor& dy, Tensor& y, Tensor& dx)
TSTL_DECLARE_KERNEL(void, gelu_forward, const Tensor& x, Tensor& y)
TSTL_DECLARE_KERNEL(void, gelu_backward, const Tensor& x, const Tensor& dy, Tensor& dx)
// out (scalar) = sum of x, accumulated in double; on the CPU in fixed blocks (core/reduce.h), so
// the bits do not depend on the thread count.
TSTL_DECLARE_KERNEL(void, sum_all, const Tensor& x, Tensor& out)
// out = value of the one-element tensor s times `factor`, everywhere: backward of sum and mean.
TSTL_DECLARE_KERNEL(void, broadcast_scalar, const Tensor& s, double factor, Tensor& out)
TSTL_DECLARE_KERNEL(void, permute, const Tensor& x, const std::vector<int64_t>& dims, Tensor& out)
// Copies between x and its slice [start, start + slice.size(dim)) of dimension dim.
// backward=false: slice = x[...]; backward=true: the slice is written into x at that place and
// the rest of x is left untouched (callers zero it first where needed).
TSTL_DECLARE_KERNEL(void, narrow, const Tensor& x, int64_t dim, int64_t start, Tensor& slice, bool backward)
TSTL_DECLARE_KERNEL(void, embedding_forward, const Tensor& weight, const Tensor& ids, Tensor& out)
// dweight += scatter of dout rows by ids (accumulates).
TSTL_DECLARE_KERNEL(void, embedding_backward, const Tensor& dout, const Tensor& ids, Tensor& dweight)
// Per row r of logits (R, V): lse[r] = log sum exp, loss[r] = lse - logit[target] (0 if ignored).
TSTL_DECLARE_KERNEL(void, cross_entropy_forward, const Tensor& logits, const Tensor& targets,
                    int64_t ignore_index, Tensor& loss, Tensor& lse)
// dlogits[r] = (softmax(logits[r]) - onehot(target)) * (dloss / count), rows ignored get 0;
// dloss is a one-element tensor, count the number of non-ignored rows.
TSTL_DECLARE_KERNEL(void, cross_entropy_backward, const Tensor& logits, const Tensor& targets,
                    const Tensor& lse, int64_t ignore_index, const Tensor& dloss, double inv_count,
                    Tensor& dlogits)
// out = x converted to out's dtype (f32, f64, bf16): rounding to nearest even when narrowing.
TSTL_DECLARE_KERNEL(void, cast, const Tensor& x, Tensor& out)
TSTL_DECLARE_KERNEL(void, dropout, const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y)
TSTL_DECLARE_KERNEL(void, normal_fill, Tensor& t, uint64_t seed, uint64_t offset, double mean, double std)
TSTL_DECLARE_KERNEL(void, uniform_fill, Tensor& t, uint64_t seed, uint64_t offset, double low, double high)

#undef TSTL_DECLARE_KERNEL

[[noreturn]] void cuda_not_compiled(const char* kernel);

// The shape checks the gemm_bias* twins share; `kernel` names the caller in the message.
void check_gemm_epilogue_args(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c,
                              const Tensor& vec, int64_t vec_size, const char* kernel);

}  // namespace tstl::kernels

// Runs name_cpu or name_cuda according to the device of `tensor`.
#ifdef TSTL_WITH_CUDA
#define TSTL_ON_DEVICE(tensor, name, ...)                                                     \
  ((tensor).device() == ::tstl::Device::CUDA ? ::tstl::kernels::name##_cuda(__VA_ARGS__)      \
                                             : ::tstl::kernels::name##_cpu(__VA_ARGS__))
#else
#define TSTL_ON_DEVICE(tensor, name, ...)                                                      \
  ((tensor).device() == ::tstl::Device::CUDA ? ::tstl::kernels::cuda_not_compiled(#name)       \
                                             : ::tstl::kernels::name##_cpu(__VA_ARGS__))
#endif
