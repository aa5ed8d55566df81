// Command-line helpers shared by the subcommands of `tstl`.
#include "cli/options.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>


namespace po = boost::program_options;

namespace tstl {

bool parse_command_line(const Args& args, const po::options_description& desc, po::variables_map& vm,
                        const char* usage) {
  try {
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    if (vm.count("help")) {  // before notify(), which enforces the required options
      std::cout << usage << "\n" << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    TSTL_FAIL(e.what(), " (see --help)");
  }
  return true;
}

std::vector<int64_t> parse_int_list(const std::string& text, const char* what) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    TSTL_CHECK(!item.empty() && end && *end == '\0' && v > 0, what, " '", text,
               "': expected comma-separated positive integers, got '", item, "'");
    values.push_back(v);
    start = comma + 1;
  }
  return values;
}

ConfigArguments parse_config_arguments(const Args& args) {
  ConfigArguments parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      parsed.help_requested = true;
      return parsed;
    }
    if (args[i] == "--config") {
      TSTL_CHECK(i + 1 < args.size(), "--config needs a file name");
      parsed.path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      parsed.path = args[i].substr(9);
    } else {
      parsed.overrides.push_back(args[i]);
    }
  }
  return parsed;
}

void add_scaling_options(po::options_description& desc, ScalingArguments& scaling, const char* scaling_help) {
  desc.add_options()("scaling", po::value(&scaling.spec)->default_value("none"), scaling_help)
      ("logn", po::bool_switch(&scaling.logn), "log-n query scaling at inference (RoPE family)");
}

InferenceModel load_for_inference(const std::string& checkpoint, const ScalingArguments& scaling) {
  InferenceScaling parsed = parse_scaling(scaling.spec);
  parsed.logn = scaling.logn;
  return load_for_inference(checkpoint, parsed);
}

}  // namespace tstl
