// The synchronisation counter (core/cuda_sync.h): a process-wide atomic, so calls from any thread
// (the trainer, the communicator's waits) are counted once each.
#include "core/cuda_sync.h"

#include <atomic>

namespace tstl::cuda {

namespace {
std::atomic<int64_t>& counter() {
  static std::atomic<int64_t> count{0};
  return count;
}
}  // namespace

int64_t sync_count() { return counter().load(std::memory_order_relaxed); }
void note_sync() { counter().fetch_add(1, std::memory_order_relaxed); }

}  // namespace tstl::cuda
