// Token streams tokenized by another toolkit, converted into a tstl token file (data/token_file.h)
// without re-tokenizing, streaming: the indexes are read in blocks and one document is in memory
// at a time, so memory does not grow with the corpus.
//
// format "megatron": a Megatron-LM / GPT-NeoX indexed dataset, PREFIX.idx + PREFIX.bin.
//   PREFIX.idx, little-endian:
//     magic "MMIDIDX\0\0" (9 bytes), version u64 = 1, dtype code u8,
//     sequence count S u64, document-index count D u64,
//     sequence lengths   i32 x S   (tokens per sequence)
//     sequence pointers  i64 x S   (byte offset of each sequence in PREFIX.bin)
//     document indices   i64 x D   (document d = sequences [doc[d], doc[d+1]); doc[0] = 0, doc[D-1] = S)
//     [sequence modes    i8 x S]   (Megatron-LM's multimodal datasets; ignored)
//   dtype codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16 (6 and 7 are floating
//   point and hold no token ids). PREFIX.bin: the sequences' tokens in that dtype.
// format "tokens": one flat stream of token ids, documents ended by the EOS id: a 1-d .npy
//   (descr <u2, <u4, <i4, <i8, |u1; C order) or a raw little-endian file of `raw_dtype`.
//
// Documents: a document's trailing EOS (as GPT-NeoX's --append-eod writes it) is dropped and the
// token file's EOS appended, so every document ends with exactly one EOS either way; documents
// that are empty (or only an EOS) are skipped and counted. Names: "<input file name>:<index>".
// The validation split and --max-documents follow `tstl prepare` for text (data/prepare.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "data/prepare.h"

namespace tstl {

class Tokenizer;

struct ExternalPrepareOptions {
  std::string format;                // "megatron" | "tokens"
  std::string input;                 // PREFIX (megatron: PREFIX.idx and PREFIX.bin) or the token file
  std::string raw_dtype = "uint16";  // tokens format, raw files (not .npy): uint16 | uint32
  std::string output;
  double val_fraction = 0.05;
  int64_t max_documents = 0;         // 0: all
  std::string token_dtype = "auto";  // of the output: auto | uint16 | uint32
};

// `tokenizer` gives the vocabulary size (every id must be below it), the EOS id and the identity
// recorded in the file (make_external_tokenizer() for external:NAME). `log`: progress, or nullptr.
PrepareSummary prepare_external_tokens(const ExternalPrepareOptions& options, const Tokenizer& tokenizer,
                                       std::FILE* log);

}  // namespace tstl
