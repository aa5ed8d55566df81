// Sliding-window perplexity.
#include "eval/ppl.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include "core/autograd.h"
#include "core/json.h"
#include "core/ops.h"

namespace tstl {

std::vector<EvalWindow> sliding_windows(int64_t n_tokens, int64_t window, int64_t stride, int64_t doc) {
  TSTL_CHECK(window >= 1, "sliding_windows: the window must be >= 1, got ", window);
  TSTL_CHECK(stride >= 1 && stride <= window, "the stride must be in [1, window = ", window, "], got ", stride);
  std::vector<EvalWindow> windows;
  const int64_t n = n_tokens - 1;  // predictions
  int64_t prev_end = 0;
  for (int64_t begin = 0; n >= 1; begin += stride) {
    const int64_t end = std::min(begin + window, n);
    const int64_t start = std::max<int64_t>(0, end - window);
    windows.push_back({doc, start, end - start, prev_end - start});
    prev_end = end;
    if (end == n) break;
  }
  return windows;
}

std::vector<std::vector<int32_t>> select_documents(const TokenSplit& split, const DocumentSelection& s) {
  TSTL_CHECK(s.doc_offset >= 0 && s.max_doc_tokens >= 0 && s.max_docs >= 0,
             "--doc-offset, --max-doc-tokens and --max-docs must be >= 0");
  std::vector<std::vector<int32_t>> docs;
  for (int64_t d = 0; d < split.n_documents(); ++d) {
    if (s.max_docs > 0 && static_cast<int64_t>(docs.size()) == s.max_docs) break;
    const int64_t begin = static_cast<int64_t>(split.doc_offsets[static_cast<size_t>(d)]) + s.doc_offset;
    int64_t end = static_cast<int64_t>(split.doc_offsets[static_cast<size_t>(d) + 1]);
    if (s.max_doc_tokens > 0) end = std::min(end, begin + s.max_doc_tokens);
    if (end - begin < 2) continue;
    docs.emplace_back(split.tokens.begin() + begin, split.tokens.begin() + end);
  }
  TSTL_CHECK(!docs.empty(), "split '", split.name, "' has no document with at least 2 tokens after --doc-offset ",
             s.doc_offset, " (it has ", split.n_documents(), " documents)");
  return docs;
}

PplResult evaluate_ppl(const Decoder& model, const std::vector<std::vector<int32_t>>& docs, int64_t length,
                       int64_t stride, const ForwardOptions& base, int64_t batch_tokens, bool by_position) {
  PplResult r;
  r.length = length;
  r.stride = stride > 0 ? stride : length;
  std::map<int64_t, std::vector<EvalWindow>> by_length;  // windows grouped by their length
  for (size_t d = 0; d < docs.size(); ++d)
    for (const EvalWindow& w : sliding_windows(static_cast<int64_t>(docs[d].size()), length, r.stride,
                                               static_cast<int64_t>(d)))
      by_length[w.length].push_back(w);
  std::vector<double> position_sum(static_cast<size_t>(length), 0.0);
  r.position_count.assign(static_cast<size_t>(length), 0);
  NoGradGuard no_grad;
  for (const auto& [window_len, windows] : by_length) {
    const int64_t batch = std::max<int64_t>(1, batch_tokens / window_len);
    ForwardOptions options = base;
    options.cache = nullptr;
    options.total_len = window_len;  // dynamic methods: the table of this window's length
    for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(batch)) {
      const size_t count = std::min(windows.size() - first, static_cast<size_t>(batch));
      const int64_t rows = static_cast<int64_t>(count);
      std::vector<int32_t> ids(static_cast<size_t>(rows * window_len));      // (B, L)
      std::vector<int32_t> targets(static_cast<size_t>(rows * window_len));  // (B, L), -1 where not scored
      for (size_t b = 0; b < count; ++b) {
        const EvalWindow& w = windows[first + b];
        const std::vector<int32_t>& doc = docs[static_cast<size_t>(w.doc)];
        for (int64_t i = 0; i < window_len; ++i) {
          const size_t at = b * static_cast<size_t>(window_len) + static_cast<size_t>(i);
          ids[at] = doc[static_cast<size_t>(w.start + i)];
          targets[at] = i >= w.score_from ? doc[static_cast<size_t>(w.start + i + 1)] : -1;
        }
      }
      // On CUDA the ids go up once, the losses are computed there, and only the (B, L) losses
      // come back: one device-to-host copy per batch of windows.
      Tensor logits = model.forward(Tensor::from_vector(ids, {rows, window_len}), options);  // (B, L, V)
      // bf16 logits: CUDA's cross-entropy reads them as f32; the CPU one takes f32 (a host copy).
      if (logits.dtype() == DType::BF16 && logits.device() == Device::CPU) logits = logits.to(DType::F32);
      const std::vector<double> nll =
          cross_entropy_rows(logits, Tensor::from_vector(targets, {rows, window_len}, logits.device()), -1)
              .to_vector<double>();  // (B, L)
      for (size_t at = 0; at < nll.size(); ++at) {
        if (targets[at] < 0) continue;
        const size_t pos = at % static_cast<size_t>(window_len);
        r.nll_sum += nll[at];
        position_sum[pos] += nll[at];
        ++r.position_count[pos];
        ++r.tokens;
      }
      r.windows += rows;
    }
  }
  TSTL_CHECK(r.tokens > 0, "evaluate_ppl: no token to score");
  r.mean_nll = r.nll_sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.mean_nll);
  if (by_position) {
    r.position_loss.resize(static_cast<size_t>(length));
    for (size_t i = 0; i < position_sum.size(); ++i)
      r.position_loss[i] = r.position_count[i] > 0 ? position_sum[i] / static_cast<double>(r.position_count[i]) : NAN;
  } else {
    r.position_count.clear();
  }
  return r;
}

void write_ppl_json(const std::string& path, const InferenceModel& model, const PplSource& source,
                    const std::vector<PplResult>& results) {
  JsonWriter json;
  json.begin_object();
  json.field("kind", "ppl");
  write_model_fields(json, model);
  json.field("data", source.data);
  json.field("split", source.split);
  json.field("documents", static_cast<double>(source.documents));
  json.field("doc_offset", static_cast<double>(source.selection.doc_offset));
  json.field("max_doc_tokens", static_cast<double>(source.selection.max_doc_tokens));
  json.key("results");
  json.begin_array();
  for (const PplResult& r : results) {
    json.begin_object();
    json.field("length", static_cast<double>(r.length));
    json.field("stride", static_cast<double>(r.stride));
    json.field("windows", static_cast<double>(r.windows));
    json.field("tokens", static_cast<double>(r.tokens));
    json.field("nll", r.mean_nll);
    json.field("ppl", r.ppl);
    if (!r.position_loss.empty()) {
      json.key("position_loss");
      json.number_array(r.position_loss);
    }
    json.end_object();
  }
  json.end_array();
  json.end_object();
  write_text_file(path, json.str() + "\n");
}

}  // namespace tstl
