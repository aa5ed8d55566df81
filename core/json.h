// JSON in and out: the evaluation results are written with JsonWriter (`tstl eval ppl|passkey|
// attention`) and read back with parse_json (`tstl report`, the tests).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tstl {

// A parsed JSON value. Objects keep their members in file order.
struct JsonValue {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<JsonValue> array;
  std::vector<std::pair<std::string, JsonValue>> object;

  const JsonValue* find(const std::string& key) const;  // nullptr when absent or not an object
  // Typed member access; a missing member or another type is an error naming `key`.
  double get_number(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const JsonValue& get_array(const std::string& key) const;
};

// Appends the UTF-8 encoding (1 to 4 bytes) of a Unicode code point below 0x110000.
void append_utf8(std::string& out, uint32_t code_point);

// Parses a whole JSON text; errors name `source` and the byte offset.
JsonValue parse_json(const std::string& text, const std::string& source);

// Streams compact JSON. Numbers are written with 17 significant digits (non-finite as null).
class JsonWriter {
 public:
  void begin_object();
  void end_object();
  void begin_array();
  void end_array();
  void key(const std::string& name);
  void value(const std::string& s);
  void value(const char* s) { value(std::string(s)); }
  void value(double v);
  void value(bool b);
  template <class T>
  void field(const std::string& name, const T& v) {
    key(name);
    value(v);
  }
  void number_array(const std::vector<double>& values);
  const std::string& str() const { return out_; }

 private:
  void separate();
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written in it yet
  bool after_key_ = false;
};

// Writes `text` to `path` atomically (core/atomic_file.h); the parent directory must exist.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace tstl
