// Multi-tensor launches: one kernel over a list of tensors, the list passed by value in the
// kernel's parameters (no upload, so nothing to synchronise). Include only from .cu files.
//
// A launch carries up to kCapacity entries; a longer list takes ceil(n / kCapacity) launches (the
// 350M model's ~290 parameter tensors fit one). Inside a kernel every block visits every entry and
// strides over its elements with the whole grid, so large and small tensors alike are spread over
// all blocks, and which thread handles which element is fixed by (entry, index) alone: a
// reduction over the list (the gradient norm) is summed in a fixed order and repeats bit for bit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

namespace tstl::cuda {

// Kernel parameters may take 32764 bytes from CUDA 12.1 on, on Volta and newer (tstl builds for
// sm_80 and up, CMakeLists.txt); 4096 before.
#if CUDART_VERSION >= 12010
constexpr size_t kKernelParamBytes = 32764;
#else
constexpr size_t kKernelParamBytes = 4096;
#endif

// The list one launch receives: `count` entries of type Entry, and a per-launch header (for
// example scalars shared by all entries) in `header`.
template <class Header, class Entry>
struct TensorList {
  static constexpr int kCapacity =
      static_cast<int>((kKernelParamBytes - sizeof(Header) - 64) / sizeof(Entry));  // 64: count and padding
  Header header;
  int count = 0;
  Entry entries[kCapacity];
};

// Calls launch(list, index) once per group of up to kCapacity entries, in order.
template <class Header, class Entry, class Launch>
void for_each_launch(const Header& header, const std::vector<Entry>& entries, Launch&& launch) {
  using List = TensorList<Header, Entry>;
  static_assert(sizeof(List) <= kKernelParamBytes, "the tensor list exceeds the kernel parameter limit");
  int index = 0;
  for (size_t first = 0; first < entries.size(); first += List::kCapacity, ++index) {
    List list;
    list.header = header;
    list.count = static_cast<int>(std::min<size_t>(List::kCapacity, entries.size() - first));
    std::copy(entries.begin() + static_cast<std::ptrdiff_t>(first),
              entries.begin() + static_cast<std::ptrdiff_t>(first) + list.count, list.entries);
    launch(list, index);
  }
}

// Launches needed for n entries.
template <class Header, class Entry>
int launches_for(size_t n) {
  return static_cast<int>((n + TensorList<Header, Entry>::kCapacity - 1) / TensorList<Header, Entry>::kCapacity);
}

}  // namespace tstl::cuda
