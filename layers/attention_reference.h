// Naive attention, for analysis (`tstl eval attention`: per-head attention maps) and for tests:
// the full (B, H, N, M) matrices that flash_attention (layers/flash_attention.h) never builds.
// The conventions are flash_attention's: query row n at position p = query_offset + n (default
// M - N), key j visible iff j <= p, S[n, j] = logn[n] * scale * (q_n . k_j) - m_h * (p - j).
// Memory O(B H N M); not differentiable (no autograd node). Accumulates in double; the result
// has q's dtype.
#pragma once

#include "layers/flash_attention.h"

namespace tstl {

// q (B, H, N, d), k (B, H, M, d) -> S (B, H, N, M), -inf where the key is masked.
Tensor attention_scores(const Tensor& q, const Tensor& k, const AttentionOptions& opt);

// q (B, H, N, d), k (B, H, M, d) -> P = softmax(S) over keys (B, H, N, M), 0 where masked.
Tensor attention_probabilities(const Tensor& q, const Tensor& k, const AttentionOptions& opt);

}  // namespace tstl
