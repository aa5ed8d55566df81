// The cuBLASLt plan cache's key and bookkeeping (core/gemm_plan.h), host only: every field of the
// key tells problems apart, the alignment of a pointer is its largest power-of-two divisor up to
// 256, a plan is made once per key, and a full cache starts over.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "core/gemm_plan.h"

namespace tstl {
namespace {

GemmPlanKey base_key() {
  GemmPlanKey k;
  k.device = 0, k.ab_type = 14, k.c_type = 14, k.compute_type = 68, k.epilogue = 0;
  k.m = 96, k.n = 33, k.k = 17, k.batch = 1, k.lda = 96, k.ldb = 17, k.ldc = 96;
  k.align_a = k.align_b = k.align_c = k.align_bias = 256;
  return k;
}

TEST(GemmPlanKey, EveryFieldDistinguishesKeys) {
  const GemmPlanKey base = base_key();
  const GemmPlanKeyHash hash;
  const std::vector<std::function<void(GemmPlanKey&)>> changes = {
      [](GemmPlanKey& k) { k.device = 1; },
      [](GemmPlanKey& k) { k.ab_type = 0; },
      [](GemmPlanKey& k) { k.c_type = 0; },
      [](GemmPlanKey& k) { k.compute_type = 77; },
      [](GemmPlanKey& k) { k.epilogue = 4; },
      [](GemmPlanKey& k) { k.transpose_a = true; },
      [](GemmPlanKey& k) { k.transpose_b = true; },
      [](GemmPlanKey& k) { k.m = 97; },
      [](GemmPlanKey& k) { k.n = 34; },
      [](GemmPlanKey& k) { k.k = 18; },
      [](GemmPlanKey& k) { k.batch = 2; },
      [](GemmPlanKey& k) { k.lda = 97; },
      [](GemmPlanKey& k) { k.ldb = 18; },
      [](GemmPlanKey& k) { k.ldc = 97; },
      [](GemmPlanKey& k) { k.stride_a = 1; },
      [](GemmPlanKey& k) { k.stride_b = 1; },
      [](GemmPlanKey& k) { k.stride_c = 1; },
      [](GemmPlanKey& k) { k.align_a = 4; },
      [](GemmPlanKey& k) { k.align_b = 4; },
      [](GemmPlanKey& k) { k.align_c = 4; },
      [](GemmPlanKey& k) { k.align_bias = 4; },
  };
  ASSERT_EQ(changes.size(), GemmPlanKey::kFields) << "a field without a test";
  for (size_t i = 0; i < changes.size(); ++i) {
    GemmPlanKey changed = base;
    changes[i](changed);
    EXPECT_FALSE(changed == base) << "field " << i;
    EXPECT_NE(hash(changed), hash(base)) << "field " << i;
  }
  EXPECT_TRUE(base_key() == base);
  EXPECT_EQ(hash(base_key()), hash(base));
}

TEST(GemmPlanKey, AlignmentIsTheLargestPowerOfTwoDivisorUpTo256) {
  EXPECT_EQ(gemm_alignment(nullptr), 256u);
  EXPECT_EQ(gemm_alignment(reinterpret_cast<const void*>(uintptr_t{0x10000})), 256u);
  EXPECT_EQ(gemm_alignment(reinterpret_cast<const void*>(uintptr_t{0x10100})), 256u);
  EXPECT_EQ(gemm_alignment(reinterpret_cast<const void*>(uintptr_t{0x10080})), 128u);
  EXPECT_EQ(gemm_alignment(reinterpret_cast<const void*>(uintptr_t{0x10002})), 2u);
  EXPECT_EQ(gemm_alignment(reinterpret_cast<const void*>(uintptr_t{0x10001})), 1u);
}

TEST(GemmPlanCache, MakesEachPlanOnceAndStartsOverWhenFull) {
  GemmPlanCache<int> cache(3);
  int made = 0;
  auto plan_for = [&](int64_t m) {
    GemmPlanKey k = base_key();
    k.m = m;
    return cache.get(k, [&] {
      ++made;
      return static_cast<int>(m) * 10;
    });
  };
  EXPECT_EQ(plan_for(1), 10);
  EXPECT_EQ(plan_for(2), 20);
  EXPECT_EQ(plan_for(1), 10);
  EXPECT_EQ(made, 2);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(plan_for(3), 30);
  EXPECT_EQ(made, 3);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(plan_for(4), 40);  // full: the cache starts over with this plan
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(plan_for(1), 10);  // made again
  EXPECT_EQ(made, 5);
}

}  // namespace
}  // namespace tstl
