// `tstl eval attention --checkpoint PATH --text FILE --layers 0,3 [--max-tokens N] --json|--h5 OUT`:
// the attention scores S and probabilities P of chosen layers for one input (batch 1), for the
// analysis of attention at long lengths. The decoder records each layer's q and k after the
// prologue (ForwardOptions::capture) and layers/attention_reference.h rebuilds the full
// (H, N, N) matrices from them with the options the flash kernel used (scale, ALiBi slopes,
// log-n factors), so what is shown is what the model computed.
//
// JSON: {"kind": "attention", ..., "tokens": [...], "layers": [{"layer": l, "scores": (H, N, N),
// "probabilities": (H, N, N)}]}, masked scores as null. HDF5: /tokens (N) i32 and
// /layer_<l>/scores, /layer_<l>/probabilities (H, N, N) f32 (masked scores -inf), with the
// checkpoint, variant and method as attributes of the root.
#include <boost/program_options.hpp>

#include <cstdio>

#include "core/autograd.h"
#include "core/hdf5.h"
#include "data/text_input.h"
#include "layers/attention_reference.h"
#include "train/cli_util.h"
#include "train/json.h"

namespace po = boost::program_options;

namespace tstl {

namespace {

struct LayerMaps {
  int64_t layer = 0;
  Tensor scores, probabilities;  // (H, N, N) f32
};

void write_matrix_json(JsonWriter& json, const Tensor& t) {  // t (H, N, N)
  const std::vector<double> v = t.to_vector<double>();
  const int64_t heads = t.size(0), rows = t.size(1), cols = t.size(2);
  json.begin_array();
  for (int64_t h = 0; h < heads; ++h) {
    json.begin_array();
    for (int64_t r = 0; r < rows; ++r)
      json.number_array(std::vector<double>(v.begin() + (h * rows + r) * cols, v.begin() + (h * rows + r + 1) * cols));
    json.end_array();
  }
  json.end_array();
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  h5::Handle type(H5_CHECK(H5Tcopy(H5T_C_S1), "attribute ", name));
  H5_CHECK(H5Tset_size(type, value.size() + 1), "attribute ", name);
  h5::Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "attribute ", name));
  h5::Handle attr(H5_CHECK(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT), "attribute ", name));
  H5_CHECK(H5Awrite(attr, type, value.c_str()), "attribute ", name);
}

template <class T>
void write_dataset(hid_t parent, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const T* data) {
  h5::Handle space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "dataset ", name));
  h5::Handle set(H5_CHECK(H5Dcreate2(parent, name.c_str(), mem_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          "dataset ", name));
  H5_CHECK(H5Dwrite(set, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "dataset ", name);
}

}  // namespace

