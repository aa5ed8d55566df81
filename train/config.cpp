// The config system: the schema of every key (name, type, default, help; docs/config.md is
// generated from it by config_reference_markdown() and a test keeps the two in step), value
// validation and canonical text, INI parsing (Boost.Program_options), overrides, dump and diff.
#include "train/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/int_list.h"

namespace tstl {

namespace {
using T = ConfigType;

std::vector<ConfigKey> make_schema() {
  return {
      // [model]
      {"model.variant", T::Enum, "rope", "attention position scheme", {"rope", "alibi", "keynorm", "coca", "coca-strict"}},
      {"model.layers", T::Int, "4", "number of transformer blocks", {}},
      {"model.hidden", T::Int, "256", "model width (residual stream size)", {}},
      {"model.heads", T::Int, "4", "attention heads (hidden must be divisible by heads)", {}},
      {"model.ffn", T::Int, "0", "MLP inner size; 0 means 4 x hidden", {}},
      {"model.vocab_size", T::Int, "0", "vocabulary size; 0 takes the tokenizer's", {}},
      {"model.train_len", T::Int, "512", "the training length the model is built for (log-n scaling, RoPE scalings)", {}},
      {"model.rope_base", T::Float, "10000", "RoPE frequency base", {}},
      {"model.norm", T::Enum, "layernorm", "normalisation layer", {"layernorm", "rmsnorm"}},
      {"model.norm_eps", T::Float, "1e-05", "epsilon of the norm layers", {}},
      {"model.residual", T::Enum, "parallel", "block layout: GPT-NeoX parallel attention+MLP, or sequential", {"parallel", "sequential"}},
      {"model.bias", T::Bool, "true", "linear layers carry biases", {}},
      {"model.init_std", T::Float, "0.02", "standard deviation of the normal weight initialisation", {}},
      {"model.logn", T::Bool, "false", "scale attention logits by log(n)/log(train_len) beyond train_len", {}},
      {"model.attention_backend", T::Enum, "tstl", "attention kernel: tstl's flash attention (every variant), or cuDNN's fused SDPA (CUDA; rope, keynorm, coca, coca-strict, alibi with power-of-two heads; no log-n)", {"tstl", "cudnn"}},
      // [data]
      {"data.path", T::String, "", "HDF5 token file made by `tstl prepare` (required to train)", {}},
      {"data.tokenizer", T::String, "byte", "tokenizer: `byte`, a SentencePiece model path, `hf:tokenizer.json`, or `external:NAME` (ids prepared by another toolkit)", {}},
      {"data.passkey_fraction", T::Float, "0", "fraction of training samples replaced by passkey prompts", {}},
      // [train]
      {"train.out_dir", T::String, "runs/default", "run directory: config.cfg, metrics.jsonl, checkpoints/", {}},
      {"train.seed", T::Int, "1234", "seed of initialisation, data order and dropout", {}},
      {"train.seq_len", T::Int, "512", "tokens per training sequence", {}},
      {"train.batch_size", T::Int, "8", "sequences per micro-batch", {}},
      {"train.grad_accum", T::Int, "1", "micro-batches summed into one optimizer step", {}},
      {"train.max_steps", T::Int, "1000", "optimizer steps of the run; also the LR schedule's horizon", {}},
      {"train.max_tokens", T::Int, "0", "stop once this many training tokens were seen; 0: no limit", {}},
      {"train.stop_at", T::Int, "0", "save and stop after this step as if interrupted, schedule unchanged; 0: off", {}},
      {"train.log_every", T::Int, "1", "steps between metrics lines", {}},
      {"train.tensorboard", T::Bool, "false", "also write the logged scalars as a TensorBoard event file in out_dir", {}},
      {"train.eval_every", T::Int, "100", "steps between validation evaluations; 0: only at the end", {}},
      {"train.eval_batches", T::Int, "20", "validation micro-batches per evaluation", {}},
      {"train.save_every", T::Int, "500", "steps between checkpoints; 0: only at the end and on a stop", {}},
      {"train.keep_last", T::Int, "3", "checkpoints kept: the newest k (0 keeps all)", {}},
      {"train.keep_every", T::Int, "0", "also keep every checkpoint whose step is a multiple of M; 0: none", {}},
      {"train.resume", T::Enum, "auto", "auto: continue from the newest complete checkpoint if any; must: fail when none; never: start fresh", {"auto", "must", "never"}},
      {"train.init_from", T::String, "", "checkpoint whose weights start a new run (no optimizer state, step 0)", {}},
      {"train.skip_nonfinite", T::Bool, "false", "skip steps whose loss or gradient is not finite instead of stopping", {}},
      {"train.threads", T::Int, "0", "CPU threads (OpenMP, BLAS); 0: all cores", {}},
      {"train.device", T::Enum, "cpu", "where the model trains: cpu, or cuda (the first GPU; the kernels share the CPU's math)", {"cpu", "cuda"}},
      {"train.precision", T::Enum, "auto", "f32, or bf16 mixed precision (f32 master weights, AdamW moments and gradients; bf16 weight copies and activations); auto: bf16 on cuda, f32 on cpu", {"auto", "f32", "bf16"}},
      {"train.peak_flops", T::Float, "0", "peak FLOP/s for MFU; 0: on the CPU the cached `tstl bench peak` (measured once per machine), on a GPU the device table", {}},
      {"train.zero", T::Int, "0", "0: plain data parallel (every rank holds all AdamW moments); 1: ZeRO-1, moments sharded over the ranks", {}},
      {"train.bucket_mb", T::Float, "25", "MiB of f32 gradient per all-reduce bucket, launched as soon as its gradients are final", {}},
      {"train.comm_timeout_s", T::Float, "600", "a collective not complete after this many seconds ends the job, naming the ranks that did not answer", {}},
      // [optim]
      {"optim.lr", T::Float, "0.0001", "peak learning rate", {}},
      {"optim.min_lr", T::Float, "1e-05", "learning rate at and after max_steps", {}},
      {"optim.warmup_steps", T::Int, "100", "linear warm-up steps", {}},
      {"optim.decay", T::Enum, "linear", "decay from lr to min_lr after warm-up", {"cosine", "linear"}},
      {"optim.beta1", T::Float, "0.9", "AdamW first-moment decay", {}},
      {"optim.beta2", T::Float, "0.95", "AdamW second-moment decay", {}},
      {"optim.eps", T::Float, "1e-08", "AdamW epsilon", {}},
      {"optim.weight_decay", T::Float, "0.1", "decoupled weight decay of 2-D weights", {}},
      {"optim.clip", T::Float, "1", "global gradient-norm clip; 0: no clipping (the norm is still logged)", {}},
      {"optim.no_decay", T::StringList, "*.bias,*norm*,*embed_in*", "glob patterns of parameter names excluded from weight decay (1-D parameters never decay)", {}},
      // [eval]
      {"eval.lengths", T::IntList, "512,1024,2048,4096,8192", "evaluation lengths for the extrapolation study", {}},
      {"eval.stride", T::Int, "0", "sliding-window stride of perplexity evaluation; 0: non-overlapping windows", {}},
  };
}
}  // namespace

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = make_schema();
  return schema;
}

