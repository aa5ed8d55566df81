// An independent O(N^2) attention for the flash tests: explicit S, P and O in double loops, and
// the backward derived by hand from them (not from the flash kernel's formulas):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),
//   dQ = dS K * scale * logn,   dK = dS^T (Q * scale * logn).
// Conventions (docs/variants.md): query row n at position p = offset + n, key j visible
// iff j <= p, S[n, j] = logn[n] * scale * q_n . k_j - m_h (p - j).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tstl::testing {

struct NaiveSizes {
  int64_t batch, heads, n_queries, n_keys, head_dim;
  int64_t query_offset;  // already resolved (>= 0)
};

struct NaiveAttention {
  std::vector<double> o, dq, dk, dv;  // (B, H, N, d), (B, H, N, d), (B, H, M, d), (B, H, M, d)
  std::vector<double> p;              // (B, H, N, M)
};

// ALiBi slopes by the rule of docs/variants.md ("Variants", alibi): 2^(-8h/H) for H a power of two,
// otherwise the slopes of the largest power of two c <= H followed by every other slope of 2c.
inline std::vector<double> alibi_slopes_by_rule(int64_t heads) {
  auto power_of_two_slopes = [](int64_t n) {
    std::vector<double> s;
    for (int64_t h = 1; h <= n; ++h) s.push_back(std::pow(2.0, -8.0 * static_cast<double>(h) / static_cast<double>(n)));
    return s;
  };
  int64_t c = 1;
  while (c * 2 <= heads) c *= 2;
  std::vector<double> slopes = power_of_two_slopes(c);
  const std::vector<double> doubled = power_of_two_slopes(2 * c);
  for (int64_t i = 0; i < heads - c; ++i) slopes.push_back(doubled[static_cast<size_t>(2 * i)]);
  return slopes;
}

// slopes: (H) or empty (no ALiBi); logn: (N) or empty (1); d_o may be empty (no backward).
inline NaiveAttention naive_attention(const NaiveSizes& z, const std::vector<double>& q, const std::vector<double>& k,
                                      const std::vector<double>& v, const std::vector<double>& d_o, double scale,
                                      const std::vector<double>& slopes, const std::vector<double>& logn) {
  const int64_t N = z.n_queries, M = z.n_keys, D = z.head_dim;
  NaiveAttention r;
  r.o.assign(static_cast<size_t>(z.batch * z.heads * N * D), 0.0);
  r.dq = r.o;
  r.dk.assign(static_cast<size_t>(z.batch * z.heads * M * D), 0.0);
  r.dv = r.dk;
  r.p.assign(static_cast<size_t>(z.batch * z.heads * N * M), 0.0);
  auto at = [](std::vector<double>& x, int64_t i) -> double& { return x[static_cast<size_t>(i)]; };
  auto get = [](const std::vector<double>& x, int64_t i) { return x[static_cast<size_t>(i)]; };
  for (int64_t bh = 0; bh < z.batch * z.heads; ++bh) {
    const int64_t h = bh % z.heads;
    const int64_t qo = bh * N * D, ko = bh * M * D;
    std::vector<double> s(static_cast<size_t>(N * M)), p(static_cast<size_t>(N * M));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t pos = z.query_offset + n;
      const double factor = (logn.empty() ? 1.0 : get(logn, n)) * scale;
      double row_max = -INFINITY;
      for (int64_t j = 0; j <= pos && j < M; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < D; ++c) dot += get(q, qo + n * D + c) * get(k, ko + j * D + c);
        const double bias = slopes.empty() ? 0.0 : get(slopes, h) * static_cast<double>(pos - j);
        at(s, n * M + j) = factor * dot - bias;
        row_max = std::max(row_max, at(s, n * M + j));
      }
      double sum = 0;
      for (int64_t j = 0; j <= pos && j < M; ++j) sum += at(p, n * M + j) = std::exp(at(s, n * M + j) - row_max);
      for (int64_t j = 0; j <= pos && j < M; ++j) at(p, n * M + j) /= sum;
      for (int64_t j = 0; j < M; ++j) {
        at(r.p, bh * N * M + n * M + j) = at(p, n * M + j);
        for (int64_t c = 0; c < D; ++c) at(r.o, qo + n * D + c) += at(p, n * M + j) * get(v, ko + j * D + c);
      }
    }
    if (d_o.empty()) continue;
    for (int64_t n = 0; n < N; ++n) {
      const double factor = (logn.empty() ? 1.0 : get(logn, n)) * scale;
      std::vector<double> dp(static_cast<size_t>(M));
      double dp_dot_p = 0;
      for (int64_t j = 0; j < M; ++j) {
        for (int64_t c = 0; c < D; ++c) {
          at(r.dv, ko + j * D + c) += at(p, n * M + j) * get(d_o, qo + n * D + c);  // dV = P^T dO
          at(dp, j) += get(d_o, qo + n * D + c) * get(v, ko + j * D + c);          // dP = dO V^T
        }
        dp_dot_p += at(dp, j) * at(p, n * M + j);
      }
      for (int64_t j = 0; j < M; ++j) {
        const double ds = at(p, n * M + j) * (at(dp, j) - dp_dot_p);
        for (int64_t c = 0; c < D; ++c) {
          at(r.dq, qo + n * D + c) += ds * get(k, ko + j * D + c) * factor;
          at(r.dk, ko + j * D + c) += ds * get(q, qo + n * D + c) * factor;
        }
      }
    }
  }
  return r;
}

}  // namespace tstl::testing
