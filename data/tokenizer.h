// Tokenizers behind one interface: `byte` (UTF-8 bytes 0..255, then BOS=256, EOS=257, PAD=258)
// and `spm` (a SentencePiece model, encoded and decoded by the library). Every tokenizer has an
// identity string (name, vocabulary size and, for model files, an FNV-1a 64 hash of the model's
// bytes) that token files and checkpoints store, so that mixing data, model and tokenizer is an
// error rather than silent garbage.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tstl {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;  // -1 when the model has none
  // "byte:259" or "spm:<vocab>:<fnv64 hex of the model file>".
  virtual std::string identity() const = 0;
};

// spec: "byte" or "spm:PATH" (a SentencePiece .model file).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);
// The tokenizer of a `data.tokenizer` config value, which may also name a model file without
// the "spm:" prefix.
std::unique_ptr<Tokenizer> make_tokenizer_for_config(const std::string& data_tokenizer);

// FNV-1a, 64 bits, as 16 lower-case hex digits.
std::string fnv64_hex(const std::string& bytes);

struct SpmTrainOptions {
  std::vector<std::string> inputs;      // paths as accepted by `tstl prepare` (txt, dirs, jsonl, .gz)
  int64_t vocab_size = 8000;
  std::string model_type = "bpe";       // bpe | unigram
  // identity: text kept as is (whitespace included, byte fallback for unseen characters), so
  // decode(encode(x)) == x for valid UTF-8; nmt_nfkc: SentencePiece's default (NFKC, whitespace
  // runs collapsed).
  std::string normalization = "identity";
  int64_t max_sentences = 2000000;      // lines sampled for training (SentencePiece's input_sentence_size)
  uint64_t seed = 1;
};

// Trains a SentencePiece model (unk=0, bos=1, eos=2, pad=3, byte fallback on) and writes it to
// `output`; returns the model's identity string.
std::string train_spm(const SpmTrainOptions& options, const std::string& output);

}  // namespace tstl
