// Fused softmax cross-entropy on CUDA: one block per row of logits (R, V). Forward reduces the
// row to its max and log-sum-exp with fixed-order shared-memory trees (deterministic) in Acc =
// fp32 (f64 for f64 logits) and writes lse (R,) and loss (R,) in that type; backward recomputes
// softmax from lse and writes dlogits (R, V) = (softmax - onehot) * dloss / count (=), zero rows
// where the target is ignored. bf16 logits are loaded as f32; lse, loss and dloss are f32.
// The per-row math is core/cross_entropy.h's, shared with the CPU.
// Targets outside [0, V) (other than ignore_index) are checked on the host before upload
// (core/token_ids.h, layers/decoder.cpp): nothing is read back here, so a training step makes no
// host synchronisation (docs/gpu.md). A bad target that reaches the device anyway is never used
// as an address: its row's loss is NaN (the trainer's non-finite check stops the run) and its
// gradient row is the softmax alone.
#include "core/cross_entropy.h"
#include "core/cuda_context.h"
#include "core/kernels.h"

namespace tstl::kernels {

using cuda::load;
using cuda::store;

namespace {

constexpr int kRowBlock = 256;  // threads per row; a power of two for the reduction tree

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

struct MaxOp {
  template <class A>
  __device__ A operator()(A x, A y) const { return fmax(x, y); }
};
struct SumOp {
  template <class A>
  __device__ A operator()(A x, A y) const { return x + y; }
};

// Reduces v over the block in a fixed tree; every thread gets the result.
template <class A, class Op>
__device__ A block_reduce(A v, A* shared, Op op) {
  shared[threadIdx.x] = v;
  for (int width = kRowBlock / 2; width > 0; width /= 2) {
    __syncthreads();
    if (threadIdx.x < width) shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + width]);
  }
  __syncthreads();
  const A result = shared[0];
  __syncthreads();  // shared is reused by the next reduction
  return result;
}

template <class T>
__global__ void cross_entropy_forward_kernel(const T* logits, const void* targets, bool wide, int64_t ignore_index,
                                             acc_t<T>* loss, acc_t<T>* lse, int64_t rows, int64_t vocab) {
  using A = acc_t<T>;
  __shared__ A shared[kRowBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * vocab;  // (V,)
    A m = -INFINITY;
    for (int64_t j = threadIdx.x; j < vocab; j += kRowBlock) m = fmax(m, static_cast<A>(load(row, j)));
    m = block_reduce(m, shared, MaxOp{});
    A s = 0;
    for (int64_t j = threadIdx.x; j < vocab; j += kRowBlock) s += exp(static_cast<A>(load(row, j)) - m);
    s = block_reduce(s, shared, SumOp{});
    if (threadIdx.x == 0) {
      const A l = m + log(s);
      const int64_t t = load_target(targets, wide, r);
      const bool valid = t == ignore_index || (t >= 0 && t < vocab);
      lse[r] = l;
      loss[r] = t == ignore_index ? A(0) : (valid ? l - static_cast<A>(load(row, t)) : A(NAN));
    }
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* logits, const void* targets, bool wide, const acc_t<T>* lse,
                                              int64_t ignore_index, const acc_t<T>* dloss, double inv_count,
                                              T* dlogits, int64_t rows, int64_t vocab) {
  using A = acc_t<T>;
  const A scale = static_cast<A>(static_cast<double>(dloss[0]) * inv_count);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = load_target(targets, wide, r);
    const T* row = logits + r * vocab;  // (V,)
    T* grow = dlogits + r * vocab;      // (V,)
    if (t == ignore_index) {
      for (int64_t j = threadIdx.x; j < vocab; j += kRowBlock) store(grow, j, A(0));
      continue;
    }
    const A l = lse[r];
    for (int64_t j = threadIdx.x; j < vocab; j += kRowBlock)
      store(grow, j, cross_entropy_grad<A>(static_cast<A>(load(row, j)), l, j == t, scale));
  }
}

unsigned row_grid(int64_t rows) { return static_cast<unsigned>(rows < 65536 ? rows : 65536); }

DType acc_dtype(DType logits) { return logits == DType::F64 ? DType::F64 : DType::F32; }

void check_tensors(const Tensor& logits, const Tensor& targets, const Tensor& lse, const char* kernel) {
  cuda::check_on_cuda(logits, kernel, "logits");
  cuda::check_on_cuda(targets, kernel, "targets");
  cuda::check_on_cuda(lse, kernel, "lse");
  TSTL_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64, kernel,
             " (CUDA): targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  TSTL_CHECK(lse.dtype() == acc_dtype(logits.dtype()), kernel, " (CUDA): lse is ", dtype_name(lse.dtype()),
             " for ", dtype_name(logits.dtype()), " logits, expected ", dtype_name(acc_dtype(logits.dtype())));
}

}  // namespace

void cross_entropy_forward_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index, Tensor& loss,
                                Tensor& lse) {
  check_tensors(logits, targets, lse, "cross_entropy_forward");
  TSTL_CHECK(loss.dtype() == lse.dtype(), "cross_entropy_forward (CUDA): loss and lse dtypes differ");
  const int64_t vocab = logits.size(-1), rows = vocab ? logits.numel() / vocab : 0;
  if (rows == 0) return;
  const bool wide = targets.dtype() == DType::I64;
  cuda::visit_cuda_float(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    cross_entropy_forward_kernel<T><<<row_grid(rows), kRowBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(logits.raw()), targets.raw(), wide, ignore_index, static_cast<A*>(loss.raw()),
        static_cast<A*>(lse.raw()), rows, vocab);
    CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_backward_cuda(const Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t ignore_index,
                                 const Tensor& dloss, double inv_count, Tensor& dlogits) {
  check_tensors(logits, targets, lse, "cross_entropy_backward");
  cuda::check_on_cuda(dloss, "cross_entropy_backward", "dloss");
  TSTL_CHECK(dloss.dtype() == lse.dtype() && dloss.numel() == 1, "cross_entropy_backward (CUDA): dloss must be one ",
             dtype_name(lse.dtype()), " element, got ", dloss.numel(), " of ", dtype_name(dloss.dtype()));
  const int64_t vocab = logits.size(-1), rows = vocab ? logits.numel() / vocab : 0;
  if (rows == 0) return;
  const bool wide = targets.dtype() == DType::I64;
  cuda::visit_cuda_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    cross_entropy_backward_kernel<T><<<row_grid(rows), kRowBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(logits.raw()), targets.raw(), wide, static_cast<const A*>(lse.raw()), ignore_index,
        static_cast<const A*>(dloss.raw()), inv_count, static_cast<T*>(dlogits.raw()), rows, vocab);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
