// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Value i of a stream is a pure
// function of (seed, counter i), so results do not depend on thread count or device: the CPU and
// CUDA backends call the same TSTL_HD math. A Generator hands out disjoint counter ranges.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/tensor.h"

namespace tstl {

struct Philox4 {
  uint32_t v[4];
};

TSTL_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds on counter (c0..c3) and key (k0, k1).
TSTL_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Four 32-bit words for position `index` of stream `seed`.
TSTL_HD Philox4 philox_at(uint64_t seed, uint64_t index) {
  return philox4x32(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0x6A09E667u,
                    0xBB67AE85u, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1], from 24 random bits: never 0, so log() is safe.
TSTL_HD float uniform_from_bits(uint32_t bits) {
  return (static_cast<float>(bits >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

TSTL_HD double uniform_at(uint64_t seed, uint64_t index) {
  return uniform_from_bits(philox_at(seed, index).v[0]);
}

// Standard normal for element `index` (Box-Muller on two 32-bit words of one Philox block).
TSTL_HD double normal_at(uint64_t seed, uint64_t index) {
  const Philox4 r = philox_at(seed, index);
  const double u1 = (static_cast<double>(r.v[0]) + 1.0) * (1.0 / 4294967296.0);
  const double u2 = static_cast<double>(r.v[1]) * (1.0 / 4294967296.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// A seed and a position in its stream. Each fill takes numel() counters, so consecutive fills
// are independent and the sequence is reproducible from (seed, offset) alone.
struct Generator {
  uint64_t seed = 0;
  uint64_t offset = 0;
  uint64_t take(uint64_t n) {
    const uint64_t start = offset;
    offset += n;
    return start;
  }
};

void normal_(Tensor& t, Generator& gen, double mean = 0.0, double std = 1.0);
void uniform_(Tensor& t, Generator& gen, double low = 0.0, double high = 1.0);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32, Device device = Device::CPU);

}  // namespace tstl
