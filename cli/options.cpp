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

void add_tokenizer_option(po::options_description& desc, std::string& spec) {
  desc.add_options()("tokenizer", po::value(&spec),
                     "spm:MODEL | hf:tokenizer.json | byte: the checkpoint's tokenizer when its file moved, or the "
                     "text form of a model trained on external:NAME ids");
}

void add_device_options(po::options_description& desc, DeviceArguments& device) {
  desc.add_options()("device", po::value(&device.device)->default_value("cpu"),
                     "cpu | cuda: where the model runs (cuda: weights and key/value cache on the GPU)")
      ("dtype", po::value(&device.dtype), "f32 | bf16: weights and activations (default: f32 on cpu, bf16 on cuda)");
}

InferenceModel load_for_inference(const std::string& checkpoint, const ScalingArguments& scaling,
                                  const DeviceArguments& device, const std::string& tokenizer_spec) {
  const InferencePlacement placement = parse_placement(device.device, device.dtype);
  InferenceScaling parsed = parse_scaling(scaling.spec);
  parsed.logn = scaling.logn;
  return load_for_inference(checkpoint, parsed, tokenizer_spec, placement);
}

void fail_out_of_memory(int64_t length, const ModelConfig& model) {
  const double gib = 1024.0 * 1024.0 * 1024.0;
  TSTL_FAIL("length ", length, ": out of memory (std::bad_alloc); a forward of ", length, " tokens needs at least ",
            inference_memory_bytes(model, length) / gib, " GiB (", inference_bytes_per_token(model) / 1024.0,
            " KiB per token for activations, logits and the key/value cache, plus the weights); try shorter --lengths");
}

}  // namespace tstl
