// Naive attention scores and probabilities (see layers/attention_reference.h): double loops,
// one (b, h) per OpenMP task, double accumulation.
#include "layers/attention_reference.h"

#include <cmath>
#include <vector>

namespace tstl {

namespace {

// S (B, H, N, M) as doubles, from q and k converted to double.
std::vector<double> scores_f64(const Tensor& q, const Tensor& k, const AttentionOptions& opt, int64_t query_offset) {
  const int64_t batch = q.size(0), heads = q.size(1), n_queries = q.size(2), head_dim = q.size(3);
  const int64_t n_keys = k.size(2);
  const std::vector<double> qv = q.to_vector<double>();  // (B, H, N, d)
  const std::vector<double> kv = k.to_vector<double>();  // (B, H, M, d)
  const std::vector<double> slopes =
      opt.alibi_slopes.defined() ? opt.alibi_slopes.to_vector<double>() : std::vector<double>(heads, 0.0);  // (H)
  const std::vector<double> logn =
      opt.logn.defined() ? opt.logn.to_vector<double>() : std::vector<double>(n_queries, 1.0);  // (N)
  std::vector<double> s(static_cast<size_t>(batch * heads * n_queries * n_keys));  // (B, H, N, M)
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t bh = b * heads + h;
      for (int64_t n = 0; n < n_queries; ++n) {
        const int64_t pos = query_offset + n;
        const double* q_row = qv.data() + (bh * n_queries + n) * head_dim;
        double* s_row = s.data() + (bh * n_queries + n) * n_keys;
        for (int64_t j = 0; j < n_keys; ++j) {
          if (j > pos) {
            s_row[j] = -INFINITY;
            continue;
          }
          const double* k_row = kv.data() + (bh * n_keys + j) * head_dim;
          double dot = 0;
          for (int64_t c = 0; c < head_dim; ++c) dot += q_row[c] * k_row[c];
          s_row[j] = logn[n] * opt.scale * dot - slopes[h] * static_cast<double>(pos - j);
        }
      }
    }
  }
  return s;
}

Tensor to_tensor(const std::vector<double>& values, const Shape& shape, DType dtype) {
  Tensor t = Tensor::from_vector(values, shape);
  return dtype == DType::F64 ? t : t.to(dtype);
}

}  // namespace

Tensor attention_scores(const Tensor& q, const Tensor& k, const AttentionOptions& opt) {
  const int64_t query_offset = check_attention_inputs(q, k, nullptr, opt, "attention_scores");
  const Shape shape{q.size(0), q.size(1), q.size(2), k.size(2)};
  return to_tensor(scores_f64(q, k, opt, query_offset), shape, q.dtype()).to(q.device());
}

Tensor attention_probabilities(const Tensor& q, const Tensor& k, const AttentionOptions& opt) {
  const int64_t query_offset = check_attention_inputs(q, k, nullptr, opt, "attention_probabilities");
  const int64_t n_keys = k.size(2);
  std::vector<double> s = scores_f64(q, k, opt, query_offset);  // (B, H, N, M), becomes P
  const int64_t rows = static_cast<int64_t>(s.size()) / n_keys;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double* row = s.data() + r * n_keys;
    double row_max = -INFINITY;
    for (int64_t j = 0; j < n_keys; ++j) row_max = std::fmax(row_max, row[j]);
    double sum = 0;
    for (int64_t j = 0; j < n_keys; ++j) {
      row[j] = row[j] == -INFINITY ? 0.0 : std::exp(row[j] - row_max);
      sum += row[j];
    }
    for (int64_t j = 0; j < n_keys; ++j) row[j] /= sum;
  }
  const Shape shape{q.size(0), q.size(1), q.size(2), n_keys};
  return to_tensor(s, shape, q.dtype()).to(q.device());
}

}  // namespace tstl
