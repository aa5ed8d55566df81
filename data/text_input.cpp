#include "data/text_input.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/json.h"

namespace fs = std::filesystem;

namespace tstl {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_gz(const std::string& name) { return ends_with(name, ".gz") ? name.substr(0, name.size() - 3) : name; }

bool is_jsonl_name(const std::string& name) { return ends_with(strip_gz(name), ".jsonl"); }
bool is_text_name(const std::string& name) { return ends_with(strip_gz(name), ".txt"); }

// A gzip or plain file read through zlib (gzread passes uncompressed files through unchanged).
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    TSTL_CHECK(file_ != nullptr, "cannot open '", path, "' for reading");
    gzbuffer(file_, 1 << 17);
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  // Reads up to n bytes; 0 at the end.
  size_t read(char* out, size_t n) {
    const int got = gzread(file_, out, static_cast<unsigned>(n));
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file_, &code);
      TSTL_FAIL("cannot read '", path_, "': ", message ? message : "zlib error");
    }
    return static_cast<size_t>(got);
  }
  // One line without its '\n' (and '\r'); false at the end of the file.
  bool getline(std::string& line) {
    line.clear();
    for (;;) {
      if (pos_ == len_) {
        len_ = read(buffer_, sizeof(buffer_));
        pos_ = 0;
        if (len_ == 0) return !line.empty();
      }
      const char* start = buffer_ + pos_;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
      if (nl) {
        line.append(start, static_cast<size_t>(nl - start));
        pos_ += static_cast<size_t>(nl - start) + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
      }
      line.append(start, static_cast<size_t>(buffer_ + len_ - start));
      pos_ = len_;
    }
  }
  uint64_t compressed_offset() const { return static_cast<uint64_t>(gzoffset(file_)); }

 private:
  std::string path_;
  gzFile file_;
  char buffer_[1 << 16];
  size_t pos_ = 0, len_ = 0;
};

// ---- JSON: just enough to pull one string member out of an object ----------------------------

struct JsonCursor {
  const std::string& s;
  const std::string& where;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) const {
    TSTL_FAIL(where, ": invalid JSON at column ", i + 1, ": ", what);
  }
  void skip_ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  char peek() {
    skip_ws();
    if (i >= s.size()) fail("unexpected end of line");
    return s[i];
  }
  void expect(char c) {
    if (peek() != c) fail(str("expected '", c, "'"));
    ++i;
  }
  unsigned hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }
  // A string starting at '"'; decoded into *out when out is not null.
  void string(std::string* out) {
    expect('"');
    for (;;) {
      if (i >= s.size()) fail("unterminated string");
      const char c = s[i++];
      if (c == '"') return;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        if (out) *out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      const char e = s[i++];
      unsigned cp = 0;
      switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u': {
          cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // high surrogate: a low one must follow
            if (i + 2 > s.size() || s[i] != '\\' || s[i + 1] != 'u') fail("unpaired surrogate in \\u escape");
            i += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired surrogate in \\u escape");
          }
          break;
        }
        default: fail(str("unknown escape '\\", e, "'"));
      }
      if (out) append_utf8(*out, cp);
    }
  }
  void literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s.compare(i, n, word) != 0) fail("unexpected token");
    i += n;
  }
  void number() {
    const size_t start = i;
    if (s[i] == '-') ++i;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                            s[i] == 'E' || s[i] == '+' || s[i] == '-'))
      ++i;
    if (i == start || (i == start + 1 && s[start] == '-')) fail("bad number");
  }
  // Skips any value (depth-limited to guard against pathological nesting).
  void value(int depth = 0) {
    if (depth > 512) fail("nesting too deep");
    const char c = peek();
    if (c == '"') {
      string(nullptr);
    } else if (c == '{') {
      ++i;
      if (peek() == '}') { ++i; return; }
      for (;;) {
        string(nullptr);
        expect(':');
        value(depth + 1);
        if (peek() == ',') { ++i; continue; }
        expect('}');
        return;
      }
    } else if (c == '[') {
      ++i;
      if (peek() == ']') { ++i; return; }
      for (;;) {
        value(depth + 1);
        if (peek() == ',') { ++i; continue; }
        expect(']');
        return;
      }
    } else if (c == 't') {
      literal("true");
    } else if (c == 'f') {
      literal("false");
    } else if (c == 'n') {
      literal("null");
    } else if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      number();
    } else {
      fail(str("unexpected character '", c, "'"));
    }
  }
};

}  // namespace

