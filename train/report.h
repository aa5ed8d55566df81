// Evaluation results as JSON (written by `tstl eval ppl|passkey|attention`, read back here) and
// `tstl report RUN_OR_JSON... --output DIR`: DIR/report.md with a table of perplexity by length
// for each run and method and one of passkey accuracy by length, and PNG plots drawn by
// scripts/plot_report.py (matplotlib) from DIR/report_data.json.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tstl {

// ---- JSON ----------------------------------------------------------------------------------

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

// Writes `text` to `path` (via path.tmp and a rename); the parent directory must exist.
void write_text_file(const std::string& path, const std::string& text);

// ---- The report ----------------------------------------------------------------------------

// One evaluation result file.
struct EvalRecord {
  std::string path;  // the JSON file
  std::string run;   // the run's directory name (RUN/eval/x.json), else the file's stem
  JsonValue json;
};

// Each input is a JSON file or a run directory whose eval/ folder (or, failing that, the
// directory itself) holds *.json files; files are read in sorted order. Files whose "kind" is
// neither "ppl" nor "passkey" are skipped. Throws for a missing input or a directory without any.
std::vector<EvalRecord> collect_eval_records(const std::vector<std::string>& inputs);

// The markdown of the report: a PPL table (rows run / variant / method, columns lengths, the
// training length marked) and a passkey accuracy table.
std::string report_markdown(const std::vector<EvalRecord>& records);

// The series the plotting script draws, as JSON.
std::string report_plot_data(const std::vector<EvalRecord>& records);

struct ReportOutcome {
  std::string markdown;             // DIR/report.md
  std::vector<std::string> plots;   // PNG files written
  std::string warning;              // why the plots were skipped ("" when drawn)
};

// Writes DIR/report.md, DIR/report_data.json and, with `python` and matplotlib available, the
// plots via `plot_script` (empty: scripts/plot_report.py found next to the tstl binary's source
// tree or $TSTL_PLOT_SCRIPT). Python or matplotlib missing is a warning, a failing script an error.
ReportOutcome write_report(const std::vector<std::string>& inputs, const std::string& output_dir,
                           const std::string& python = "/usr/bin/python3", const std::string& plot_script = "");

}  // namespace tstl
