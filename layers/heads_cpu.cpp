// split_heads / merge_heads on the CPU: each (b, h, n) row of d elements is one contiguous copy
// (any dtype), OpenMP over the rows; then the autograd ops. The layout is in layers/heads.h.
#include "layers/heads.h"

#include <cstring>

#include "core/autograd.h"
#include "core/kernels.h"

namespace tstl {
namespace kernels {

namespace {

// Copies the d-element row (b, h, n) between the two layouts: to_packed chooses the direction.
void heads_copy(const HeadsArgs& a, const Tensor& packed, const Tensor& split, bool to_packed) {
  const size_t elem = dtype_size(packed.dtype()), row_bytes = static_cast<size_t>(a.head_dim) * elem;
  char* packed_bytes = static_cast<char*>(packed.raw());  // (B, N, width)
  char* split_bytes = static_cast<char*>(split.raw());    // (B, H, N, d)
  const int64_t rows = a.batch * a.heads * a.tokens;
#pragma omp parallel for schedule(static) if (rows * a.head_dim > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t n = row % a.tokens, h = (row / a.tokens) % a.heads, b = row / (a.tokens * a.heads);
    char* p = packed_bytes + static_cast<size_t>(heads_packed_index(a, b, h, n, 0)) * elem;
    char* s = split_bytes + static_cast<size_t>(row) * row_bytes;
    if (to_packed) {
      std::memcpy(p, s, row_bytes);
    } else {
      std::memcpy(s, p, row_bytes);
    }
  }
}

}  // namespace

void heads_gather_cpu(const HeadsArgs& args, const Tensor& packed, Tensor& split) {
  heads_copy(args, packed, split, false);
}

void heads_scatter_cpu(const HeadsArgs& args, const Tensor& split, Tensor& packed) {
  heads_copy(args, packed, split, true);
}

}  // namespace kernels

// ---- The autograd ops ------------------------------------------------------------------------

Tensor split_heads(const Tensor& qkv, int64_t heads, int which) {
  TSTL_CHECK(qkv.dim() == 3, "split_heads: qkv must be (B, N, 3*H*d), got ", shape_str(qkv.shape()));
  TSTL_CHECK(heads > 0 && qkv.size(2) % (3 * heads) == 0, "split_heads: width ", qkv.size(2), " of qkv ",
             shape_str(qkv.shape()), " is not 3 * heads (", heads, ") * head_dim");
  TSTL_CHECK(which >= 0 && which <= 2, "split_heads: which must be 0 (q), 1 (k) or 2 (v), got ", which);
  kernels::HeadsArgs args;
  args.batch = qkv.size(0), args.tokens = qkv.size(1), args.heads = heads;
  args.head_dim = qkv.size(2) / (3 * heads);
  args.width = qkv.size(2), args.group = 3 * args.head_dim, args.offset = which * args.head_dim;
  Tensor out =
      Tensor::empty({args.batch, heads, args.tokens, args.head_dim}, qkv.dtype(), qkv.device());  // (B, H, N, d)
  TSTL_ON_DEVICE(qkv, heads_gather, args, qkv, out);
  if (needs_grad({&qkv})) {
    const Shape qkv_shape = qkv.shape();
    record(out, "split_heads", {qkv}, [args, qkv_shape](const Tensor& g) {  // g (B, H, N, d)
      Tensor dqkv = Tensor::zeros(qkv_shape, g.dtype(), g.device());        // (B, N, 3*H*d)
      TSTL_ON_DEVICE(g, heads_scatter, args, g, dqkv);
      return std::vector<Tensor>{dqkv};
    });
  }
  return out;
}

Tensor merge_heads(const Tensor& x) {
  TSTL_CHECK(x.dim() == 4, "merge_heads: x must be (B, H, N, d), got ", shape_str(x.shape()));
  kernels::HeadsArgs args;
  args.batch = x.size(0), args.heads = x.size(1), args.tokens = x.size(2), args.head_dim = x.size(3);
  args.width = args.heads * args.head_dim, args.group = args.head_dim, args.offset = 0;
  Tensor out = Tensor::empty({args.batch, args.tokens, args.width}, x.dtype(), x.device());  // (B, N, H*d)
  TSTL_ON_DEVICE(x, heads_scatter, args, x, out);  // every column is written: no zeroing needed
  if (needs_grad({&x})) {
    const Shape x_shape = x.shape();
    record(out, "merge_heads", {x}, [args, x_shape](const Tensor& g) {  // g (B, N, H*d)
      Tensor dx = Tensor::empty(x_shape, g.dtype(), g.device());        // (B, H, N, d)
      TSTL_ON_DEVICE(g, heads_gather, args, g, dx);
      return std::vector<Tensor>{dx};
    });
  }
  return out;
}

}  // namespace tstl