std::string jsonl_text_field(const std::string& line, const std::string& where) {
  JsonCursor cur{line, where};
  if (cur.peek() != '{') cur.fail("a line must be a JSON object");
  ++cur.i;
  bool found = false;
  std::string text;
  if (cur.peek() == '}') {
    ++cur.i;
  } else {
    for (;;) {
      std::string key;
      cur.string(&key);
      cur.expect(':');
      if (key == "text") {
        if (cur.peek() != '"') cur.fail("the \"text\" member is not a string");
        text.clear();
        cur.string(&text);
        found = true;
      } else {
        cur.value();
      }
      if (cur.peek() == ',') { ++cur.i; continue; }
      cur.expect('}');
      break;
    }
  }
  cur.skip_ws();
  if (cur.i != line.size()) cur.fail("trailing characters after the object");
  TSTL_CHECK(found, where, ": the JSON object has no \"text\" member");
  return text;
}

std::vector<InputFile> expand_inputs(const std::vector<std::string>& inputs) {
  TSTL_CHECK(!inputs.empty(), "no --input given");
  std::vector<InputFile> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    TSTL_CHECK(fs::exists(st), "input '", input, "' does not exist");
    if (fs::is_directory(st)) {
      std::vector<InputFile> found;
      for (auto it = fs::recursive_directory_iterator(input);
           it != fs::recursive_directory_iterator(); ++it) {
        if (!it->is_regular_file()) continue;
        const std::string fname = it->path().filename().string();
        if (!is_text_name(fname) && !is_jsonl_name(fname)) continue;
        InputFile f;
        f.path = it->path().string();
        f.name = strip_gz(fs::relative(it->path(), input).generic_string());
        f.jsonl = is_jsonl_name(fname);
        found.push_back(f);
      }
      TSTL_CHECK(!found.empty(), "directory '", input, "' holds no text: no .txt or .jsonl files (optionally .gz) in it or below it");
      std::sort(found.begin(), found.end(), [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
      files.insert(files.end(), found.begin(), found.end());
    } else {
      TSTL_CHECK(fs::is_regular_file(st), "input '", input, "' is not a regular file or a directory");
      TSTL_CHECK(fs::file_size(input) > 0, "input file '", input, "' is empty");
      InputFile f;
      f.path = input;
      f.name = strip_gz(fs::path(input).filename().string());
      f.jsonl = is_jsonl_name(f.name);
      f.explicit_input = true;
      files.push_back(f);
    }
  }
  return files;
}

std::string read_file_text(const std::string& path) {
  GzFile file(path);
  std::string text;
  char buffer[1 << 16];
  for (size_t got; (got = file.read(buffer, sizeof(buffer))) > 0;) text.append(buffer, got);
  return text;
}

struct DocumentReader::Open {
  InputFile file;
  GzFile gz;
  uint64_t line_number = 0;
  uint64_t documents = 0;
  explicit Open(const InputFile& f) : file(f), gz(f.path) {}
};

DocumentReader::DocumentReader(const std::vector<std::string>& inputs) : files_(expand_inputs(inputs)) {
  for (const InputFile& f : files_) input_bytes_total_ += fs::file_size(f.path);
}

DocumentReader::~DocumentReader() = default;

uint64_t DocumentReader::input_bytes_done() const {
  return input_bytes_finished_ + (open_ ? open_->gz.compressed_offset() : 0);
}

bool DocumentReader::next(Document& doc) {
  for (;;) {
    if (open_) {  // the next non-blank line of the current .jsonl file
      std::string line;
      while (open_->gz.getline(line)) {
        ++open_->line_number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = str(open_->file.name, ":", open_->line_number);
        doc.text = jsonl_text_field(line, where);
        ++open_->documents;
        if (doc.text.empty()) {
          ++skipped_empty_;
          continue;
        }
        doc.name = where;
        return true;
      }
      TSTL_CHECK(open_->documents > 0 || !open_->file.explicit_input, "input file '", open_->file.path,
                 "' holds no documents (no non-blank lines)");
      input_bytes_finished_ += fs::file_size(open_->file.path);
      open_.reset();
    }
    if (next_file_ == files_.size()) return false;
    const InputFile& f = files_[next_file_++];
    if (f.jsonl) {
      open_ = std::make_unique<Open>(f);
      continue;
    }
    doc.text = read_file_text(f.path);
    input_bytes_finished_ += fs::file_size(f.path);
    if (doc.text.empty()) {
      TSTL_CHECK(!f.explicit_input, "input file '", f.path, "' is empty");
      ++skipped_empty_;
      continue;
    }
    doc.name = f.name;
    return true;
  }
}

}  // namespace tstl
