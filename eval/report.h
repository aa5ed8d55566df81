// `tstl report RUN_OR_JSON... --output DIR`: reads the evaluation results (the JSON files written
// by `tstl eval ppl|passkey`) and writes DIR/report.md with a table of perplexity by length
// for each run and method and one of passkey accuracy by length, and PNG plots drawn by
// scripts/plot_report.py (matplotlib) from DIR/report_data.json.
#pragma once

#include <string>
#include <vector>

#include "core/json.h"

namespace tstl {

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
// training length marked) and a passkey accuracy table. Runs named NAME-seedN (scripts/study)
// are pooled into one row NAME: a "seeds" column and "mean ± sample standard deviation" cells.
std::string report_markdown(const std::vector<EvalRecord>& records);

// The series the plotting script draws, as JSON: per row its label, variant, method, seeds,
// lengths, values (means) and spread (standard deviations, 0 for one run).
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
