// The caching allocator's bookkeeping (core/block_pool.h) on a fake device memory: blocks are
// reused only by the device and stream they were allocated for, sizes are rounded to the
// granules, out of memory frees the cache (after draining) and retries once, and the counters
// (in use, peak, cached, backend allocations, reuses) follow every call.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <vector>

#include "core/block_pool.h"

namespace tstl {
namespace {

// A fake device memory: malloc'd blocks, with a byte budget to simulate running out of memory.
struct FakeDevice {
  size_t budget = SIZE_MAX, used = 0;
  int allocations = 0, frees = 0, drains = 0;
  std::map<void*, size_t> live;  // block -> bytes
  std::vector<size_t> sizes;     // of every allocation, in order

  BlockBackend backend() {
    return BlockBackend{[this](int, size_t bytes) -> void* {
                          if (used + bytes > budget) return nullptr;
                          void* p = std::malloc(bytes);
                          used += bytes;
                          ++allocations;
                          live[p] = bytes;
                          sizes.push_back(bytes);
                          return p;
                        },
                        [this](int, void* p) {
                          auto it = live.find(p);
                          ASSERT_NE(it, live.end()) << "freed a block twice or one it never made";
                          used -= it->second;
                          live.erase(it);
                          ++frees;
                          std::free(p);
                        },
                        [this] { ++drains; }};
  }
};

constexpr BlockOwner kS0{0, 0x1000}, kS1{0, 0x2000}, kDev1{1, 0x1000};

TEST(BlockPool, RoundsToGranules) {
  EXPECT_EQ(BlockPool::round(1), 512u);
  EXPECT_EQ(BlockPool::round(512), 512u);
  EXPECT_EQ(BlockPool::round(513), 1024u);
  EXPECT_EQ(BlockPool::round((1u << 20) - 1), 1u << 20);  // below 1 MiB: 512 B granules
  EXPECT_EQ(BlockPool::round(1u << 20), 2u << 20);        // from 1 MiB: 2 MiB granules
  EXPECT_EQ(BlockPool::round((2u << 20) + 1), 4u << 20);
}

TEST(BlockPool, ReusesABlockOnItsOwnStreamOnly) {
  FakeDevice device;
  BlockPool pool(device.backend());
  void* a = pool.allocate(1000, kS0);
  EXPECT_EQ(device.sizes.back(), 1024u);
  pool.release(a, 1000);
  EXPECT_EQ(pool.stats().cached, 1024u);

  void* other_stream = pool.allocate(1000, kS1);  // same device and size, another stream
  EXPECT_NE(other_stream, a);
  void* other_device = pool.allocate(1000, kDev1);  // same stream handle, another device
  EXPECT_NE(other_device, a);
  void* other_size = pool.allocate(2000, kS0);  // same owner, another rounded size
  EXPECT_NE(other_size, a);
  EXPECT_EQ(device.allocations, 4);

  void* again = pool.allocate(900, kS0);  // rounds to 1024 as well: the cached block
  EXPECT_EQ(again, a);
  EXPECT_EQ(device.allocations, 4);
  const BlockPoolStats s = pool.stats();
  EXPECT_EQ(s.reuses, 1u);
  EXPECT_EQ(s.backend_allocations, 4u);
  EXPECT_EQ(s.cached, 0u);
  EXPECT_EQ(s.in_use, 1024u + 1024u + 1024u + 2048u);

  for (auto [p, bytes] :
       {std::pair<void*, size_t>{other_stream, 1000}, {other_device, 1000}, {other_size, 2000}, {again, 900}})
    pool.release(p, bytes);
  EXPECT_EQ(pool.stats().in_use, 0u);
  EXPECT_EQ(pool.stats().peak_in_use, 1024u + 1024u + 1024u + 2048u);
  EXPECT_EQ(pool.release_cached(), 1024u + 1024u + 1024u + 2048u);
  EXPECT_EQ(device.frees, 4);
  EXPECT_EQ(device.drains, 1);
  EXPECT_TRUE(device.live.empty());
}

TEST(BlockPool, OutOfMemoryFreesTheCacheAndRetriesOnce) {
  FakeDevice device;
  device.budget = 3 * 512;
  BlockPool pool(device.backend());
  void* a = pool.allocate(512, kS0);
  void* b = pool.allocate(512, kS1);
  pool.release(a, 512);
  pool.release(b, 512);
  EXPECT_EQ(pool.stats().cached, 1024u);
  void* big = pool.allocate(1024, kS0);  // 1536 budget, 1024 cached: only fits once the cache is freed
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(device.drains, 1);
  EXPECT_EQ(device.frees, 2);
  EXPECT_EQ(pool.stats().cached, 0u);
  try {
    pool.allocate(1024, kS0);  // 1024 in use: nothing cached to free, so it fails
    ADD_FAILURE() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory allocating 1024 bytes"), std::string::npos) << e.what();
  }
  pool.release(big, 1024);
  pool.release_cached();
}

TEST(BlockPool, RejectsAForeignPointerAndAWrongSize) {
  FakeDevice device;
  BlockPool pool(device.backend());
  int not_a_block = 0;
  EXPECT_THROW(pool.release(&not_a_block, 4), Error);
  void* a = pool.allocate(100, kS0);
  EXPECT_THROW(pool.release(a, 5000), Error);  // 5000 rounds to 5120, the block has 512
  pool.release(a, 100);
  EXPECT_EQ(pool.allocate(0, kS0), nullptr);
  pool.release(nullptr, 0);
  pool.release_cached();
}

}  // namespace
}  // namespace tstl