int command_eval_attention(const Args& args) {
  std::string checkpoint, text_path, layers_text, json_path, h5_path;
  ScalingArguments scaling_args;
  int64_t max_tokens = 0;
  po::options_description desc("tstl eval attention options");
  desc.add_options()("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint)->required(), "a checkpoint file")
      ("text", po::value(&text_path)->required(), "a text file (.gz allowed): the input")
      ("layers", po::value(&layers_text)->required(), "layer indices, comma-separated (0-based)")
      ("max-tokens", po::value(&max_tokens)->default_value(256), "cut the input to N tokens (0: all)");
  add_scaling_options(desc, scaling_args);
  desc.add_options()("json", po::value(&json_path), "write JSON here")
      ("h5", po::value(&h5_path), "write HDF5 here");
  po::variables_map vm;
  if (!parse_command_line(args, desc, vm,
                          "usage: tstl eval attention --checkpoint PATH --text FILE --layers 0,3 [--max-tokens N] "
                          "[--scaling METHOD:FACTOR] [--logn] --json OUT | --h5 OUT"))
    return 0;
  TSTL_CHECK(json_path.empty() != h5_path.empty(), "give exactly one of --json OUT and --h5 OUT");
  TSTL_CHECK(max_tokens >= 0, "--max-tokens must be >= 0, got ", max_tokens);
  InferenceModel model = load_for_inference(checkpoint, scaling_args);
  const ModelConfig& mc = model.config();
  std::vector<int64_t> layers;
  size_t start = 0;
  while (start <= layers_text.size()) {  // indices may be 0, so not parse_int_list
    const size_t comma = std::min(layers_text.find(',', start), layers_text.size());
    const std::string item = layers_text.substr(start, comma - start);
    char* end = nullptr;
    const long long l = std::strtoll(item.c_str(), &end, 10);
    TSTL_CHECK(!item.empty() && *end == '\0' && l >= 0 && l < mc.layers, "--layers '", layers_text, "': '", item,
               "' is not a layer index in 0..", mc.layers - 1);
    layers.push_back(l);
    start = comma + 1;
  }
  const Tokenizer& tokenizer = *model.tokenizer;
  std::vector<int32_t> ids = tokenizer.encode(read_file_text(text_path));
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  TSTL_CHECK(!ids.empty(), text_path, " encodes to no tokens");
  const int64_t n = static_cast<int64_t>(ids.size());

  std::vector<AttentionCapture> capture;
  model.forward.capture = &capture;
  {
    NoGradGuard no_grad;
    model.loaded.model->forward(Tensor::from_vector(ids, {1, n}), model.forward);
  }
  TSTL_CHECK(static_cast<int64_t>(capture.size()) == mc.layers, "the decoder captured ", capture.size(),
             " layers, expected ", mc.layers);
  std::vector<LayerMaps> maps;
  for (int64_t l : layers) {
    const AttentionCapture& c = capture[static_cast<size_t>(l)];
    const Shape hnn{mc.heads, n, n};
    maps.push_back({l, attention_scores(c.q, c.k, c.options).to(DType::F32).reshape(hnn),
                    attention_probabilities(c.q, c.k, c.options).to(DType::F32).reshape(hnn)});
  }

  if (!json_path.empty()) {
    JsonWriter json;
    json.begin_object();
    json.field("kind", "attention");
    json.field("checkpoint", checkpoint);
    json.field("variant", variant_name(mc.variant));
    json.field("train_len", static_cast<double>(mc.train_len));
    json.field("method", scaling_label(model.scaling));
    json.key("tokens");
    json.number_array(std::vector<double>(ids.begin(), ids.end()));
    json.field("text", tokenizer.decode(ids));
    json.key("layers");
    json.begin_array();
    for (const LayerMaps& m : maps) {
      json.begin_object();
      json.field("layer", static_cast<double>(m.layer));
      json.key("scores");
      write_matrix_json(json, m.scores);
      json.key("probabilities");
      write_matrix_json(json, m.probabilities);
      json.end_object();
    }
    json.end_array();
    json.end_object();
    write_text_file(json_path, json.str() + "\n");
    std::printf("wrote %s: %zu layers, %lld heads, %lld tokens\n", json_path.c_str(), maps.size(),
                static_cast<long long>(mc.heads), static_cast<long long>(n));
    return 0;
  }
  h5::quiet();
  h5::Handle file(H5_CHECK(H5Fcreate(h5_path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "cannot create ", h5_path));
  write_string_attribute(file, "format", "tstl-attention");
  write_string_attribute(file, "checkpoint", checkpoint);
  write_string_attribute(file, "variant", variant_name(mc.variant));
  write_string_attribute(file, "method", scaling_label(model.scaling));
  write_dataset(file, "tokens", H5T_NATIVE_INT32, {static_cast<hsize_t>(n)}, ids.data());
  for (const LayerMaps& m : maps) {
    const std::string group_name = "layer_" + std::to_string(m.layer);
    h5::Handle group(H5_CHECK(H5Gcreate2(file, group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), h5_path,
                              ": group ", group_name));
    const std::vector<hsize_t> dims{static_cast<hsize_t>(mc.heads), static_cast<hsize_t>(n), static_cast<hsize_t>(n)};
    write_dataset(group, "scores", H5T_NATIVE_FLOAT, dims, m.scores.data<float>());
    write_dataset(group, "probabilities", H5T_NATIVE_FLOAT, dims, m.probabilities.data<float>());
  }
  std::printf("wrote %s: %zu layers, %lld heads, %lld tokens\n", h5_path.c_str(), maps.size(),
              static_cast<long long>(mc.heads), static_cast<long long>(n));
  return 0;
}

}  // namespace tstl