const ConfigKey* find_config_key(const std::string& name) {
  for (const ConfigKey& k : config_schema())
    if (k.name == name) return &k;
  return nullptr;
}

std::string config_reference_markdown() {
  std::ostringstream os;
  std::string section;
  for (const ConfigKey& k : config_schema()) {
    const std::string s = k.name.substr(0, k.name.find('.'));
    if (s != section) {
      section = s;
      os << "\n### [" << s << "]\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
    }
    std::string type = k.type == ConfigType::Bool ? "boolean" : config_type_name(k.type);
    if (k.type == ConfigType::Enum) {
      type.clear();
      for (const std::string& c : k.choices) type += (type.empty() ? "" : " \\| ") + c;
    }
    os << "| `" << k.name << "` | " << type << " | `" << (k.default_value.empty() ? "\"\"" : k.default_value)
       << "` | " << k.help << " |\n";
  }
  return os.str();
}


// ---- Values: parsing and canonical text ---------------------------------------------------

const char* config_type_name(ConfigType type) {
  switch (type) {
    case ConfigType::Int: return "integer";
    case ConfigType::Float: return "number";
    case ConfigType::Bool: return "boolean (true|false)";
    case ConfigType::String: return "string";
    case ConfigType::Enum: return "one of a list";
    case ConfigType::IntList: return "list of integers (comma-separated)";
    case ConfigType::StringList: return "list of strings (comma-separated)";
  }
  return "?";
}

