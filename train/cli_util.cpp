// Command-line helpers shared by the subcommands of `tstl`.
#include "train/cli_util.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "train/json.h"

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
  InferenceModel m;
  m.checkpoint = checkpoint;
  m.loaded = load_model(checkpoint);
  m.scaling = parse_scaling(scaling.spec);
  m.scaling.logn = scaling.logn;
  m.forward = forward_options_for(m.config(), m.scaling);
  m.tokenizer = tokenizer_for(m.loaded, checkpoint);
  return m;
}

std::string describe(const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  return m.checkpoint + " (" + variant_name(mc.variant) + ", train_len " + std::to_string(mc.train_len) + ", step " +
         std::to_string(m.loaded.step) + "), " + scaling_label(m.scaling);
}

void write_model_fields(JsonWriter& json, const InferenceModel& m) {
  const ModelConfig& mc = m.config();
  json.field("checkpoint", m.checkpoint);
  json.field("step", static_cast<double>(m.loaded.step));
  json.field("variant", variant_name(mc.variant));
  json.field("train_len", static_cast<double>(mc.train_len));
  json.field("method", scaling_label(m.scaling));
  json.field("scaling_method", m.scaling.method);
  json.field("scaling_factor", m.scaling.factor);
  json.field("logn", m.scaling.logn);
}

}  // namespace tstl
