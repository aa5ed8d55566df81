// Deterministic parallel reductions: the result depends on the data only, never on the number
// of threads or on their timing.
//
// OpenMP's `reduction(+)` gives each thread a share that depends on the thread count and
// combines the threads' partial sums in an order the standard leaves unspecified, so the bits of
// a sum could change with the core count (and a resumed run on another machine would diverge).
// reduce_in_blocks cuts [0, n) into fixed blocks of kReduceBlock elements (the last one shorter),
// reduces each block sequentially in index order (whichever thread runs it), then adds the block
// results on one thread in block order: the same operations in the same order for any thread
// count, hence the same bits. A single block (n <= kReduceBlock) is exactly the sequential loop.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tstl {

inline constexpr int64_t kReduceBlock = 4096;
// Below this many elements the blocks run on the calling thread: waking a team costs more than
// the work. The partition, and so the result, is the same either way.
inline constexpr int64_t kReduceParallelMin = 65536;

// block_fn(begin, end) reduces the elements [begin, end) in order and returns an Acc; Acc is
// value-initialised and has +=. Returns ((Acc{} += block 0) += block 1) += ...
template <class Acc, class BlockFn>
Acc reduce_in_blocks(int64_t n, BlockFn&& block_fn) {
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<Acc> partial(static_cast<size_t>(blocks));  // (blocks)
#pragma omp parallel for schedule(static) if (n >= kReduceParallelMin)
  for (int64_t b = 0; b < blocks; ++b)
    partial[static_cast<size_t>(b)] = block_fn(b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock));
  Acc total{};
  for (const Acc& p : partial) total += p;
  return total;
}

}  // namespace tstl
