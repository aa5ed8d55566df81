#include "data/megatron_input.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/error.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace tstl {

namespace {

// How token ids are stored: element width in bytes and signedness (all little-endian).
struct TokenEncoding {
  int bytes = 2;
  bool is_signed = false;
  const char* name = "uint16";
};

// A read-only file with positioned reads that name the file and the offset on failure.
class BinaryInput {
 public:
  explicit BinaryInput(const std::string& path) : path_(path) {
    TSTL_CHECK(std::filesystem::is_regular_file(path), "'", path, "' does not exist or is not a file");
    size_ = std::filesystem::file_size(path);
    file_ = std::fopen(path.c_str(), "rb");
    TSTL_CHECK(file_ != nullptr, "cannot open '", path, "': ", std::strerror(errno));
  }
  ~BinaryInput() {
    if (file_) std::fclose(file_);
  }
  BinaryInput(const BinaryInput&) = delete;
  BinaryInput& operator=(const BinaryInput&) = delete;
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  void read_at(uint64_t offset, void* out, uint64_t n, const char* what) {
    TSTL_CHECK(offset <= size_ && n <= size_ - offset, "'", path_, "': ", what, " at byte ", offset, " (", n,
               " bytes) runs past the end of the file (", size_, " bytes): the file is truncated or not this format");
    if (n == 0) return;
    TSTL_CHECK(std::fseek(file_, static_cast<long>(offset), SEEK_SET) == 0 && std::fread(out, 1, n, file_) == n,
               "'", path_, "': reading ", what, " at byte ", offset, " failed: ", std::strerror(errno));
  }

 private:
  std::string path_;
  uint64_t size_ = 0;
  std::FILE* file_ = nullptr;
};

// Little-endian integer of `bytes` bytes at p, sign-extended when is_signed.
int64_t load_le(const unsigned char* p, int bytes, bool is_signed) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  if (is_signed && bytes < 8 && (v >> (8 * bytes - 1)) & 1) v |= ~uint64_t{0} << (8 * bytes);
  return static_cast<int64_t>(v);
}

// Reads consecutive little-endian integers of one width from `begin` on, a block at a time.
class ArrayCursor {
 public:
  ArrayCursor(BinaryInput& file, uint64_t begin, uint64_t count, int bytes, bool is_signed, const char* what)
      : file_(file), begin_(begin), count_(count), bytes_(bytes), signed_(is_signed), what_(what) {}
  int64_t next() {
    TSTL_CHECK(index_ < count_, "'", file_.path(), "': read past the end of the ", what_);
    if (index_ == block_end_) {
      const uint64_t n = std::min<uint64_t>(kBlock, count_ - index_);
      buffer_.resize(n * bytes_);
      file_.read_at(begin_ + index_ * bytes_, buffer_.data(), n * bytes_, what_);
      block_begin_ = index_;
      block_end_ = index_ + n;
    }
    return load_le(buffer_.data() + (index_++ - block_begin_) * bytes_, bytes_, signed_);
  }

 private:
  static constexpr uint64_t kBlock = 1 << 16;
  BinaryInput& file_;
  uint64_t begin_, count_;
  int bytes_;
  bool signed_;
  const char* what_;
  uint64_t index_ = 0, block_begin_ = 0, block_end_ = 0;
  std::vector<unsigned char> buffer_;
};

// Appends n token ids of `enc` read from `file` at `offset` to `out`, each checked to be a valid id.
void read_tokens(BinaryInput& file, uint64_t offset, uint64_t n, const TokenEncoding& enc, int64_t vocab_size,
                 std::vector<int32_t>& out, std::vector<unsigned char>& scratch) {
  scratch.resize(n * enc.bytes);
  file.read_at(offset, scratch.data(), n * enc.bytes, "tokens");
  for (uint64_t i = 0; i < n; ++i) {
    const int64_t id = load_le(scratch.data() + i * enc.bytes, enc.bytes, enc.is_signed);
    TSTL_CHECK(id >= 0 && id < vocab_size, "'", file.path(), "': token id ", id, " at byte ", offset + i * enc.bytes,
               " is outside the vocabulary of ", vocab_size, " (set the vocabulary size the data was tokenized with)");
    out.push_back(static_cast<int32_t>(id));
  }
}

