// Hugging Face `tokenizer.json` files with a byte-level BPE model (GPT-2, GPT-NeoX, and the
// tokenizers library's ByteLevelBPETokenizer), encoded and decoded as the `tokenizers` library
// does for these files (tests/data compares them on many texts):
//   1. added tokens ("added_tokens") are cut out of the text first, leftmost-longest;
//   2. the rest is normalized ("normalizer": null or NFC, via ICU);
//   3. pre-tokenized by the ByteLevel pre-tokenizer: split by the GPT-2 pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (ICU regex, \s as Unicode White_Space), each piece's UTF-8 bytes mapped to GPT-2's
//      byte-to-character table (printable bytes stay, the others become U+0100 onwards);
//      add_prefix_space puts a space before the text;
//   4. each piece merged by BPE: repeatedly the adjacent pair of lowest merge rank, all its
//      occurrences left to right, until no pair has a rank; symbols are looked up in "vocab".
// Decoding maps the characters back to bytes; special added tokens decode to nothing.
// Anything else in the file (another model type, dropout, other pre-tokenizers or
// normalizers) is refused naming the key, rather than encoded differently from the library.
// Special ids: EOS is the added special token <|endoftext|>, </s> or <|end_of_text|> (the first
// present), BOS <|startoftext|>, <s> or <|begin_of_text|>, PAD <|padding|> or <pad> (-1 when absent).
// Identity: "hf:<vocab size>:<FNV-1a 64 of the file, hex>".
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace tstl {

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& tokenizer_json_path);

}  // namespace tstl
