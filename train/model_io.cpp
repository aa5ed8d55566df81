#include "train/model_io.h"

#include <set>

#include "train/model_config.h"

namespace tstl {

void load_parameters(Decoder& model, const NamedTensors& parameters, const std::string& source) {
  std::set<std::string> seen;
  for (const auto& [name, value] : parameters) {
    Tensor target = model.parameter(name);  // throws naming an unknown parameter
    TSTL_CHECK(target.shape() == value.shape(), source, ": parameter ", name, " has shape ", shape_str(value.shape()),
               ", the model expects ", shape_str(target.shape()));
    target.copy_(value);
    seen.insert(name);
  }
  for (const auto& [name, p] : model.named_parameters())
    TSTL_CHECK(seen.count(name), source, ": parameter ", name, " is missing");
}

LoadedModel load_model(const std::string& checkpoint_path) {
  CheckpointState state = load_checkpoint(checkpoint_path, /*with_optimizer=*/false);
  LoadedModel loaded;
  loaded.config = parse_config(state.config, checkpoint_path + " (its saved config)");
  loaded.model = std::make_unique<Decoder>(model_config_from(loaded.config));
  load_parameters(*loaded.model, state.parameters, checkpoint_path);
  loaded.tokenizer = state.tokenizer;
  loaded.step = state.step;
  return loaded;
}

}  // namespace tstl
