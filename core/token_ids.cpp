#include "core/token_ids.h"

#include "core/error.h"

namespace tstl {

namespace {
// The position of the first id that accept() rejects (its value in id_out), or -1.
template <class Accept>
int64_t first_rejected(const Tensor& ids, const char* op, Accept accept, int64_t& id_out) {
  TSTL_CHECK(ids.device() == Device::CPU, op, ": ids are checked on the host, got a tensor on ",
             device_name(ids.device()));
  TSTL_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, op, ": ids must be i32 or i64, got ",
             dtype_name(ids.dtype()));
  const int64_t n = ids.numel();  // tensors are contiguous (core/tensor.h)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids.dtype() == DType::I32 ? ids.data<int32_t>()[i] : ids.data<int64_t>()[i];
    if (!accept(id)) {
      id_out = id;
      return i;
    }
  }
  return -1;
}
}  // namespace

void check_embedding_ids(const Tensor& ids, int64_t vocab) {
  int64_t id = 0;
  const int64_t i = first_rejected(ids, "embedding", [vocab](int64_t v) { return v >= 0 && v < vocab; }, id);
  TSTL_CHECK(i < 0, "embedding: id ", id, " at position ", i, " outside [0, ", vocab, ")");
}

void check_target_ids(const Tensor& targets, int64_t vocab, int64_t ignore_index) {
  int64_t t = 0;
  const int64_t r = first_rejected(
      targets, "cross_entropy", [=](int64_t v) { return v == ignore_index || (v >= 0 && v < vocab); }, t);
  TSTL_CHECK(r < 0, "cross_entropy: target ", t, " at row ", r, " outside [0, ", vocab, ")");
}

}  // namespace tstl
