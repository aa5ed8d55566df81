#include "data/hf_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace tstl {

namespace {

// GPT-2's reversible map from bytes to printable characters: '!'..'~', U+00A1..U+00AC and
// U+00AE..U+00FF stand for themselves; the remaining 68 bytes take U+0100 onwards in byte order.
struct ByteTable {
  std::string byte_to_char[256];
  std::unordered_map<std::string, unsigned char> char_to_byte;
  ByteTable() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(byte_to_char[b], printable ? static_cast<uint32_t>(b) : next++);
      char_to_byte[byte_to_char[b]] = static_cast<unsigned char>(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

// Splits a UTF-8 string into its characters.
std::vector<std::string> utf8_chars(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TSTL_CHECK(in.good(), "tokenizer file '", path, "' cannot be opened");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
};

class HfByteLevelBpe final : public Tokenizer {
 public:
  explicit HfByteLevelBpe(const std::string& path) : path_(path) {
    const std::string text = read_all(path);
    const JsonValue root = parse_json(text, path);
    TSTL_CHECK(root.type == JsonValue::Type::Object, "'", path, "' is not a tokenizer.json (not a JSON object)");
    read_model(root);
    read_added_tokens(root);
    read_normalizer(root);
    read_pre_tokenizer(root);
    for (const auto& [piece, id] : vocab_) vocab_size_ = std::max<int64_t>(vocab_size_, id + 1);
    for (const AddedToken& t : added_) vocab_size_ = std::max<int64_t>(vocab_size_, t.id + 1);
    id_to_piece_.assign(vocab_size_, "");
    for (const auto& [piece, id] : vocab_) id_to_piece_[id] = piece;
    eos_ = special_id({"<|endoftext|>", "</s>", "<|end_of_text|>"});
    TSTL_CHECK(eos_ >= 0, "'", path, "' has no end-of-text token (an added special token <|endoftext|>, </s> or "
               "<|end_of_text|>); tstl ends documents with it");
    bos_ = special_id({"<|startoftext|>", "<s>", "<|begin_of_text|>"});
    pad_ = special_id({"<|padding|>", "<pad>"});
    identity_ = str("hf:", vocab_size_, ":", fnv64_hex(text));
    UErrorCode status = U_ZERO_ERROR;
    pattern_.reset(icu::RegexPattern::compile(
        icu::UnicodeString::fromUTF8("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
                                     "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+"),
        0, status));
    TSTL_CHECK(U_SUCCESS(status), "ICU cannot compile the byte-level pattern: ", u_errorName(status));
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    size_t start = 0;
    // Added tokens first: at each position the longest one that matches.
    for (size_t i = 0; i < text.size();) {
      const AddedToken* match = nullptr;
      for (const AddedToken& t : added_)
        if ((!match || t.content.size() > match->content.size()) && text.compare(i, t.content.size(), t.content) == 0)
          match = &t;
      if (!match) {
        ++i;
        continue;
      }
      encode_segment(text.substr(start, i - start), ids);
      ids.push_back(match->id);
      i += match->content.size();
      start = i;
    }
    encode_segment(text.substr(start), ids);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string chars, out;
    const auto& table = byte_table();
    for (int32_t id : ids) {
      TSTL_CHECK(id >= 0 && id < vocab_size_, "tokenizer '", path_, "': id ", id, " is outside the vocabulary 0..", vocab_size_ - 1);
      const AddedToken* added = nullptr;
      for (const AddedToken& t : added_)
        if (t.id == id) added = &t;
      if (added && added->special) continue;
      if (added) {
        out += bytes_of(chars, table) + added->content;
        chars.clear();
        continue;
      }
      chars += id_to_piece_[id];
    }
    return out + bytes_of(chars, table);
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  std::string identity() const override { return identity_; }

 private:
  static std::string bytes_of(const std::string& chars, const ByteTable& table) {
    std::string out;
    for (const std::string& c : utf8_chars(chars)) {
      const auto it = table.char_to_byte.find(c);
      out += it != table.char_to_byte.end() ? std::string(1, static_cast<char>(it->second)) : c;
    }
    return out;
  }

  void read_model(const JsonValue& root) {
    const JsonValue* model = root.find("model");
    TSTL_CHECK(model && model->type == JsonValue::Type::Object, "'", path_, "' has no \"model\" object");
    const JsonValue* type = model->find("type");
    TSTL_CHECK(type && type->string == "BPE", "'", path_, "': model type '", type ? type->string : "?",
               "' is not BPE; tstl reads byte-level BPE tokenizer.json files");
    for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges", "byte_fallback"}) {
      const JsonValue* v = model->find(key);
      TSTL_CHECK(!v || v->type == JsonValue::Type::Null || (v->type == JsonValue::Type::String && v->string.empty()) ||
                     (v->type == JsonValue::Type::Bool && !v->boolean),
                 "'", path_, "': model.", key, " is set; tstl's reader supports only plain byte-level BPE");
    }
    const JsonValue* vocab = model->find("vocab");
    TSTL_CHECK(vocab && vocab->type == JsonValue::Type::Object, "'", path_, "': model.vocab is missing or not an object");
    for (const auto& [piece, id] : vocab->object) {
      TSTL_CHECK(id.type == JsonValue::Type::Number && id.number >= 0 && id.number < INT32_MAX, "'", path_,
                 "': model.vocab[\"", piece, "\"] is not a token id");
      vocab_[piece] = static_cast<int32_t>(id.number);
    }
    const JsonValue& merges = model->get_array("merges");
    for (size_t rank = 0; rank < merges.array.size(); ++rank) {
      const JsonValue& m = merges.array[rank];
      std::string key;
      if (m.type == JsonValue::Type::String) {
        key = m.string;  // "a b"
      } else {
        TSTL_CHECK(m.type == JsonValue::Type::Array && m.array.size() == 2, "'", path_, "': merge ", rank,
                   " is neither \"a b\" nor [\"a\", \"b\"]");
        key = m.array[0].string + " " + m.array[1].string;
      }
      TSTL_CHECK(key.find(' ') != std::string::npos, "'", path_, "': merge ", rank, " '", key, "' has no space");
      merge_rank_.emplace(key, static_cast<int>(rank));
    }
  }

  void read_added_tokens(const JsonValue& root) {
    const JsonValue* added = root.find("added_tokens");
    if (!added || added->type == JsonValue::Type::Null) return;
    for (const JsonValue& t : added->array) {
      const JsonValue* special = t.find("special");
      added_.push_back({t.get_string("content"), static_cast<int32_t>(t.get_number("id")), special && special->boolean});
      TSTL_CHECK(!added_.back().content.empty(), "'", path_, "': an added token has empty content");
      for (const char* key : {"lstrip", "rstrip", "single_word"}) {
        const JsonValue* v = t.find(key);
        TSTL_CHECK(!v || !v->boolean, "'", path_, "': added token '", added_.back().content, "' has ", key,
                   " = true, which tstl's reader does not implement");
      }
    }
  }

  void read_normalizer(const JsonValue& root) {
    const JsonValue* n = root.find("normalizer");
    if (!n || n->type == JsonValue::Type::Null) return;
    const std::string type = n->get_string("type");
    TSTL_CHECK(type == "NFC", "'", path_, "': normalizer '", type, "' is not supported (null or NFC)");
    UErrorCode status = U_ZERO_ERROR;
    nfc_ = icu::Normalizer2::getNFCInstance(status);
    TSTL_CHECK(U_SUCCESS(status), "ICU has no NFC normalizer: ", u_errorName(status));
  }

  void read_pre_tokenizer(const JsonValue& root) {
    const JsonValue* p = root.find("pre_tokenizer");
    TSTL_CHECK(p && p->type == JsonValue::Type::Object && p->get_string("type") == "ByteLevel", "'", path_,
               "': the pre_tokenizer is not ByteLevel; tstl reads byte-level BPE tokenizer.json files");
    const JsonValue* use_regex = p->find("use_regex");
    TSTL_CHECK(!use_regex || use_regex->boolean, "'", path_, "': ByteLevel use_regex = false is not supported");
    const JsonValue* prefix = p->find("add_prefix_space");
    add_prefix_space_ = prefix && prefix->boolean;
  }

  int32_t special_id(std::initializer_list<const char*> names) const {
    for (const char* name : names)
      for (const AddedToken& t : added_)
        if (t.special && t.content == name) return t.id;
    return -1;
  }

  // Normalize, pre-tokenize and BPE one stretch of text without added tokens.
  void encode_segment(const std::string& segment, std::vector<int32_t>& ids) const {
    if (segment.empty()) return;
    icu::UnicodeString text = icu::UnicodeString::fromUTF8(segment);
    UErrorCode status = U_ZERO_ERROR;
    if (nfc_) text = nfc_->normalize(text, status);
    TSTL_CHECK(U_SUCCESS(status), "ICU NFC normalization failed: ", u_errorName(status));
    if (add_prefix_space_ && !text.startsWith(icu::UnicodeString(" "))) text.insert(0, icu::UnicodeString(" "));
    std::unique_ptr<icu::RegexMatcher> matcher(pattern_->matcher(text, status));
    TSTL_CHECK(U_SUCCESS(status), "ICU regex matcher: ", u_errorName(status));
    const auto& table = byte_table();
    while (matcher->find(status) && U_SUCCESS(status)) {
      std::string piece;
      text.tempSubStringBetween(matcher->start(status), matcher->end(status)).toUTF8String(piece);
      std::vector<std::string> symbols;
      for (unsigned char b : piece) symbols.push_back(table.byte_to_char[b]);
      bpe(symbols);
      for (const std::string& s : symbols) {
        const auto it = vocab_.find(s);
        TSTL_CHECK(it != vocab_.end(), "tokenizer '", path_, "': the piece '", s, "' is not in the vocabulary (and the "
                   "model has no unk token)");
        ids.push_back(it->second);
      }
    }
    TSTL_CHECK(U_SUCCESS(status), "ICU regex: ", u_errorName(status));
  }

  void bpe(std::vector<std::string>& symbols) const {
    while (symbols.size() > 1) {
      int best = INT_MAX;
      size_t best_at = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const auto it = merge_rank_.find(symbols[i] + " " + symbols[i + 1]);
        if (it != merge_rank_.end() && it->second < best) best = it->second, best_at = i;
      }
      if (best == INT_MAX) return;
      const std::string left = symbols[best_at], right = symbols[best_at + 1];
      std::vector<std::string> merged;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          merged.push_back(left + right);
          ++i;
        } else {
          merged.push_back(symbols[i]);
        }
      }
      symbols.swap(merged);
    }
  }

  std::string path_, identity_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int> merge_rank_;
  std::vector<std::string> id_to_piece_;
  std::vector<AddedToken> added_;
  const icu::Normalizer2* nfc_ = nullptr;
  bool add_prefix_space_ = false;
  std::unique_ptr<icu::RegexPattern> pattern_;
  int64_t vocab_size_ = 0;
  int32_t eos_ = -1, bos_ = -1, pad_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& tokenizer_json_path) {
  return std::make_unique<HfByteLevelBpe>(tokenizer_json_path);
}

}  // namespace tstl
