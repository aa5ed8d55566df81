// What the subcommands of `tstl` share on the command line: option parsing with --help, lists of
// integers, the `--config FILE [--section.key value ...]` form of train and info, and the
// checkpoint options (--checkpoint, --scaling, --logn) of the commands that run a trained model,
// with the loading they imply.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "train/commands.h"
#include "train/generate.h"
#include "train/model_io.h"

namespace boost::program_options {
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace tstl {

class JsonWriter;

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

// A checkpoint ready for inference: its model, its tokenizer and the forward options of the
// inference-time scaling asked for.
struct InferenceModel {
  std::string checkpoint;  // the path it was read from
  LoadedModel loaded;
  InferenceScaling scaling;
  ForwardOptions forward;
  std::unique_ptr<Tokenizer> tokenizer;
  const ModelConfig& config() const { return loaded.model->config(); }
};
// Loads `checkpoint`, resolves the scaling against its variant (errors as forward_options_for)
// and builds its tokenizer (errors as tokenizer_for).
InferenceModel load_for_inference(const std::string& checkpoint, const ScalingArguments& scaling);

// "PATH (variant, train_len N, step S), label": the first line of an evaluation's output.
std::string describe(const InferenceModel& m);

// The fields that say which model and method an evaluation result is of: checkpoint, step,
// variant, train_len, method (the label), scaling_method, scaling_factor, logn.
void write_model_fields(JsonWriter& json, const InferenceModel& m);

}  // namespace tstl