namespace {

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> items;
  if (trim(s).empty()) return items;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) items.push_back(trim(item));
  if (!s.empty() && s.back() == ',') items.push_back("");
  return items;
}

bool parse_int(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno == 0 && *end == '\0') {
    out = v;
    return true;
  }
  // Integral values written as numbers are accepted: max_tokens = 2e9.
  const double d = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e18) return false;
  out = static_cast<int64_t>(d);
  return true;
}

bool parse_float(const std::string& text, double& out) {
  if (text.empty()) return false;
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return *end == '\0' && std::isfinite(out);
}

// The shortest %g text that reads back as exactly `v`.
std::string shortest_double(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// Validates `text` for `key` and returns its canonical form; errors start with `where`.
std::string canonical_value(const ConfigKey& key, const std::string& raw, const std::string& where) {
  const std::string text = trim(raw);
  auto bad = [&](const std::string& expected) -> std::string {
    TSTL_FAIL(where, ": ", key.name, " = '", text, "' is not ", expected);
  };
  TSTL_CHECK(text.find('#') == std::string::npos && text.find('\n') == std::string::npos, where, ": ",
             key.name, " = '", text, "' contains '#' or a newline, which an INI file cannot hold");
  switch (key.type) {
    case ConfigType::Int: {
      int64_t v;
      if (!parse_int(text, v)) return bad("an integer");
      return std::to_string(v);
    }
    case ConfigType::Float: {
      double v;
      if (!parse_float(text, v)) return bad("a number");
      return shortest_double(v);
    }
    case ConfigType::Bool: {
      std::string lower = text;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      if (lower == "true" || lower == "yes" || lower == "on" || lower == "1") return "true";
      if (lower == "false" || lower == "no" || lower == "off" || lower == "0") return "false";
      return bad("a boolean (true|false|yes|no|on|off|1|0)");
    }
    case ConfigType::Enum: {
      std::string list;
      for (const std::string& c : key.choices) {
        if (c == text) return text;
        list += (list.empty() ? "" : "|") + c;
      }
      return bad("one of " + list);
    }
    case ConfigType::String: return text;
    case ConfigType::IntList: {
      std::string out;
      for (const std::string& item : split_commas(text)) {
        int64_t v;
        if (!parse_int(item, v)) return bad("a comma-separated list of integers");
        out += (out.empty() ? "" : ",") + std::to_string(v);
      }
      return out;
    }
    case ConfigType::StringList: {
      std::string out;
      for (const std::string& item : split_commas(text)) {
        if (item.empty()) return bad("a comma-separated list of non-empty strings");
        out += (out.empty() ? "" : ",") + item;
      }
      return out;
    }
  }
  return text;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string leaf(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

std::string unknown_key_message(const std::string& where, const std::string& name) {
  const std::string hint = closest_config_key(name);
  std::string message = where + ": unknown config key '" + name + "'";
  if (!hint.empty()) message += " (did you mean '" + hint + "'?)";
  if (name.find('.') == std::string::npos) message += "; keys live in sections [model] [data] [train] [optim] [eval]";
  return message;
}

// 1-based line of `name` (section.key) in INI text, 0 when not found.
int line_of(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line, section;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string t = trim(line.substr(0, line.find('#')));
    if (t.size() >= 2 && t.front() == '[' && t.back() == ']') {
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    const size_t eq = t.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = trim(t.substr(0, eq));
    if ((section.empty() ? k : section + "." + k) == name) return number;
  }
  return 0;
}

namespace po = boost::program_options;

po::options_description boost_description() {
  po::options_description desc("config keys (INI [section] key = value, or --section.key value)");
  for (const ConfigKey& k : config_schema()) {
    std::string help = k.help + " [" + config_type_name(k.type);
    if (k.type == ConfigType::Enum) {
      help += ":";
      for (const std::string& c : k.choices) help += " " + c;
    }
    help += "; default '" + k.default_value + "']";
    desc.add_options()(k.name.c_str(), po::value<std::string>(), help.c_str());
  }
  return desc;
}

}  // namespace

std::string closest_config_key(const std::string& name) {
  std::string best;
  size_t best_score = static_cast<size_t>(-1);
  for (const ConfigKey& k : config_schema()) {
    // The same key in another section is a close match too: optim.seed -> train.seed.
    const size_t score = std::min(edit_distance(name, k.name), edit_distance(leaf(name), leaf(k.name)) + 1);
    if (score < best_score) {
      best_score = score;
      best = k.name;
    }
  }
  return best_score <= std::max<size_t>(2, leaf(name).size() / 3) ? best : "";
}

std::string config_help() {
  std::ostringstream os;
  os << boost_description();
  return os.str();
}

// ---- Config ---------------------------------------------------------------------------------

Config::Config() {
  for (const ConfigKey& k : config_schema()) values_[k.name] = canonical_value(k, k.default_value, "schema default");
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  const ConfigKey* k = find_config_key(key);
  if (!k) TSTL_FAIL(unknown_key_message(origin, key));
  values_[key] = canonical_value(*k, value, origin);
}

bool Config::is_default(const std::string& key) const {
  const ConfigKey* k = find_config_key(key);
  TSTL_CHECK(k, unknown_key_message("Config::is_default", key));
  return values_.at(key) == canonical_value(*k, k->default_value, "schema default");
}

namespace {
const ConfigKey& key_of_type(const std::string& key, std::initializer_list<ConfigType> types, const char* cpp_type) {
  const ConfigKey* k = find_config_key(key);
  if (!k) TSTL_FAIL(unknown_key_message("Config::get", key));
  for (ConfigType t : types)
    if (k->type == t) return *k;
  TSTL_FAIL("Config::get<", cpp_type, ">(\"", key, "\"): the key holds a ", config_type_name(k->type));
}
}  // namespace

template <>
int64_t Config::get<int64_t>(const std::string& key) const {
  key_of_type(key, {ConfigType::Int}, "int64_t");
  return std::stoll(values_.at(key));
}
template <>
int Config::get<int>(const std::string& key) const {
  const int64_t v = get<int64_t>(key);
  TSTL_CHECK(v >= INT32_MIN && v <= INT32_MAX, key, " = ", v, " does not fit an int");
  return static_cast<int>(v);
}
template <>
double Config::get<double>(const std::string& key) const {
  key_of_type(key, {ConfigType::Float, ConfigType::Int}, "double");
  return std::strtod(values_.at(key).c_str(), nullptr);
}
template <>
bool Config::get<bool>(const std::string& key) const {
  key_of_type(key, {ConfigType::Bool}, "bool");
  return values_.at(key) == "true";
}
template <>
std::string Config::get<std::string>(const std::string& key) const {
  if (!find_config_key(key)) TSTL_FAIL(unknown_key_message("Config::get", key));
  return values_.at(key);
}
template <>
std::vector<int64_t> Config::get<std::vector<int64_t>>(const std::string& key) const {
  key_of_type(key, {ConfigType::IntList}, "std::vector<int64_t>");
  const std::string& text = values_.at(key);  // canonical: integers, commas, no spaces
  return text.empty() ? std::vector<int64_t>{} : parse_int_list(text, key, std::numeric_limits<int64_t>::min());
}
template <>
std::vector<std::string> Config::get<std::vector<std::string>>(const std::string& key) const {
  key_of_type(key, {ConfigType::StringList}, "std::vector<std::string>");
  return split_commas(values_.at(key));
}

std::string Config::dump() const {
  std::ostringstream os;
  os << "# tstl resolved config";
  if (!source_.empty()) os << " (read from " << source_ << ")";
  os << "\n";
  std::string section;
  for (const ConfigKey& k : config_schema()) {
    const std::string s = k.name.substr(0, k.name.find('.'));
    if (s != section) {
      os << "\n[" << s << "]\n";
      section = s;
    }
    os << leaf(k.name) << " = " << values_.at(k.name) << "\n";
  }
  return os.str();
}

std::vector<ConfigDifference> Config::diff(const Config& other, const std::vector<std::string>& prefixes) const {
  std::vector<ConfigDifference> out;
  for (const ConfigKey& k : config_schema()) {
    bool selected = false;
    for (const std::string& p : prefixes) selected = selected || k.name.compare(0, p.size(), p) == 0;
    if (selected && values_.at(k.name) != other.values_.at(k.name))
      out.push_back({k.name, values_.at(k.name), other.values_.at(k.name)});
  }
  return out;
}

// ---- Loading ------------------------------------------------------------------------------

namespace {

// Keys of earlier versions, read from files (config files and the configs saved in checkpoints)
// as the keys that replaced them, so that every checkpoint written before a rename keeps loading.
struct RenamedKey {
  const char* old_name;
  const char* new_name;
  double factor;  // new value = old value x factor
};
constexpr RenamedKey kRenamedKeys[] = {
    {"train.cpu_peak_gflops", "train.peak_flops", 1e9},  // GFLOP/s became FLOP/s
};

const RenamedKey* find_renamed_key(const std::string& name) {
  for (const RenamedKey& r : kRenamedKeys)
    if (name == r.old_name) return &r;
  return nullptr;
}

std::string renamed_value(const RenamedKey& r, const std::string& value, const std::string& where) {
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(value, &used);
    TSTL_CHECK(used == value.size(), "");
  } catch (...) {
    TSTL_FAIL(where, ": '", r.old_name, "' (now '", r.new_name, "') must be a number, got '", value, "'");
  }
  std::ostringstream out;
  out.precision(17);
  out << v * r.factor;
  return out.str();
}

}  // namespace

Config parse_config(const std::string& text, const std::string& source, const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.source_ = source;
  const po::options_description desc = boost_description();
  const std::string file_where = "config file '" + source + "'";
  auto where_in_file = [&](const std::string& name) {
    const int line = line_of(text, name);
    return line > 0 ? file_where + ", line " + std::to_string(line) : file_where;
  };

  po::parsed_options parsed(&desc);
  try {
    std::istringstream in(text);
    parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    TSTL_FAIL(file_where, ": ", e.what());
  }
  std::map<std::string, int> seen;
  for (const po::option& o : parsed.options) {
    const std::string value = o.value.empty() ? "" : o.value[0];
    if (o.unregistered) {
      const RenamedKey* renamed = find_renamed_key(o.string_key);
      if (!renamed) TSTL_FAIL(unknown_key_message(where_in_file(o.string_key), o.string_key));
      const std::string where = where_in_file(o.string_key);
      TSTL_CHECK(seen[renamed->new_name]++ == 0, file_where, ": key '", renamed->new_name, "' is set twice (also as '",
                 o.string_key, "', its earlier name)");
      cfg.set(renamed->new_name, renamed_value(*renamed, value, where), where);
      continue;
    }
    TSTL_CHECK(seen[o.string_key]++ == 0, file_where, ": key '", o.string_key, "' is set twice");
    cfg.set(o.string_key, value, where_in_file(o.string_key));
  }

  // Command line: reject unknown keys ourselves (with a hint), then let Boost split the
  // `--key value` / `--key=value` forms. Guessing from prefixes is off: a key is named whole.
  for (const std::string& arg : overrides) {
    if (arg.rfind("--", 0) != 0) continue;
    const std::string name = arg.substr(2, arg.find('=') == std::string::npos ? std::string::npos : arg.find('=') - 2);
    if (!find_config_key(name)) TSTL_FAIL(unknown_key_message("command line", name));
  }
  try {
    const int style = po::command_line_style::allow_long | po::command_line_style::long_allow_adjacent |
                      po::command_line_style::long_allow_next;
    const po::parsed_options cli = po::command_line_parser(overrides).options(desc).style(style).run();
    for (const po::option& o : cli.options) {
      TSTL_CHECK(o.position_key < 0 && !o.string_key.empty(), "command line: unexpected argument '",
                 o.original_tokens.empty() ? "" : o.original_tokens[0], "' (overrides are --section.key value)");
      cfg.set(o.string_key, o.value.empty() ? "" : o.value[0], "command line --" + o.string_key);
    }
  } catch (const po::error& e) {
    TSTL_FAIL("command line: ", e.what());
  }
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (path.empty()) return parse_config("", "", overrides);
  std::ifstream in(path);
  if (!in) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
      TSTL_FAIL("config file '", path, "' does not exist");
    TSTL_FAIL("config file '", path, "' cannot be read: ", std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  TSTL_CHECK(!in.bad(), "config file '", path, "' cannot be read: ", std::strerror(errno));
  return parse_config(text.str(), path, overrides);
}

}  // namespace tstl
