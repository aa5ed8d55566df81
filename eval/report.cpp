// The report of evaluation results: tables, plot data and plots.
#include "eval/report.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "core/error.h"

namespace fs = std::filesystem;

namespace tstl {

namespace {

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TSTL_CHECK(in.good(), "cannot read ", path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> json_files_in(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::string run_name_of(const fs::path& file) {
  const fs::path parent = fs::absolute(file).parent_path();
  if (parent.filename() == "eval") return parent.parent_path().filename().string();
  return file.stem().string();
}

// "rope-seed2" -> "rope": runs that differ only in a trailing -seedN are one row of the report,
// their values pooled (mean and spread). Any other name is its own group.
std::string seed_group_of(const std::string& run) {
  const size_t dash = run.rfind("-seed");
  if (dash == std::string::npos || dash == 0 || dash + 5 == run.size()) return run;
  for (size_t i = dash + 5; i < run.size(); ++i)
    if (run[i] < '0' || run[i] > '9') return run;
  return run.substr(0, dash);
}

// Mean and sample standard deviation (n - 1 in the denominator; 0 for one value) of the finite
// values; NaN mean when there is none.
struct Pooled {
  double mean = NAN;
  double spread = 0;
  size_t count = 0;
};

Pooled pool(const std::vector<double>& values) {
  Pooled p;
  double sum = 0;
  for (double v : values)
    if (std::isfinite(v)) {
      sum += v;
      ++p.count;
    }
  if (p.count == 0) return p;
  p.mean = sum / static_cast<double>(p.count);
  if (p.count > 1) {
    double squares = 0;
    for (double v : values)
      if (std::isfinite(v)) squares += (v - p.mean) * (v - p.mean);
    p.spread = std::sqrt(squares / static_cast<double>(p.count - 1));
  }
  return p;
}

// Rows of a table: (seed group, variant, method) -> length -> one value per run of the group,
// each row's training length and the runs pooled into it.
using RowKey = std::tuple<std::string, std::string, std::string>;
struct Table {
  std::map<RowKey, std::map<int64_t, std::vector<double>>> rows;
  std::map<RowKey, int64_t> train_len;
  std::map<RowKey, std::set<std::string>> runs;
  std::set<int64_t> lengths;
  bool pooled() const {
    for (const auto& [row, names] : runs)
      if (names.size() > 1) return true;
    return false;
  }
};

Table collect_table(const std::vector<EvalRecord>& records, const std::string& kind, const char* value_key) {
  Table t;
  std::set<std::tuple<std::string, RowKey, int64_t>> seen;  // (run, row, length) already read
  for (const EvalRecord& r : records) {
    if (r.json.get_string("kind") != kind) continue;
    const RowKey row = std::make_tuple(seed_group_of(r.run), r.json.get_string("variant"), r.json.get_string("method"));
    const auto train_len = static_cast<int64_t>(r.json.get_number("train_len"));
    auto known = t.train_len.find(row);
    TSTL_CHECK(known == t.train_len.end() || known->second == train_len, r.path, ": training length ", train_len,
               " differs from ", known->second, " of another run pooled into ", std::get<0>(row));
    t.train_len[row] = train_len;
    t.runs[row].insert(r.run);
    for (const JsonValue& result : r.json.get_array("results").array) {
      const auto length = static_cast<int64_t>(result.get_number("length"));
      // One value per run and length: a run's results may be split over files, never repeated.
      TSTL_CHECK(seen.insert(std::make_tuple(r.run, row, length)).second, r.path, ": a second ", kind, " result for run ",
                 r.run, ", method ", std::get<2>(row), ", length ", length);
      const JsonValue* v = result.find(value_key);
      t.rows[row][length].push_back(v && v->type == JsonValue::Type::Number ? v->number : NAN);
      t.lengths.insert(length);
    }
  }
  return t;
}

std::string format_cell(const std::vector<double>& values, const char* format, bool pooled) {
  const Pooled p = pool(values);
  char mean[64];
  std::snprintf(mean, sizeof mean, format, p.mean);
  if (!pooled) return mean;
  char spread[64];
  std::snprintf(spread, sizeof spread, format, p.spread);
  return std::string(mean) + " ± " + spread;
}

// With pooled rows, a "seeds" column gives the number of runs and each cell is "mean ± sd".
std::string markdown_table(const Table& t, const char* format) {
  const bool pooled = t.pooled();
  std::string md = std::string("| run | variant | method | train len |") + (pooled ? " seeds |" : "");
  std::string rule = std::string("| --- | --- | --- | --- |") + (pooled ? " --- |" : "");
  for (int64_t l : t.lengths) {
    md += " " + std::to_string(l) + " |";
    rule += " --- |";
  }
  md += "\n" + rule + "\n";
  for (const auto& [row, values] : t.rows) {
    const int64_t train_len = t.train_len.at(row);
    md += "| " + std::get<0>(row) + " | " + std::get<1>(row) + " | " + std::get<2>(row) + " | " +
          std::to_string(train_len) + " |";
    if (pooled) md += " " + std::to_string(t.runs.at(row).size()) + " |";
    for (int64_t l : t.lengths) {
      auto it = values.find(l);
      const std::string cell = it == values.end() ? "-" : format_cell(it->second, format, pooled);
      // Lengths past training in italics: the extrapolation region.
      md += " " + (it != values.end() && l > train_len ? "*" + cell + "*" : cell) + " |";
    }
    md += "\n";
  }
  return md;
}

std::string self_directory() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

std::string find_plot_script() {
  if (const char* env = std::getenv("TSTL_PLOT_SCRIPT")) return env;
  std::vector<fs::path> candidates;
  const std::string self = self_directory();
  if (!self.empty()) {
    candidates.push_back(fs::path(self) / ".." / "scripts" / "plot_report.py");
    candidates.push_back(fs::path(self) / "scripts" / "plot_report.py");
  }
  candidates.push_back(fs::path("scripts") / "plot_report.py");
  for (const fs::path& p : candidates)
    if (fs::exists(p)) return fs::canonical(p).string();
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

std::vector<EvalRecord> collect_eval_records(const std::vector<std::string>& inputs) {
  TSTL_CHECK(!inputs.empty(), "tstl report needs at least one run directory or JSON file");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    TSTL_CHECK(fs::exists(input), input, ": no such file or directory");
    if (fs::is_directory(input)) {
      std::vector<std::string> found;
      if (fs::is_directory(fs::path(input) / "eval")) found = json_files_in(fs::path(input) / "eval");
      if (found.empty()) found = json_files_in(input);
      TSTL_CHECK(!found.empty(), input, ": no *.json evaluation file in it or in its eval/ folder");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(input);
    }
  }
  std::vector<EvalRecord> records;
  for (const std::string& f : files) {
    EvalRecord r;
    r.path = f;
    r.run = run_name_of(f);
    r.json = parse_json(read_whole_file(f), f);
    const JsonValue* kind = r.json.find("kind");
    if (!kind || kind->type != JsonValue::Type::String || (kind->string != "ppl" && kind->string != "passkey")) continue;
    records.push_back(std::move(r));
  }
  TSTL_CHECK(!records.empty(), "none of the inputs holds a ppl or passkey evaluation (JSON with \"kind\")");
  return records;
}

std::string report_markdown(const std::vector<EvalRecord>& records) {
  std::string md = "# tstl evaluation report\n\n";
  const Table ppl = collect_table(records, "ppl", "ppl");
  const Table passkey = collect_table(records, "passkey", "accuracy");
  const char* seeds_note = " Runs named NAME-seedN are pooled into one row NAME: mean ± sample standard deviation.";
  if (!ppl.rows.empty())
    md += std::string("## Perplexity by evaluation length\n\nSliding-window perplexity (lower is better); lengths past the "
                      "training length in italics.") + (ppl.pooled() ? seeds_note : "") + "\n\n" +
          markdown_table(ppl, "%.2f") + "\n";
  if (!passkey.rows.empty())
    md += std::string("## Passkey retrieval accuracy by prompt length\n\nGreedy decoding; a case passes when the first "
                      "5-digit number generated is the key.") + (passkey.pooled() ? seeds_note : "") + "\n\n" +
          markdown_table(passkey, "%.2f") + "\n";
  md += "## Sources\n\n";
  for (const EvalRecord& r : records) md += "- " + r.path + "\n";
  return md;
}

std::string report_plot_data(const std::vector<EvalRecord>& records) {
  JsonWriter json;
  json.begin_object();
  for (const auto& [kind, value_key] : {std::pair<const char*, const char*>{"ppl", "ppl"}, {"passkey", "accuracy"}}) {
    const Table t = collect_table(records, kind, value_key);
    json.key(kind);
    json.begin_array();
    for (const auto& [row, values] : t.rows) {
      json.begin_object();
      // "rope + dynamic-ntk:4": the group (run) name, its variant when not named after it, the method.
      const auto& [group, variant, method] = row;
      std::string label = group == variant ? group : group + " (" + variant + ")";
      if (method != "none") label += " + " + method;
      json.field("label", label);
      json.field("variant", variant);
      json.field("method", method);
      json.field("seeds", static_cast<double>(t.runs.at(row).size()));
      json.field("train_len", static_cast<double>(t.train_len.at(row)));
      std::vector<double> lengths, means, spreads;
      for (const auto& [l, ys] : values) {
        const Pooled p = pool(ys);
        lengths.push_back(static_cast<double>(l));
        means.push_back(p.mean);
        spreads.push_back(p.spread);
      }
      json.key("lengths");
      json.number_array(lengths);
      json.key("values");
      json.number_array(means);
      json.key("spread");  // sample standard deviation across the pooled runs (0 for one run)
      json.number_array(spreads);
      json.end_object();
    }
    json.end_array();
  }
  json.end_object();
  return json.str() + "\n";
}

ReportOutcome write_report(const std::vector<std::string>& inputs, const std::string& output_dir,
                           const std::string& python, const std::string& plot_script) {
  const std::vector<EvalRecord> records = collect_eval_records(inputs);
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  TSTL_CHECK(!ec, "cannot create ", output_dir, ": ", ec.message());
  ReportOutcome outcome;
  const std::string data_path = (fs::path(output_dir) / "report_data.json").string();
  write_text_file(data_path, report_plot_data(records));

  std::string plots_md;
  const std::string script = plot_script.empty() ? find_plot_script() : plot_script;
  if (access(python.c_str(), X_OK) != 0) {
    outcome.warning = python + " not found: plots skipped (scripts/install-deps installs python3-matplotlib)";
  } else if (script.empty() || !fs::exists(script)) {
    outcome.warning = "scripts/plot_report.py not found (set TSTL_PLOT_SCRIPT): plots skipped";
  } else {
    const std::string cmd = shell_quote(python) + " " + shell_quote(script) + " " + shell_quote(data_path) + " " +
                            shell_quote(output_dir);
    const int status = std::system(cmd.c_str());
    const int code = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 3) {
      outcome.warning = "matplotlib is not installed for " + python + ": plots skipped (scripts/install-deps)";
    } else {
      TSTL_CHECK(code == 0, "the plotting script failed (exit ", code, "): ", cmd);
      for (const char* name : {"ppl.png", "passkey.png"}) {
        const fs::path png = fs::path(output_dir) / name;
        if (!fs::exists(png)) continue;
        outcome.plots.push_back(png.string());
        plots_md += std::string("![") + name + "](" + name + ")\n\n";
      }
    }
  }
  std::string md = report_markdown(records);
  if (!plots_md.empty()) md += "\n## Plots\n\n" + plots_md;
  if (!outcome.warning.empty()) md += "\n(" + outcome.warning + ")\n";
  outcome.markdown = (fs::path(output_dir) / "report.md").string();
  write_text_file(outcome.markdown, md);
  return outcome;
}

}  // namespace tstl
