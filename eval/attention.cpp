// The attention maps of chosen layers, as JSON or HDF5.
#include "eval/attention.h"

#include "core/autograd.h"
#include "core/hdf5.h"
#include "core/json.h"
#include "layers/attention_reference.h"

namespace tstl {

namespace {

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

template <class T>
void write_dataset(hid_t parent, const std::string& name, hid_t mem_type, const std::vector<hsize_t>& dims,
                   const T* data) {
  h5::Handle space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "dataset ", name));
  h5::Handle set(H5_CHECK(H5Dcreate2(parent, name.c_str(), mem_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          "dataset ", name));
  H5_CHECK(H5Dwrite(set, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "dataset ", name);
}

// A layer's capture on the host in f32 or f64: the reference matrices are built there (a model on
// CUDA, or in bf16, gives its q, k, slopes and log-n factors as it computed them).
AttentionCapture on_host(const AttentionCapture& c) {
  auto host = [](const Tensor& t) {
    if (!t.defined()) return t;
    const Tensor h = t.device() == Device::CPU ? t : t.to(Device::CPU);
    return h.dtype() == DType::BF16 ? h.to(DType::F32) : h;
  };
  AttentionCapture out = c;
  out.q = host(c.q);
  out.k = host(c.k);
  out.options.alibi_slopes = host(c.options.alibi_slopes);
  out.options.logn = host(c.options.logn);
  return out;
}

}  // namespace

std::vector<LayerMaps> attention_maps(const InferenceModel& model, const std::vector<int32_t>& ids,
                                      const std::vector<int64_t>& layers) {
  const ModelConfig& mc = model.config();
  const int64_t n = static_cast<int64_t>(ids.size());
  ForwardOptions forward = model.forward;
  std::vector<AttentionCapture> capture;
  forward.capture = &capture;
  {
    NoGradGuard no_grad;
    model.loaded.model->forward(Tensor::from_vector(ids, {1, n}), forward);
  }
  TSTL_CHECK(static_cast<int64_t>(capture.size()) == mc.layers, "the decoder captured ", capture.size(),
             " layers, expected ", mc.layers);
  std::vector<LayerMaps> maps;
  for (int64_t l : layers) {
    const AttentionCapture c = on_host(capture[static_cast<size_t>(l)]);
    const Shape hnn{mc.heads, n, n};
    maps.push_back({l, attention_scores(c.q, c.k, c.options).to(DType::F32).reshape(hnn),
                    attention_probabilities(c.q, c.k, c.options).to(DType::F32).reshape(hnn)});
  }
  return maps;
}

void write_attention_json(const std::string& path, const InferenceModel& model, const std::vector<int32_t>& ids,
                          const std::vector<LayerMaps>& maps) {
  JsonWriter json;
  json.begin_object();
  json.field("kind", "attention");
  write_model_fields(json, model);
  json.key("tokens");
  json.number_array(std::vector<double>(ids.begin(), ids.end()));
  json.field("text", model.tokenizer->decode(ids));
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
  write_text_file(path, json.str() + "\n");
}

void write_attention_h5(const std::string& path, const InferenceModel& model, const std::vector<int32_t>& ids,
                        const std::vector<LayerMaps>& maps) {
  const ModelConfig& mc = model.config();
  const int64_t n = static_cast<int64_t>(ids.size());
  h5::quiet();
  h5::Handle file(H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "cannot create ", path));
  h5::write_string_attribute(file, "format", "tstl-attention");
  h5::write_string_attribute(file, "checkpoint", model.checkpoint);
  h5::write_string_attribute(file, "variant", variant_name(mc.variant));
  h5::write_string_attribute(file, "method", scaling_label(model.scaling));
  write_dataset(file, "tokens", H5T_NATIVE_INT32, {static_cast<hsize_t>(n)}, ids.data());
  for (const LayerMaps& m : maps) {
    const std::string group_name = "layer_" + std::to_string(m.layer);
    h5::Handle group(H5_CHECK(H5Gcreate2(file, group_name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path,
                              ": group ", group_name));
    const std::vector<hsize_t> dims{static_cast<hsize_t>(mc.heads), static_cast<hsize_t>(n), static_cast<hsize_t>(n)};
    write_dataset(group, "scores", H5T_NATIVE_FLOAT, dims, m.scores.data<float>());
    write_dataset(group, "probabilities", H5T_NATIVE_FLOAT, dims, m.probabilities.data<float>());
  }
}

}  // namespace tstl
