// JSON in and out.
#include "core/json.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace tstl {

// ---- JSON reading --------------------------------------------------------------------------

const JsonValue* JsonValue::find(const std::string& key) const {
  if (type != Type::Object) return nullptr;
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

double JsonValue::get_number(const std::string& key) const {
  const JsonValue* v = find(key);
  TSTL_CHECK(v && v->type == Type::Number, "JSON member '", key, "' is missing or not a number");
  return v->number;
}

const std::string& JsonValue::get_string(const std::string& key) const {
  const JsonValue* v = find(key);
  TSTL_CHECK(v && v->type == Type::String, "JSON member '", key, "' is missing or not a string");
  return v->string;
}

const JsonValue& JsonValue::get_array(const std::string& key) const {
  const JsonValue* v = find(key);
  TSTL_CHECK(v && v->type == Type::Array, "JSON member '", key, "' is missing or not an array");
  return *v;
}

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

namespace {

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& source) : s_(text), source_(source) {}

  JsonValue parse_document() {
    JsonValue v = parse_value();
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* what) const { TSTL_FAIL(source_, ": invalid JSON at byte ", pos_, ": ", what); }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  bool consume(const char* word) {
    const size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }
  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    uint32_t c = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      c = c * 16 + (h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
      if (c >= 0x10000) fail("bad \\u escape");
    }
    return c;
  }
  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t c1 = hex4();
          if (c1 >= 0xD800 && c1 < 0xDC00 && consume("\\u")) c1 = 0x10000 + ((c1 - 0xD800) << 10) + (hex4() - 0xDC00);
          append_utf8(out, c1);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  JsonValue parse_value() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    JsonValue v;
    const char c = s_[pos_];
    if (c == '{') {
      v.type = JsonValue::Type::Object;
      ++pos_;
      skip_space();
      if (consume("}")) return v;
      while (true) {
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a member name");
        std::string key = parse_string();
        skip_space();
        if (!consume(":")) fail("expected ':'");
        v.object.emplace_back(std::move(key), parse_value());
        skip_space();
        if (consume("}")) return v;
        if (!consume(",")) fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.type = JsonValue::Type::Array;
      ++pos_;
      skip_space();
      if (consume("]")) return v;
      while (true) {
        v.array.push_back(parse_value());
        skip_space();
        if (consume("]")) return v;
        if (!consume(",")) fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.type = JsonValue::Type::String;
      v.string = parse_string();
      return v;
    }
    if (consume("true") || consume("false")) {
      v.type = JsonValue::Type::Bool;
      v.boolean = c == 't';
      return v;
    }
    if (consume("null")) return v;
    const char* begin = s_.c_str() + pos_;
    char* end = nullptr;
    v.number = std::strtod(begin, &end);
    if (end == begin) fail("unexpected character");
    v.type = JsonValue::Type::Number;
    pos_ += static_cast<size_t>(end - begin);
    return v;
  }

  const std::string& s_;
  std::string source_;
  size_t pos_ = 0;
};

}  // namespace

JsonValue parse_json(const std::string& text, const std::string& source) {
  return JsonParser(text, source).parse_document();
}

// ---- JSON writing --------------------------------------------------------------------------

void JsonWriter::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

void JsonWriter::begin_object() {
  separate();
  out_ += '{';
  first_.push_back(true);
}
void JsonWriter::end_object() {
  out_ += '}';
  first_.pop_back();
}
void JsonWriter::begin_array() {
  separate();
  out_ += '[';
  first_.push_back(true);
}
void JsonWriter::end_array() {
  out_ += ']';
  first_.pop_back();
}
void JsonWriter::key(const std::string& name) {
  value(name);
  out_ += ':';
  after_key_ = true;
}
void JsonWriter::value(const std::string& s) {
  separate();
  out_ += '"';
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out_ += '\\';
      out_ += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out_ += buf;
    } else {
      out_ += static_cast<char>(c);
    }
  }
  out_ += '"';
}
void JsonWriter::value(double v) {
  separate();
  if (!std::isfinite(v)) {
    out_ += "null";
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  out_ += buf;
}
void JsonWriter::value(bool b) {
  separate();
  out_ += b ? "true" : "false";
}
void JsonWriter::number_array(const std::vector<double>& values) {
  begin_array();
  for (double v : values) value(v);
  end_array();
}

void write_text_file(const std::string& path, const std::string& text) { write_file_atomically(path, text); }

}  // namespace tstl
