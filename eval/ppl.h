// Sliding-window perplexity (Press et al. 2022) behind
// `tstl eval ppl` (docs/evaluation.md).
//
// A document of T tokens t_0..t_{T-1} has n = T - 1 predictions: input position i predicts
// t_{i+1}. For window W and stride S (1 <= S <= W): for begin = 0, S, 2S, ...:
//   end = min(begin + W, n); the model runs on the inputs [max(0, end - W), end) and only the
//   predictions at input positions [prev_end, end) are scored (the tokens (prev_end, end]);
//   prev_end = end; stop when end == n.
// Every prediction of a document is scored exactly once; S = W gives non-overlapping windows.
// PPL = exp(total NLL / total scored tokens), pooled over all documents.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "eval/inference_model.h"
#include "layers/decoder.h"

namespace tstl {

// One model call: inputs doc[start, start + length), predictions at window-relative positions
// [score_from, length) scored.
struct EvalWindow {
  int64_t doc = 0, start = 0, length = 0, score_from = 0;
};

// The windows of one document of n_tokens tokens (none when n_tokens < 2), in order.
std::vector<EvalWindow> sliding_windows(int64_t n_tokens, int64_t window, int64_t stride, int64_t doc = 0);

struct DocumentSelection {
  int64_t max_docs = 0;        // 0: all
  int64_t doc_offset = 0;      // tokens skipped at the start of each document
  int64_t max_doc_tokens = 0;  // 0: the rest of the document
};
// The documents of a split (each with its EOS) cut to [doc_offset, doc_offset + max_doc_tokens);
// documents left with fewer than 2 tokens are dropped. Throws when none is left.
std::vector<std::vector<int32_t>> select_documents(const TokenSplit& split, const DocumentSelection& selection);

struct PplResult {
  int64_t length = 0, stride = 0;
  int64_t windows = 0, tokens = 0;  // model calls, scored tokens
  double nll_sum = 0, mean_nll = 0, ppl = 0;
  std::vector<double> position_loss;    // (length) mean NLL by window position (when asked)
  std::vector<int64_t> position_count;  // (length) scored tokens by window position
};

// Pooled NLL of `docs` at window `length` and `stride` (0: = length). Windows of equal length are
// batched, up to batch_tokens tokens per call (at least one window). `base` carries the scaling;
// total_len is set to each window's length (dynamic methods scale for the window).
PplResult evaluate_ppl(const Decoder& model, const std::vector<std::vector<int32_t>>& docs, int64_t length,
                       int64_t stride, const ForwardOptions& base = {}, int64_t batch_tokens = 16384,
                       bool by_position = false);

// Where the evaluated tokens came from, as recorded in the results.
struct PplSource {
  std::string data, split;
  int64_t documents = 0;
  DocumentSelection selection;
};
// The results file of `tstl eval ppl` (docs/evaluation.md): kind "ppl", the model fields
// (write_model_fields), the source, and one entry per length.
void write_ppl_json(const std::string& path, const InferenceModel& model, const PplSource& source,
                    const std::vector<PplResult>& results);

}  // namespace tstl
