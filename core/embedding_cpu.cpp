// Embedding lookup (forward) and its scatter-add backward on the CPU.
#include <cstring>

#include "core/kernels.h"

namespace tstl::kernels {

namespace {
template <class Fn>
void for_each_id(const Tensor& ids, int64_t vocab, Fn fn) {
  const int64_t n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids.dtype() == DType::I32 ? ids.data<int32_t>()[i] : ids.data<int64_t>()[i];
    TSTL_CHECK(id >= 0 && id < vocab, "embedding: id ", id, " at position ", i, " outside [0, ", vocab, ")");
    fn(i, id);
  }
}
}  // namespace

void embedding_forward_cpu(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t vocab = weight.size(0), width = weight.size(1);
  const size_t row = static_cast<size_t>(width) * dtype_size(weight.dtype());
  const char* pw = static_cast<const char*>(weight.raw());
  char* po = static_cast<char*>(out.raw());
  for_each_id(ids, vocab, [&](int64_t i, int64_t id) { std::memcpy(po + i * row, pw + id * row, row); });
}

void embedding_backward_cpu(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  const int64_t vocab = dweight.size(0), width = dweight.size(1);
  // Serial over ids (rows may repeat), vectorised over the width: deterministic order.
  visit_float(dweight.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = dout.data<T>();
    T* pw = dweight.data<T>();
    for_each_id(ids, vocab, [&](int64_t i, int64_t id) {
      for (int64_t c = 0; c < width; ++c) pw[id * width + c] += pg[i * width + c];
    });
  });
}

}  // namespace tstl::kernels
