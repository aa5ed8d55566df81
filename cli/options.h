// What the subcommands of `tstl` share on the command line: option parsing with --help, lists of
// integers, the `--config FILE [--section.key value ...]` form of train and info, and the
// inference-scaling (--scaling, --logn) and placement (--device, --dtype) options of the commands
// that run a trained model.
#pragma once

#include <algorithm>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/int_list.h"
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
// Adds --tokenizer SPEC: the text form of a checkpoint's ids (eval/inference_model.h tokenizer_for).
void add_tokenizer_option(boost::program_options::options_description& desc, std::string& spec);
// --device cpu|cuda and --dtype f32|bf16 as given on the command line (eval/inference_model.h
// parse_placement checks them).
struct DeviceArguments {
  std::string device = "cpu";
  std::string dtype;  // empty: f32 on the CPU, bf16 on CUDA
};
void add_device_options(boost::program_options::options_description& desc, DeviceArguments& device);
// Loads `checkpoint` for inference with the scaling, placement (and tokenizer, when given) of the
// command line. The placement is checked first, so that a bad --device fails before any loading.
InferenceModel load_for_inference(const std::string& checkpoint, const ScalingArguments& scaling,
                                  const DeviceArguments& device, const std::string& tokenizer_spec = "");

// Runs `evaluate` (the evaluation of `length`); running out of memory (std::bad_alloc, or a size
// no container can hold) becomes an error naming the length and the memory a forward of that
// many tokens needs at least, instead of a bare "std::bad_alloc".
[[noreturn]] void fail_out_of_memory(int64_t length, const ModelConfig& model);
template <class F>
auto with_memory_message(int64_t length, const ModelConfig& model, F&& evaluate) -> decltype(evaluate()) {
  try {
    return evaluate();
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(length, model);
  } catch (const std::length_error&) {
    fail_out_of_memory(length, model);
  }
}
// The same for an evaluation of several lengths that counts in `done` the lengths finished.
template <class F>
auto with_memory_message(const std::vector<int64_t>& lengths, const size_t& done, const ModelConfig& model,
                         F&& evaluate) -> decltype(evaluate()) {
  try {
    return evaluate();
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(lengths.at(std::min(done, lengths.size() - 1)), model);
  } catch (const std::length_error&) {
    fail_out_of_memory(lengths.at(std::min(done, lengths.size() - 1)), model);
  }
}

}  // namespace tstl
