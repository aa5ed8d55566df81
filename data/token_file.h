// The HDF5 token file (format "tstl-tokens", version 1):
//   /                 attrs format="tstl-tokens", format_version=1, vocab_size (i64),
//                           tokenizer (identity string), eos_id, bos_id, pad_id (i64)
//   /train, /val      groups, same attrs vocab_size, tokenizer, eos_id, plus n_documents,
//                     n_tokens, text_bytes (i64: UTF-8 bytes of the documents' text)
//     tokens          (n_tokens,)     uint16 when vocab_size <= 65536, else uint32; each
//                                     document's tokens followed by eos_id
//     doc_offsets     (n_docs + 1,)   uint64; document d is tokens[doc_offsets[d], doc_offsets[d+1])
//                                     (its EOS included); doc_offsets[0] = 0, last = n_tokens
//     doc_names       (n_docs,)       variable-length UTF-8 strings
// Datasets are chunked and extendible: the writer appends in chunks, so memory stays bounded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/hdf5.h"

namespace tstl {

class Tokenizer;

inline constexpr const char* kTokenFileFormat = "tstl-tokens";
inline constexpr int64_t kTokenFileVersion = 1;

struct TokenSplit {
  std::string name;                   // "train" or "val"
  std::vector<int32_t> tokens;        // (n_tokens,)
  std::vector<uint64_t> doc_offsets;  // (n_docs + 1,)
  std::vector<std::string> doc_names; // (n_docs,)
  int64_t text_bytes = 0;
  int64_t n_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t n_documents() const { return static_cast<int64_t>(doc_names.size()); }
};

// Streams documents into a token file at `path`: writes `path`.tmp and renames it on finish();
// destroyed without finish(), it removes the temporary file.
class TokenFileWriter {
 public:
  // token_dtype: "auto" (uint16 when vocab_size <= 65536, else uint32), "uint16" (an error when
  // the vocabulary does not fit) or "uint32".
  TokenFileWriter(const std::string& path, const Tokenizer& tokenizer, const std::string& token_dtype = "auto");
  ~TokenFileWriter();
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;
  // Appends `tokens` and then EOS to split "train" or "val".
  void add_document(const std::string& split, const std::string& name, const std::vector<int32_t>& tokens,
                    int64_t text_bytes);
  void finish();
  // Per split: documents, tokens (EOS included) and text bytes written so far.
  struct Counts {
    int64_t documents = 0, tokens = 0, text_bytes = 0;
  };
  Counts counts(const std::string& split) const;
  const char* token_dtype() const { return token_bytes_ == 2 ? "uint16" : "uint32"; }

 private:
  struct Split;
  Split& split(const std::string& name);
  std::string path_, tmp_path_;
  int64_t vocab_size_;
  int32_t eos_id_;
  int token_bytes_;
  h5::Handle file_;
  std::vector<std::unique_ptr<Split>> splits_;
  bool finished_ = false;
};

class TokenFile {
 public:
  // Validates the file (HDF5, format name and version, attributes); splits are read on demand.
  void open(const std::string& path);
  static TokenFile open_file(const std::string& path) {
    TokenFile f;
    f.open(path);
    return f;
  }
  const std::string& path() const { return path_; }
  int64_t vocab_size() const { return vocab_size_; }
  const std::string& tokenizer_identity() const { return tokenizer_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool has_split(const std::string& name) const;
  // Loads a split fully ("train" or "val"); throws naming the file when it is missing or malformed.
  TokenSplit split(const std::string& name) const;

 private:
  std::string path_;
  int64_t vocab_size_ = 0;
  std::string tokenizer_;
  int32_t eos_id_ = -1, bos_id_ = -1, pad_id_ = -1;
};

// The tokenizer that data.tokenizer names, for this file: "external:NAME" (ids prepared by another
// toolkit) takes the file's vocabulary size and special ids; any other spec is read as
// make_tokenizer_for_config() reads it. check_tokenizer_matches() still applies.
std::unique_ptr<Tokenizer> tokenizer_for_file(const std::string& spec, const TokenFile& file);

// Throws when the file was written with another tokenizer, naming both identities.
void check_tokenizer_matches(const TokenFile& file, const Tokenizer& tokenizer);

}  // namespace tstl
