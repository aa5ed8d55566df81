// `tstl report RUN_OR_JSON... --output DIR`.
#include <boost/program_options.hpp>

#include <cstdio>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "data/text_input.h"
#include "eval/report.h"

namespace po = boost::program_options;

namespace tstl {

int command_report(const Args& args) {
  std::vector<std::string> inputs;
  std::string output, python, script;
  po::options_description desc("tstl report options");
  desc.add_options()("help,h", "show this help")
      ("input", po::value(&inputs)->multitoken(), "run directories (their eval/*.json) or eval JSON files")
      ("output", po::value(&output)->required(), "the report directory (report.md, ppl.png, passkey.png)")
      ("python", po::value(&python)->default_value("/usr/bin/python3"), "the Python with matplotlib")
      ("plot-script", po::value(&script)->default_value(""), "scripts/plot_report.py (found automatically)");
  po::positional_options_description positional;
  positional.add("input", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(desc).positional(positional).run(), vm);
    if (vm.count("help")) {
      std::printf("usage: tstl report RUN_OR_JSON... --output DIR\n");
      std::ostringstream s;
      s << desc;
      std::printf("%s\n", s.str().c_str());
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    TSTL_FAIL(e.what(), " (see --help)");
  }
  const ReportOutcome outcome = write_report(inputs, output, python, script);
  std::printf("%s", read_file_text(outcome.markdown).c_str());
  if (!outcome.warning.empty()) std::fprintf(stderr, "tstl report: warning: %s\n", outcome.warning.c_str());
  std::printf("wrote %s", outcome.markdown.c_str());
  for (const std::string& p : outcome.plots) std::printf(", %s", p.c_str());
  std::printf("\n");
  return 0;
}

}  // namespace tstl
