// `tstl eval attention --checkpoint PATH --text FILE --layers 0,3 [--max-tokens N] --json|--h5 OUT`:
// the attention scores S and probabilities P of chosen layers for one input (batch 1), for the
// analysis of attention at long lengths. The decoder records each layer's q and k after the
// prologue (ForwardOptions::capture) and layers/attention_reference.h rebuilds the full
// (H, N, N) matrices from them with the options the flash kernel used (scale, ALiBi slopes,
// log-n factors), so what is shown is what the model computed.
// (eval/attention.h has the file formats.)
#include <boost/program_options.hpp>

#include <cstdio>

#include "cli/options.h"
#include "data/text_input.h"
#include "eval/attention.h"

namespace po = boost::program_options;

namespace tstl {

int command_eval_attention(const Args& args) {
  std::string checkpoint, text_path, layers_text, json_path, h5_path;
  ScalingArguments scaling_args;
  DeviceArguments device_args;
  int64_t max_tokens = 0;
  po::options_description desc("tstl eval attention options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file")
      ("text", po::value(&text_path)->required(), "a text file (.gz allowed): the input")
      ("layers", po::value(&layers_text)->required(), "layer indices, comma-separated (0-based)")
      ("max-tokens", po::value(&max_tokens)->default_value(256), "cut the input to N tokens (0: all)");
  add_scaling_options(desc, scaling_args);
  add_device_options(desc, device_args);
  desc.add_options()("json", po::value(&json_path), "write JSON here")
      ("h5", po::value(&h5_path), "write HDF5 here");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval attention --checkpoint PATH --text FILE --layers 0,3 [--max-tokens N] "
                          "[--scaling METHOD:FACTOR] [--logn] [--device cpu|cuda] [--dtype f32|bf16] --json OUT | --h5 OUT"))
    return 0;
  TSTL_CHECK(json_path.empty() != h5_path.empty(), "give exactly one of --json OUT and --h5 OUT");
  TSTL_CHECK(max_tokens >= 0, "--max-tokens must be >= 0, got ", max_tokens);
  InferenceModel model = load_for_inference(checkpoint, scaling_args, device_args);
  const ModelConfig& mc = model.config();
  const std::vector<int64_t> layers = parse_int_list(layers_text, "--layers", 0);
  for (int64_t l : layers)
    TSTL_CHECK(l < mc.layers, "--layers '", layers_text, "': ", l, " is not a layer index in 0..", mc.layers - 1);
  const Tokenizer& tokenizer = *model.tokenizer;
  std::vector<int32_t> ids = tokenizer.encode(read_file_text(text_path));
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  TSTL_CHECK(!ids.empty(), text_path, " encodes to no tokens");
  const int64_t n = static_cast<int64_t>(ids.size());

  const std::vector<LayerMaps> maps = attention_maps(model, ids, layers);
  const std::string& out = json_path.empty() ? h5_path : json_path;
  if (!json_path.empty())
    write_attention_json(json_path, model, ids, maps);
  else
    write_attention_h5(h5_path, model, ids, maps);
  std::printf("wrote %s: %zu layers, %lld heads, %lld tokens\n", out.c_str(), maps.size(),
              static_cast<long long>(mc.heads), static_cast<long long>(n));
  return 0;
}

}  // namespace tstl
