#include "data/prepare.h"

#include <chrono>
#include <cmath>
#include <set>

#include "core/error.h"
#include "data/text_input.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace tstl {

bool is_val_by_fraction(uint64_t index, double fraction) {
  const uint64_t per_million = static_cast<uint64_t>(std::llround(fraction * 1e6));
  return (index + 1) * per_million / 1000000 > index * per_million / 1000000;
}

namespace {

std::string without_extension(const std::string& name) {
  const size_t slash = name.rfind('/');
  const size_t dot = name.rfind('.');
  return dot != std::string::npos && (slash == std::string::npos || dot > slash) ? name.substr(0, dot) : name;
}

}  // namespace

PrepareSummary prepare_token_file(const PrepareOptions& options, const Tokenizer& tokenizer, std::FILE* log) {
  TSTL_CHECK(!options.output.empty(), "no --output given");
  TSTL_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "--val-fraction ", options.val_fraction,
             " is not in [0, 1)");
  TSTL_CHECK(options.max_documents >= 0, "--max-documents ", options.max_documents, " is negative");
  DocumentReader reader(options.inputs);
  TokenFileWriter writer(options.output, tokenizer, options.token_dtype);
  const std::set<std::string> val_names(options.val_documents.begin(), options.val_documents.end());
  std::set<std::string> matched;

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_report = start;
  Document doc;
  uint64_t index = 0;
  while ((options.max_documents == 0 || static_cast<int64_t>(index) < options.max_documents) && reader.next(doc)) {
    bool val;
    if (!val_names.empty()) {
      const std::string stem = without_extension(doc.name);
      val = val_names.count(doc.name) || val_names.count(stem);
      if (val) matched.insert(val_names.count(doc.name) ? doc.name : stem);
    } else {
      val = is_val_by_fraction(index, options.val_fraction);
    }
    writer.add_document(val ? "val" : "train", doc.name, tokenizer.encode(doc.text), static_cast<int64_t>(doc.text.size()));
    ++index;
    const auto now = Clock::now();
    if (log && now - last_report > std::chrono::seconds(2)) {
      last_report = now;
      const double seconds = std::chrono::duration<double>(now - start).count();
      const double done = static_cast<double>(reader.input_bytes_done()), total = static_cast<double>(reader.input_bytes_total());
      const int64_t tokens = writer.counts("train").tokens + writer.counts("val").tokens;
      std::fprintf(log, "prepare: %5.1f%% of input (%.1f / %.1f MB), %llu documents, %lld tokens, %.0f s\n",
                   total > 0 ? 100.0 * done / total : 100.0, done / 1e6, total / 1e6,
                   static_cast<unsigned long long>(index), static_cast<long long>(tokens), seconds);
      std::fflush(log);
    }
  }
  if (!val_names.empty() && matched.size() != val_names.size()) {
    std::string missing;
    for (const std::string& n : val_names)
      if (!matched.count(n)) missing += (missing.empty() ? "'" : ", '") + n + "'";
    TSTL_FAIL("--val-documents named documents that are not among the inputs: ", missing);
  }
  PrepareSummary summary;
  const auto t = writer.counts("train"), v = writer.counts("val");
  summary.train = {t.documents, t.tokens, t.text_bytes};
  summary.val = {v.documents, v.tokens, v.text_bytes};
  summary.skipped_empty = static_cast<int64_t>(reader.skipped_empty());
  summary.token_dtype = writer.token_dtype();
  TSTL_CHECK(index > 0, "the inputs hold no non-empty documents (", reader.skipped_empty(), " empty ones skipped)");
  TSTL_CHECK(summary.train.documents > 0, "no training documents: all ", index, " documents went to the validation split");
  if (log && summary.val.documents == 0)
    std::fprintf(log, "prepare: warning: the validation split is empty (%llu documents, --val-fraction %g)\n",
                 static_cast<unsigned long long>(index), options.val_fraction);
  writer.finish();
  return summary;
}

}  // namespace tstl
