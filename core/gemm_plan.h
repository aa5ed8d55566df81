// The cache of cuBLASLt algorithm choices (core/matmul_cuda.cu), free of CUDA so that it is
// unit-tested on the CPU (tests/core/test_gemm_plan.cpp).
//
// cublasLtMatmulAlgoGetHeuristic costs far more than a small matmul, and a training step repeats
// the same few products, so its answer is kept per problem: everything the heuristic sees is in
// the key (device, data and compute types, transposes, shape, leading dimensions, batch strides,
// epilogue, and the alignment of every pointer, since an algorithm chosen for 256-byte aligned
// operands may not run on less aligned ones). The cache is bounded: evaluation and generation
// meet a new sequence length at every step, so when it holds `capacity` plans it starts over.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace tstl {

struct GemmPlanKey {
  int device = 0;
  int ab_type = 0, c_type = 0, compute_type = 0;  // cudaDataType_t, cudaDataType_t, cublasComputeType_t
  int epilogue = 0;                               // cublasLtEpilogue_t
  bool transpose_a = false, transpose_b = false;  // of cuBLASLt's (column-major) A and B
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  uint32_t align_a = 0, align_b = 0, align_c = 0, align_bias = 0;  // bytes, see gemm_alignment

  static constexpr size_t kFields = 21;
  std::array<int64_t, kFields> fields() const {
    return {device,   ab_type,  c_type,   compute_type, epilogue, transpose_a, transpose_b,
            m,        n,        k,        batch,        lda,      ldb,         ldc,
            stride_a, stride_b, stride_c, align_a,      align_b,  align_c,     align_bias};
  }
  bool operator==(const GemmPlanKey& other) const { return fields() == other.fields(); }
};

struct GemmPlanKeyHash {
  size_t operator()(const GemmPlanKey& key) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields' bytes
    for (int64_t field : key.fields()) {
      for (int byte = 0; byte < 8; ++byte) {
        h ^= (static_cast<uint64_t>(field) >> (8 * byte)) & 0xffu;
        h *= 1099511628211ull;
      }
    }
    return static_cast<size_t>(h);
  }
};

// The largest power of two (at most 256, cuBLASLt's default requirement) dividing the address;
// 256 for no pointer (an operand the call does not use).
inline uint32_t gemm_alignment(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  if (address == 0) return 256;
  uint32_t alignment = 1;
  while (alignment < 256 && address % (2 * alignment) == 0) alignment *= 2;
  return alignment;
}

template <class Plan>
class GemmPlanCache {
 public:
  explicit GemmPlanCache(size_t capacity) : capacity_(capacity) {}

  // The plan for `key`, made by `make` when the cache has none (make runs under the lock, so two
  // threads never make the same plan twice).
  Plan get(const GemmPlanKey& key, const std::function<Plan()>& make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    if (plans_.size() >= capacity_) plans_.clear();
    return plans_.emplace(key, make()).first->second;
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return plans_.size();
  }

 private:
  size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<GemmPlanKey, Plan, GemmPlanKeyHash> plans_;
};

}  // namespace tstl
