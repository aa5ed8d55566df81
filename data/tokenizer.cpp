#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/atomic_file.h"
#include "core/error.h"
#include "data/text_input.h"

namespace tstl {

std::string fnv64_hex(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  // Special ids decode to nothing; anything outside the vocabulary is an error.
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int32_t id : ids) {
      TSTL_CHECK(id >= 0 && id < 259, "byte tokenizer: id ", id, " is outside the vocabulary 0..258");
      if (id < 256) text += static_cast<char>(id);
    }
    return text;
  }
  int64_t vocab_size() const override { return 259; }
  int32_t bos_id() const override { return 256; }
  int32_t eos_id() const override { return 257; }
  int32_t pad_id() const override { return 258; }
  std::string identity() const override { return "byte:259"; }
};

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    TSTL_CHECK(in.good(), "SentencePiece model '", path, "' cannot be opened");
    std::ostringstream bytes;
    bytes << in.rdbuf();
    const std::string model = bytes.str();
    TSTL_CHECK(!model.empty(), "SentencePiece model '", path, "' is empty");
    const auto status = processor_.LoadFromSerializedProto(model);
    TSTL_CHECK(status.ok(), "'", path, "' is not a SentencePiece model: ", status.ToString());
    TSTL_CHECK(processor_.eos_id() >= 0, "SentencePiece model '", path, "' has no EOS piece; tstl needs one to end documents");
    identity_ = str("spm:", processor_.GetPieceSize(), ":", fnv64_hex(model));
  }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    TSTL_CHECK(status.ok(), "SentencePiece encode failed: ", status.ToString());
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    for (int32_t id : ids)
      TSTL_CHECK(id >= 0 && id < processor_.GetPieceSize(), "SentencePiece: id ", id, " is outside the vocabulary 0..",
                 processor_.GetPieceSize() - 1);
    std::string text;
    const auto status = processor_.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    TSTL_CHECK(status.ok(), "SentencePiece decode failed: ", status.ToString());
    return text;
  }
  int64_t vocab_size() const override { return processor_.GetPieceSize(); }
  int32_t bos_id() const override { return processor_.bos_id(); }
  int32_t eos_id() const override { return processor_.eos_id(); }
  int32_t pad_id() const override { return processor_.pad_id(); }
  std::string identity() const override { return identity_; }

 private:
  sentencepiece::SentencePieceProcessor processor_;
  std::string identity_;
};

// Feeds SentencePiece's trainer the non-blank lines of the documents, long lines cut at spaces
// (the trainer drops sentences longer than max_sentence_length).
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  static constexpr size_t kMaxLine = 4000;
  explicit LineIterator(const std::vector<std::string>& inputs) : reader_(inputs) { Next(); }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }
  void Next() override {
    for (;;) {
      while (pos_ < doc_.text.size()) {
        size_t end = doc_.text.find('\n', pos_);
        if (end == std::string::npos) end = doc_.text.size();
        if (end - pos_ > kMaxLine) {
          const size_t space = doc_.text.rfind(' ', pos_ + kMaxLine);
          end = (space != std::string::npos && space > pos_) ? space : pos_ + kMaxLine;
        }
        line_.assign(doc_.text, pos_, end - pos_);
        pos_ = end + (end < doc_.text.size() && (doc_.text[end] == '\n' || doc_.text[end] == ' ') ? 1 : 0);
        if (line_.find_first_not_of(" \t\r") != std::string::npos) return;
      }
      if (!reader_.next(doc_)) {
        done_ = true;
        return;
      }
      pos_ = 0;
    }
  }

 private:
  DocumentReader reader_;
  Document doc_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.rfind("spm:", 0) == 0 && spec.size() > 4) return std::make_unique<SpmTokenizer>(spec.substr(4));
  TSTL_FAIL("unknown tokenizer '", spec, "': expected 'byte' or 'spm:PATH' (a SentencePiece .model file)");
}

std::unique_ptr<Tokenizer> make_tokenizer_for_config(const std::string& data_tokenizer) {
  const bool spec = data_tokenizer == "byte" || data_tokenizer.rfind("spm:", 0) == 0;
  return make_tokenizer(spec ? data_tokenizer : "spm:" + data_tokenizer);
}

std::string train_spm(const SpmTrainOptions& options, const std::string& output) {
  TSTL_CHECK(options.model_type == "bpe" || options.model_type == "unigram", "tokenizer model type '",
             options.model_type, "' is not bpe or unigram");
  TSTL_CHECK(options.normalization == "identity" || options.normalization == "nmt_nfkc",
             "normalization '", options.normalization, "' is not identity or nmt_nfkc");
  // 4 special pieces and the 256 byte-fallback pieces come first.
  TSTL_CHECK(options.vocab_size > 260, "--vocab-size ", options.vocab_size,
             " is too small: a byte-fallback SentencePiece model needs more than 260 pieces");
  const bool identity = options.normalization == "identity";
  std::unordered_map<std::string, std::string> kwargs = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"normalization_rule_name", options.normalization},
      {"remove_extra_whitespaces", identity ? "false" : "true"},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      {"split_digits", "true"},
      {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"}, {"pad_id", "3"},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"hard_vocab_limit", "false"},
      {"minloglevel", "1"},
  };
  // Seeds the sentence sampling of the trainer (a process-wide setting of the library).
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(options.seed));
  LineIterator lines(options.inputs);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &lines, &model);
  TSTL_CHECK(status.ok(), "SentencePiece training failed: ", status.ToString());
  write_file_atomically(output, model);
  return make_tokenizer("spm:" + output)->identity();
}

}  // namespace tstl
