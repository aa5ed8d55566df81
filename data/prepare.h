// `tstl prepare`: tokenizes documents into an HDF5 token file (layout in data/token_file.h),
// streaming: one document in memory at a time, tokens appended to the file in chunks.
//
// Validation split, deterministic and independent of the number of documents:
//   --val-fraction F: document i (0-based, in input order) goes to val when
//     floor((i+1) F) > floor(i F), with F rounded to 6 decimals and computed in integers, so
//     floor(n F) of the first n documents are val, spread evenly (F = 0.1: documents 9, 19, ...);
//   --val-documents NAME...: exactly the named documents (a document's name, or its name without
//     the extension, e.g. "1790_george_washington_n"); a name that matches nothing is an error.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tstl {

class Tokenizer;

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string output;
  double val_fraction = 0.05;             // used when val_documents is empty
  std::vector<std::string> val_documents;
  int64_t max_documents = 0;              // 0: all
  std::string token_dtype = "auto";       // auto | uint16 | uint32
};

struct PrepareSplitSummary {
  int64_t documents = 0, tokens = 0, text_bytes = 0;
};

struct PrepareSummary {
  PrepareSplitSummary train, val;
  int64_t skipped_empty = 0;
  std::string token_dtype;
};

// `log` receives progress lines (large inputs only) and warnings; nullptr silences them.
PrepareSummary prepare_token_file(const PrepareOptions& options, const Tokenizer& tokenizer, std::FILE* log);

// True when document `index` goes to val under --val-fraction `fraction`.
bool is_val_by_fraction(uint64_t index, double fraction);

}  // namespace tstl
