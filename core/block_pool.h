// The bookkeeping of the CUDA caching allocator (core/cuda_backend.cu), free of CUDA so that it is
// unit-tested on the CPU (tests/core/test_block_pool.cpp) with a fake device memory.
//
// A block is handed out for an owner, the (device, stream) that is current when it is requested,
// and is rounded up (512 B granules below 1 MiB, 2 MiB above). Released, it goes back to the free
// list of that owner and size, and only a request of the same owner and rounded size reuses it.
// Why per stream: work on one stream runs in issue order, so a block released while a kernel
// queued on stream S still reads it can be handed to the next request on S at once: whatever S
// runs next with it starts after that kernel. On another stream that is not true, so another
// stream never receives it (it gets a block of its own). A block that was used on a second stream
// (an NCCL buffer, say) must be ordered before its release by whoever used it there: make the
// owner stream wait on an event recorded after the last use (core/comm_nccl.cu), or synchronise.
//
// Out of memory: the backend's allocate returns nullptr; the pool then frees every cached block
// (after the backend's drain, which waits for all queued work, since cached blocks may still be in
// use by queued kernels) and tries once more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/error.h"

namespace tstl {

// The device and the stream (a cudaStream_t as an integer) a block belongs to.
struct BlockOwner {
  int device = 0;
  uintptr_t stream = 0;
};

struct BlockPoolStats {
  size_t in_use = 0;                 // bytes handed out and not released (rounded sizes)
  size_t peak_in_use = 0;            // the largest in_use so far
  size_t cached = 0;                 // bytes held on the free lists
  uint64_t backend_allocations = 0;  // calls of the backend's allocate that succeeded
  uint64_t reuses = 0;               // requests served from a free list
};

// The memory the pool manages: allocate returns nullptr when the device is out of memory (other
// failures throw); drain waits until no queued work can still use any block.
struct BlockBackend {
  std::function<void*(int device, size_t bytes)> allocate;
  std::function<void(int device, void* block)> free;
  std::function<void()> drain;
};

class BlockPool {
 public:
  explicit BlockPool(BlockBackend backend) : backend_(std::move(backend)) {}
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  static size_t round(size_t bytes) {
    const size_t granule = bytes < (size_t{1} << 20) ? 512 : (size_t{2} << 20);
    return (bytes + granule - 1) / granule * granule;
  }

  // A block of at least `bytes` for `owner`; nullptr for 0 bytes.
  void* allocate(size_t bytes, BlockOwner owner) {
    if (bytes == 0) return nullptr;
    const size_t size = round(bytes);
    const FreeKey key{owner.device, owner.stream, size};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(key);
      if (it != free_.end() && !it->second.empty()) {
        void* block = it->second.back();
        it->second.pop_back();
        stats_.cached -= size;
        ++stats_.reuses;
        hand_out(block, owner, size);
        return block;
      }
    }
    void* block = backend_.allocate(owner.device, size);
    if (!block) {
      const size_t freed = release_cached();
      block = backend_.allocate(owner.device, size);
      TSTL_CHECK(block, "device ", owner.device, ": out of memory allocating ", size, " bytes (", stats().in_use,
                 " bytes in use; ", freed, " cached bytes were returned to the device first)");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.backend_allocations;
    hand_out(block, owner, size);
    return block;
  }

  // Returns a block to its owner's free list; `bytes` is the size it was requested with.
  void release(void* block, size_t bytes) {
    if (!block) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(block);
    TSTL_CHECK(it != live_.end(), "caching allocator: release of a block it did not hand out");
    const Live live = it->second;
    TSTL_CHECK(live.size == round(bytes), "caching allocator: a block of ", live.size, " bytes released as ", bytes,
               " bytes");
    live_.erase(it);
    stats_.in_use -= live.size;
    free_[FreeKey{live.owner.device, live.owner.stream, live.size}].push_back(block);
    stats_.cached += live.size;
  }

  // Frees every cached block through the backend (after draining); returns the bytes freed.
  size_t release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stats_.cached == 0) return 0;
    backend_.drain();
    for (auto& [key, blocks] : free_)
      for (void* block : blocks) backend_.free(std::get<0>(key), block);
    free_.clear();
    const size_t freed = stats_.cached;
    stats_.cached = 0;
    return freed;
  }

  BlockPoolStats stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  using FreeKey = std::tuple<int, uintptr_t, size_t>;  // device, stream, rounded size
  struct Live {
    BlockOwner owner;
    size_t size = 0;
  };

  void hand_out(void* block, BlockOwner owner, size_t size) {  // under mutex_
    live_[block] = Live{owner, size};
    stats_.in_use += size;
    if (stats_.in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.in_use;
  }

  BlockBackend backend_;
  mutable std::mutex mutex_;
  std::map<FreeKey, std::vector<void*>> free_;
  std::unordered_map<void*, Live> live_;
  BlockPoolStats stats_;
};

}  // namespace tstl
