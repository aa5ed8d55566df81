// split_heads / merge_heads on CUDA: the gather and scatter between the head-major (B, H, N, d)
// layout and the token-major packed one, one thread per element, with the index map
// heads_packed_index of layers/heads.h. Elements are moved as raw 2, 4 or 8-byte words, so every
// dtype works. Gather writes split (=); scatter writes only the selected columns of packed.
#include "core/cuda_context.h"
#include "layers/heads.h"

namespace tstl::kernels {

namespace {

// ToPacked = false: split[e] = packed[map(e)]; true: packed[map(e)] = split[e].
template <bool ToPacked, class U>
__global__ void heads_copy_kernel(const HeadsArgs a, U* __restrict__ packed /* (B, N, width) */,
                                  U* __restrict__ split /* (B, H, N, d) */, int64_t count) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = e % a.head_dim, row = e / a.head_dim;
    const int64_t n = row % a.tokens, h = (row / a.tokens) % a.heads, b = row / (a.tokens * a.heads);
    const int64_t packed_index = heads_packed_index(a, b, h, n, j);
    if constexpr (ToPacked) {
      packed[packed_index] = split[e];
    } else {
      split[e] = packed[packed_index];
    }
  }
}

template <bool ToPacked>
void heads_copy(const HeadsArgs& args, const Tensor& packed, const Tensor& split, const char* name) {
  cuda::check_on_cuda(packed, name, "the packed tensor");
  cuda::check_on_cuda(split, name, "the head-major tensor");
  TSTL_CHECK(packed.dtype() == split.dtype(), name, " (CUDA): dtypes differ (", dtype_name(packed.dtype()), " vs ",
             dtype_name(split.dtype()), ")");
  const int64_t count = args.batch * args.heads * args.tokens * args.head_dim;
  if (count == 0) return;
  const unsigned grid = cuda::grid_for(count);
  cuda::visit_element_size(dtype_size(packed.dtype()), name, [&](auto word) {
    using U = decltype(word);
    heads_copy_kernel<ToPacked, U><<<grid, cuda::kBlock, 0, cuda::stream()>>>(
        args, static_cast<U*>(packed.raw()), static_cast<U*>(split.raw()), count);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void heads_gather_cuda(const HeadsArgs& args, const Tensor& packed, Tensor& split) {
  heads_copy<false>(args, packed, split, "split_heads");
}

void heads_scatter_cuda(const HeadsArgs& args, const Tensor& split, Tensor& packed) {
  heads_copy<true>(args, packed, split, "merge_heads");
}

}  // namespace tstl::kernels