// Everything after the reader: EOS handling, the split, the limits, progress.
class DocumentSink {
 public:
  DocumentSink(const ExternalPrepareOptions& options, const Tokenizer& tokenizer, std::FILE* log)
      : options_(options), writer_(options.output, tokenizer, options.token_dtype), eos_(tokenizer.eos_id()), log_(log),
        start_(Clock::now()), last_report_(start_) {
    TSTL_CHECK(eos_ >= 0, "tokenizer '", tokenizer.identity(), "' has no EOS id; the token file ends documents with one");
  }
  bool full() const { return options_.max_documents > 0 && static_cast<int64_t>(index_) >= options_.max_documents; }
  // `tokens` may be modified (its trailing EOS is dropped). `done` and `total`: progress in
  // units of the input (documents or tokens).
  void add(const std::string& name, std::vector<int32_t>& tokens, double done, double total) {
    if (!tokens.empty() && tokens.back() == eos_) tokens.pop_back();
    if (tokens.empty()) {
      ++skipped_empty_;
      return;
    }
    const bool val = is_val_by_fraction(index_, options_.val_fraction);
    writer_.add_document(val ? "val" : "train", name, tokens, 0);
    ++index_;
    const auto now = Clock::now();
    if (log_ && now - last_report_ > std::chrono::seconds(2)) {
      last_report_ = now;
      const int64_t written = writer_.counts("train").tokens + writer_.counts("val").tokens;
      std::fprintf(log_, "prepare: %5.1f%% of input, %llu documents, %lld tokens, %.0f s\n",
                   total > 0 ? 100.0 * done / total : 100.0, static_cast<unsigned long long>(index_),
                   static_cast<long long>(written), std::chrono::duration<double>(now - start_).count());
      std::fflush(log_);
    }
  }
  PrepareSummary finish() {
    PrepareSummary s;
    const auto t = writer_.counts("train"), v = writer_.counts("val");
    s.train = {t.documents, t.tokens, 0};
    s.val = {v.documents, v.tokens, 0};
    s.skipped_empty = static_cast<int64_t>(skipped_empty_);
    s.token_dtype = writer_.token_dtype();
    TSTL_CHECK(index_ > 0, "'", options_.input, "' holds no non-empty documents (", skipped_empty_, " empty ones skipped)");
    TSTL_CHECK(s.train.documents > 0, "no training documents: all ", index_, " documents went to the validation split");
    if (log_ && s.val.documents == 0)
      std::fprintf(log_, "prepare: warning: the validation split is empty (%llu documents, --val-fraction %g)\n",
                   static_cast<unsigned long long>(index_), options_.val_fraction);
    writer_.finish();
    return s;
  }

 private:
  using Clock = std::chrono::steady_clock;
  const ExternalPrepareOptions& options_;
  TokenFileWriter writer_;
  int32_t eos_;
  std::FILE* log_;
  uint64_t index_ = 0, skipped_empty_ = 0;
  Clock::time_point start_, last_report_;
};

std::string file_name(const std::string& path) { return std::filesystem::path(path).filename().string(); }

// ---- Megatron / GPT-NeoX indexed dataset ----------------------------------------------------

TokenEncoding megatron_encoding(int code, const std::string& idx_path) {
  switch (code) {
    case 1: return {1, false, "uint8"};
    case 2: return {1, true, "int8"};
    case 3: return {2, true, "int16"};
    case 4: return {4, true, "int32"};
    case 5: return {8, true, "int64"};
    case 8: return {2, false, "uint16"};
    case 6:
    case 7: TSTL_FAIL("'", idx_path, "': dtype code ", code, " is a floating-point type, which holds no token ids");
    default: TSTL_FAIL("'", idx_path, "': unknown dtype code ", code, " (expected 1-5 or 8: uint8, int8, int16, int32, int64, uint16)");
  }
}

