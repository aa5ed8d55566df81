// The attention maps behind `tstl eval attention` (docs/evaluation.md): the attention scores S and probabilities P of chosen layers for one input (batch 1), for the
// analysis of attention at long lengths. The decoder records each layer's q and k after the
// prologue (ForwardOptions::capture) and layers/attention_reference.h rebuilds the full
// (H, N, N) matrices from them with the options the flash kernel used (scale, ALiBi slopes,
// log-n factors), so what is shown is what the model computed.
//
// JSON: {"kind": "attention", the model fields of write_model_fields (eval/inference_model.h),
// "tokens": [...], "layers": [{"layer": l, "scores": (H, N, N),
// "probabilities": (H, N, N)}]}, masked scores as null. HDF5: /tokens (N) i32 and
// /layer_<l>/scores, /layer_<l>/probabilities (H, N, N) f32 (masked scores -inf), with the
// checkpoint, variant and method as attributes of the root.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/inference_model.h"

namespace tstl {

struct LayerMaps {
  int64_t layer = 0;
  Tensor scores, probabilities;  // (H, N, N) f32
};

// The maps of `layers` (indices in 0..layers-1) for the input `ids` (batch 1) under the model's
// scaling. No autograd.
std::vector<LayerMaps> attention_maps(const InferenceModel& model, const std::vector<int32_t>& ids,
                                      const std::vector<int64_t>& layers);

// The JSON form (with the decoded `text` of `ids`) and the HDF5 form described above.
void write_attention_json(const std::string& path, const InferenceModel& model, const std::vector<int32_t>& ids,
                          const std::vector<LayerMaps>& maps);
void write_attention_h5(const std::string& path, const InferenceModel& model, const std::vector<int32_t>& ids,
                        const std::vector<LayerMaps>& maps);

}  // namespace tstl
