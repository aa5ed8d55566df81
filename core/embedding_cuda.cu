// CUDA embedding: forward gathers rows of weight (V, C) by ids (N,) into out (N, C); backward
// scatter-adds dout (N, C) into dweight (V, C) (accumulates, +=).
//
// Determinism of the backward: no float atomics. The ids are sorted with a stable radix sort
// (CUB) carrying their positions, so each run of equal ids lists the positions that hit one
// vocabulary row in increasing order. The first thread of a run owns that row (per column) and
// adds the run's gradient rows one after another: the same order as the CPU's serial loop, so f32
// results equal the CPU's bit for bit, and nothing depends on thread scheduling.
//
// Ids outside [0, V): the launchers read nothing back (a training step makes no host
// synchronisation, docs/gpu.md), so ids are checked on the host before they are uploaded
// (core/token_ids.h, called by layers/decoder.cpp). An invalid id that reaches the device anyway
// is never used as an address: its forward row is NaN, so the loss turns non-finite and the
// trainer's non-finite check stops the run, and its backward row is dropped.
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <cmath>

#include "core/cuda_context.h"
#include "core/kernels.h"

namespace tstl::kernels {

using cuda::compute_t;
using cuda::load;
using cuda::store;

namespace {

#define TSTL_GRID_STRIDE(i, n)                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// out (N, C) = weight[ids] for valid ids; the row of an invalid id is NaN.
template <class T, class Id>
__global__ void embedding_forward_kernel(const T* weight, const Id* ids, T* out, int64_t n, int64_t width,
                                         int64_t vocab) {
  TSTL_GRID_STRIDE(e, n * width) {
    const int64_t i = e / width, c = e % width;
    const int64_t id = static_cast<int64_t>(ids[i]);
    if (id < 0 || id >= vocab) {
      store(out, e, NAN);
      continue;
    }
    out[e] = weight[id * width + c];
  }
}

// keys (N,) = ids as sort keys (an invalid id sorts last as the key `vocab`, which the backward
// skips), positions (N,) = 0..N-1.
template <class Id>
__global__ void embedding_keys_kernel(const Id* ids, int64_t n, int64_t vocab, uint32_t* keys, uint32_t* positions) {
  TSTL_GRID_STRIDE(i, n) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    const bool valid = id >= 0 && id < vocab;
    keys[i] = static_cast<uint32_t>(valid ? id : vocab);
    positions[i] = static_cast<uint32_t>(i);
  }
}

// For each sorted index j that starts a run of equal keys, and each column c:
// dweight[key, c] += sum over the run of dout[position, c], in increasing position order.
template <class T>
__global__ void embedding_backward_kernel(const T* dout, const uint32_t* keys, const uint32_t* positions, T* dweight,
                                          int64_t n, int64_t width, int64_t vocab) {
  TSTL_GRID_STRIDE(e, n * width) {
    const int64_t j = e / width, c = e % width;
    const uint32_t key = keys[j];
    if (key >= vocab) continue;                 // an invalid id: no row to add to
    if (j > 0 && keys[j - 1] == key) continue;  // not the first of its run
    const int64_t row = static_cast<int64_t>(key) * width + c;
    compute_t<T> acc = load(dweight, row);
    for (int64_t q = j; q < n && keys[q] == key; ++q) acc += load(dout, static_cast<int64_t>(positions[q]) * width + c);
    store(dweight, row, acc);
  }
}

#undef TSTL_GRID_STRIDE

template <class Fn>
void visit_ids(const Tensor& ids, Fn&& fn) {
  switch (ids.dtype()) {
    case DType::I32: fn(int32_t{}); return;
    case DType::I64: fn(int64_t{}); return;
    default: TSTL_FAIL("embedding (CUDA): ids must be i32 or i64, got ", dtype_name(ids.dtype()));
  }
}

}  // namespace

void embedding_forward_cuda(const Tensor& weight, const Tensor& ids, Tensor& out) {
  cuda::check_on_cuda(weight, "embedding_forward", "weight");
  cuda::check_on_cuda(ids, "embedding_forward", "ids");
  const int64_t vocab = weight.size(0), width = weight.size(1), n = ids.numel();
  if (n == 0 || width == 0) return;
  visit_ids(ids, [&](auto id_tag) {
    using Id = decltype(id_tag);
    cuda::visit_cuda_float(weight.dtype(), "embedding_forward", [&](auto tag) {
      using T = decltype(tag);
      embedding_forward_kernel<T, Id><<<cuda::grid_for(n * width), cuda::kBlock, 0, cuda::stream()>>>(
          static_cast<const T*>(weight.raw()), static_cast<const Id*>(ids.raw()), static_cast<T*>(out.raw()), n,
          width, vocab);
      CUDA_CHECK_LAUNCH();
    });
  });
}

void embedding_backward_cuda(const Tensor& dout, const Tensor& ids, Tensor& dweight) {
  cuda::check_on_cuda(dout, "embedding_backward", "dout");
  cuda::check_on_cuda(ids, "embedding_backward", "ids");
  cuda::check_on_cuda(dweight, "embedding_backward", "dweight");
  TSTL_CHECK(dout.dtype() == dweight.dtype(), "embedding_backward (CUDA): dtypes differ: ", dtype_name(dout.dtype()),
             " and ", dtype_name(dweight.dtype()));
  const int64_t vocab = dweight.size(0), width = dweight.size(1), n = ids.numel();
  if (n == 0 || width == 0) return;
  TSTL_CHECK(n <= INT_MAX && vocab < static_cast<int64_t>(UINT32_MAX), "embedding_backward (CUDA): ", n,
             " ids over a vocabulary of ", vocab, " exceed the sort's 32-bit range");
  cuda::DeviceBuffer keys(static_cast<size_t>(n) * sizeof(uint32_t)), positions(keys.bytes());  // (N,) each
  cuda::DeviceBuffer sorted_keys(keys.bytes()), sorted_positions(keys.bytes());                 // (N,) each
  visit_ids(ids, [&](auto id_tag) {
    using Id = decltype(id_tag);
    embedding_keys_kernel<Id><<<cuda::grid_for(n), cuda::kBlock, 0, cuda::stream()>>>(
        static_cast<const Id*>(ids.raw()), n, vocab, keys.as<uint32_t>(), positions.as<uint32_t>());
    CUDA_CHECK_LAUNCH();
  });

  int end_bit = 1;  // sort only the bits that keys up to vocab (the invalid-id key) can use
  while (end_bit < 32 && (int64_t{1} << end_bit) <= vocab) ++end_bit;
  const int items = static_cast<int>(n);
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.as<uint32_t>(), sorted_keys.as<uint32_t>(),
                                             positions.as<uint32_t>(), sorted_positions.as<uint32_t>(), items, 0,
                                             end_bit, cuda::stream()));
  cuda::DeviceBuffer temp(std::max<size_t>(temp_bytes, 1));  // never null: null means "query size"
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys.as<uint32_t>(),
                                             sorted_keys.as<uint32_t>(), positions.as<uint32_t>(),
                                             sorted_positions.as<uint32_t>(), items, 0, end_bit, cuda::stream()));

  cuda::visit_cuda_float(dweight.dtype(), "embedding_backward", [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<T><<<cuda::grid_for(n * width), cuda::kBlock, 0, cuda::stream()>>>(
        static_cast<const T*>(dout.raw()), sorted_keys.as<uint32_t>(), sorted_positions.as<uint32_t>(),
        static_cast<T*>(dweight.raw()), n, width, vocab);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tstl::kernels