void convert_megatron(const std::string& prefix, int64_t vocab_size, DocumentSink& sink) {
  BinaryInput idx(prefix + ".idx"), bin(prefix + ".bin");
  const std::string& where = idx.path();
  constexpr uint64_t kHeader = 9 + 8 + 1 + 8 + 8;
  unsigned char header[kHeader];
  TSTL_CHECK(idx.size() >= kHeader, "'", where, "' has ", idx.size(), " bytes, fewer than the ", kHeader,
             "-byte MMIDIDX header: it is not a Megatron index");
  idx.read_at(0, header, kHeader, "header");
  TSTL_CHECK(std::memcmp(header, "MMIDIDX\0\0", 9) == 0, "'", where,
             "' does not start with the MMIDIDX magic: it is not a Megatron/GPT-NeoX mmap index (the older "
             "TNTIDX 'cached' format is not supported)");
  const int64_t version = load_le(header + 9, 8, false);
  TSTL_CHECK(version == 1, "'", where, "' has index version ", version, "; the MMIDIDX format defines version 1");
  const TokenEncoding enc = megatron_encoding(header[17], where);
  const uint64_t n_seq = static_cast<uint64_t>(load_le(header + 18, 8, false));
  const uint64_t n_doc_idx = static_cast<uint64_t>(load_le(header + 26, 8, false));
  TSTL_CHECK(n_doc_idx >= 1, "'", where, "' has an empty document index (it holds at least the leading 0)");
  const uint64_t arrays = n_seq * (4 + 8) + n_doc_idx * 8;
  TSTL_CHECK(n_seq < (uint64_t{1} << 56) && n_doc_idx < (uint64_t{1} << 56) &&
                 (idx.size() == kHeader + arrays || idx.size() == kHeader + arrays + n_seq),
             "'", where, "' has ", idx.size(), " bytes, but its header (", n_seq, " sequences, ", n_doc_idx,
             " document indices) implies ", kHeader + arrays, " (or ", kHeader + arrays + n_seq,
             " with sequence modes): the index is truncated or corrupt");
  ArrayCursor lengths(idx, kHeader, n_seq, 4, true, "sequence lengths");
  ArrayCursor pointers(idx, kHeader + n_seq * 4, n_seq, 8, true, "sequence pointers");
  ArrayCursor documents(idx, kHeader + n_seq * 12, n_doc_idx, 8, true, "document indices");
  const std::string name = file_name(prefix);
  int64_t first = documents.next();
  TSTL_CHECK(first == 0, "'", where, "': the document indices start at ", first, ", not 0");
  uint64_t seq = 0;
  std::vector<int32_t> tokens;
  std::vector<unsigned char> scratch;
  for (uint64_t d = 0; d + 1 < n_doc_idx && !sink.full(); ++d) {
    const int64_t end = documents.next();
    TSTL_CHECK(end >= first && static_cast<uint64_t>(end) <= n_seq, "'", where, "': document ", d,
               " ends at sequence ", end, ", outside ", first, "..", n_seq);
    tokens.clear();
    for (; static_cast<int64_t>(seq) < end; ++seq) {
      const int64_t length = lengths.next(), pointer = pointers.next();
      TSTL_CHECK(length >= 0 && pointer >= 0, "'", where, "': sequence ", seq, " has length ", length, " and pointer ", pointer);
      read_tokens(bin, static_cast<uint64_t>(pointer), static_cast<uint64_t>(length), enc, vocab_size, tokens, scratch);
    }
    first = end;
    sink.add(name + ":" + std::to_string(d), tokens, static_cast<double>(d + 1), static_cast<double>(n_doc_idx - 1));
  }
  TSTL_CHECK(sink.full() || seq == n_seq, "'", where, "': the document indices end at sequence ", seq, ", not at the ",
             n_seq, " sequences the header counts");
}

// ---- Flat token stream (.npy or raw) ---------------------------------------------------------

