// Models in and out of checkpoints: the parameters a checkpoint holds, by GPT-NeoX name, copied
// into a Decoder built from the checkpoint's own resolved config.
#pragma once

#include <memory>
#include <string>

#include "layers/decoder.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace tstl {

// Copies every parameter of `model` from `parameters` (by name). A missing name, a shape that
// differs or a NaN or infinity is an error naming the parameter and `source`; extra names are an
// error too.
void load_parameters(Decoder& model, const NamedTensors& parameters, const std::string& source);
// Throws naming `name`, `source` and the first element when `value` holds a NaN or infinity.
void check_finite(const std::string& name, const Tensor& value, const std::string& source);

struct LoadedModel {
  std::unique_ptr<Decoder> model;
  Config config;          // the resolved config the checkpoint was trained with
  std::string tokenizer;  // the tokenizer identity stored in the checkpoint
  int64_t step = 0;
};

// Reads a checkpoint (weights only) and builds its model.
LoadedModel load_model(const std::string& checkpoint_path);

}  // namespace tstl
