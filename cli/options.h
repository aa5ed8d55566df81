// What the subcommands of `tstl` share on the command line: option parsing with --help, lists of
// integers, the `--config FILE [--section.key value ...]` form of train and info, and the
// inference-scaling options (--scaling, --logn) of the commands that run a trained model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "eval/inference_model.h"

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace tstl {

// Parses `args` against `desc`; on --help prints `usage` and the options and returns false.
// Parse errors throw tstl::Error.
bool parse_command_line(const Args& args, const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm, const char* usage);

// Comma-separated positive integers ("128,256,512") for option `what`.
std::vector<int64_t> parse_int_list(const std::string& text, const char* what);

// The arguments of a config-driven command (tstl train, tstl info): `--config FILE` or
// `--config=FILE`, and every other argument as a config override (`--section.key value`).
struct ConfigArguments {
  std::string path;                    // empty when --config was not given
  std::vector<std::string> overrides;  // in order, for load_config
  bool help_requested = false;         // --help or -h came first: the caller prints its help
};
ConfigArguments parse_config_arguments(const Args& args);

// --scaling METHOD:FACTOR and --logn as given on the command line.
struct ScalingArguments {
  std::string spec;
  bool logn = false;
};
// Adds --scaling (with `scaling_help`) and --logn to `desc`.
void add_scaling_options(boost::program_options::options_description& desc, ScalingArguments& scaling,
                         const char* scaling_help = "METHOD:FACTOR (see tstl eval ppl --help)");
// Loads `checkpoint` for inference with the scaling given on the command line.
InferenceModel load_for_inference(const std::string& checkpoint, const ScalingArguments& scaling);

}  // namespace tstl
