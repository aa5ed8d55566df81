// The run configuration: INI files with sections [model] [data] [train] [optim] [eval], read with
// Boost.Program_options, every key addressed as `section.key`. One schema (config_schema())
// declares each key's type, default and help; a file or a command-line override may only set
// keys the schema knows, with values of the declared type (enums from their list). Values are
// stored in a canonical text form (integers plain, floats as the shortest text that round-trips,
// booleans true/false, lists comma-separated without spaces), so dump() followed by loading the
// text gives an identical Config and diff() compares values, not spellings.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tstl {

enum class ConfigType { Int, Float, Bool, String, Enum, IntList, StringList };
const char* config_type_name(ConfigType type);  // "integer", "number", ...

struct ConfigKey {
  std::string name;  // "section.key"
  ConfigType type;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;  // Enum only
};

// Every key, in section order (model, data, train, optim, eval), then declaration order.
const std::vector<ConfigKey>& config_schema();
const ConfigKey* find_config_key(const std::string& name);  // nullptr when unknown
// The closest known key to `name` ("" when none is close): for "did you mean" hints.
std::string closest_config_key(const std::string& name);
// Usage text of every key (Boost's option listing): for `tstl train --help`.
std::string config_help();
// A markdown table of every key: type, default, meaning (docs/config.md embeds it).
std::string config_reference_markdown();

struct ConfigDifference {
  std::string key, value, other_value;
};

class Config {
 public:
  // Every key at its default.
  Config();

  // Typed access. int64_t/int: integer keys; double: number or integer keys; bool: boolean keys;
  // std::string: any key (its canonical text); std::vector<int64_t>: integer lists;
  // std::vector<std::string>: string lists. An unknown key or a mismatched type is an error.
  template <class T>
  T get(const std::string& key) const;
  // Sets a key from text, validated against the schema (`origin` names where it came from in
  // errors, e.g. "the command line").
  void set(const std::string& key, const std::string& value, const std::string& origin = "Config::set");
  bool is_default(const std::string& key) const;

  // The resolved config as INI text: every key, sections in schema order.
  std::string dump() const;
  // Keys under any of `prefixes` ("model." matches every model key, "data.tokenizer" that key)
  // whose values differ between this and `other`, in schema order.
  std::vector<ConfigDifference> diff(const Config& other, const std::vector<std::string>& prefixes) const;
  // Where the config was read from ("" for defaults only).
  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  friend Config parse_config(const std::string&, const std::string&, const std::vector<std::string>&);
  std::map<std::string, std::string> values_;
  std::string source_;
};

// Reads an INI file (path "" means defaults only), then applies command-line overrides given
// as arguments: {"--train.max_steps", "40"} or {"--train.max_steps=40"}; later ones win.
// Errors name the file (and line) or the command line, the key and the offending value.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from INI text (e.g. the config saved inside a checkpoint); `source` names it in errors.
Config parse_config(const std::string& text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

}  // namespace tstl