// Parses a 1-d .npy header: returns the data offset, sets `enc` and `count`.
uint64_t parse_npy_header(BinaryInput& file, TokenEncoding& enc, uint64_t& count) {
  const std::string& where = file.path();
  unsigned char prefix[12] = {};
  file.read_at(0, prefix, std::min<uint64_t>(12, file.size()), "the .npy header");
  TSTL_CHECK(file.size() >= 10 && std::memcmp(prefix, "\x93NUMPY", 6) == 0, "'", where, "' is not a .npy file (no \\x93NUMPY magic)");
  const int major = prefix[6];
  TSTL_CHECK(major >= 1 && major <= 3, "'", where, "': .npy format version ", major, " is not 1, 2 or 3");
  const uint64_t len_bytes = major == 1 ? 2 : 4;
  const uint64_t header_len = static_cast<uint64_t>(load_le(prefix + 8, static_cast<int>(len_bytes), false));
  std::string header(header_len, '\0');
  file.read_at(8 + len_bytes, header.data(), header_len, "the .npy header");
  auto value_of = [&](const std::string& key) {
    const size_t k = header.find("'" + key + "'");
    TSTL_CHECK(k != std::string::npos, "'", where, "': the .npy header has no '", key, "': ", header);
    const size_t colon = header.find(':', k);
    const size_t start = header.find_first_not_of(' ', colon + 1);
    return header.substr(start);
  };
  const std::string descr = value_of("descr");
  struct Known { const char* descr; TokenEncoding enc; };
  const Known known[] = {{"'<u2'", {2, false, "uint16"}}, {"'<u4'", {4, false, "uint32"}}, {"'<i4'", {4, true, "int32"}},
                         {"'<i8'", {8, true, "int64"}},   {"'|u1'", {1, false, "uint8"}}};
  bool found = false;
  for (const Known& k : known)
    if (descr.rfind(k.descr, 0) == 0) enc = k.enc, found = true;
  TSTL_CHECK(found, "'", where, "': .npy dtype ", descr.substr(0, descr.find(',')),
             " is not a little-endian integer type tstl reads (<u2, <u4, <i4, <i8, |u1)");
  const std::string shape = value_of("shape");
  const size_t close = shape.find(')');
  TSTL_CHECK(shape[0] == '(' && close != std::string::npos, "'", where, "': cannot read the .npy shape ", shape);
  const std::string dims = shape.substr(1, close - 1);
  const size_t comma = dims.find(',');
  TSTL_CHECK(comma != std::string::npos && dims.find_first_not_of(' ', comma + 1) == std::string::npos, "'", where,
             "': the .npy array has shape (", dims, "); a token stream is 1-dimensional");
  count = std::stoull(dims.substr(0, comma));
  const uint64_t data_offset = 8 + len_bytes + header_len;
  TSTL_CHECK(file.size() == data_offset + count * enc.bytes, "'", where, "' has ", file.size(), " bytes, but its header (",
             count, " x ", enc.name, ") implies ", data_offset + count * enc.bytes);
  return data_offset;
}

void convert_flat(const ExternalPrepareOptions& options, int64_t vocab_size, int32_t eos, DocumentSink& sink) {
  BinaryInput file(options.input);
  TokenEncoding enc;
  uint64_t count = 0, offset = 0;
  const bool npy = std::filesystem::path(options.input).extension() == ".npy";
  if (npy) {
    offset = parse_npy_header(file, enc, count);
  } else {
    TSTL_CHECK(options.raw_dtype == "uint16" || options.raw_dtype == "uint32", "--input-dtype '", options.raw_dtype,
               "' is not uint16 or uint32");
    enc = options.raw_dtype == "uint16" ? TokenEncoding{2, false, "uint16"} : TokenEncoding{4, false, "uint32"};
    TSTL_CHECK(file.size() % enc.bytes == 0, "'", file.path(), "' has ", file.size(), " bytes, not a whole number of ",
               enc.name, " tokens (is --input-dtype right?)");
    count = file.size() / enc.bytes;
  }
  const std::string name = file_name(options.input);
  constexpr uint64_t kChunk = 1 << 20;
  std::vector<int32_t> chunk, doc;
  std::vector<unsigned char> scratch;
  uint64_t d = 0;
  for (uint64_t i = 0; i < count && !sink.full(); i += kChunk) {
    chunk.clear();
    read_tokens(file, offset + i * enc.bytes, std::min(kChunk, count - i), enc, vocab_size, chunk, scratch);
    for (int32_t t : chunk) {
      doc.push_back(t);
      if (t == eos) {
        sink.add(name + ":" + std::to_string(d++), doc, static_cast<double>(i), static_cast<double>(count));
        doc.clear();
        if (sink.full()) break;
      }
    }
  }
  if (!doc.empty() && !sink.full()) sink.add(name + ":" + std::to_string(d), doc, 1.0, 1.0);
}

}  // namespace

PrepareSummary prepare_external_tokens(const ExternalPrepareOptions& options, const Tokenizer& tokenizer, std::FILE* log) {
  TSTL_CHECK(options.format == "megatron" || options.format == "tokens", "--format '", options.format,
             "' is not text, megatron or tokens");
  TSTL_CHECK(!options.input.empty(), "no --input given");
  TSTL_CHECK(!options.output.empty(), "no --output given");
  TSTL_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "--val-fraction ", options.val_fraction,
             " is not in [0, 1)");
  TSTL_CHECK(options.max_documents >= 0, "--max-documents ", options.max_documents, " is negative");
  DocumentSink sink(options, tokenizer, log);
  if (options.format == "megatron")
    convert_megatron(options.input, tokenizer.vocab_size(), sink);
  else
    convert_flat(options, tokenizer.vocab_size(), tokenizer.eos_id(), sink);
  return sink.finish();
}

}  // namespace tstl
