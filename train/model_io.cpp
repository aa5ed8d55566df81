#include "train/model_io.h"

#include <cmath>
#include <set>

#include "train/model_config.h"

namespace tstl {

namespace {
// The index of the first NaN or infinity of `t` (a CPU tensor), or -1.
template <class T>
int64_t first_nonfinite(const Tensor& t) {
  const T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}
}  // namespace

void check_finite(const std::string& name, const Tensor& value, const std::string& source) {
  const Tensor host = value.device() == Device::CPU ? value : value.to(Device::CPU);
  const bool f64 = host.dtype() == DType::F64;
  const Tensor t = f64 ? host : host.to(DType::F32);
  const int64_t i = f64 ? first_nonfinite<double>(t) : first_nonfinite<float>(t);
  if (i < 0) return;
  const double v = f64 ? t.data<double>()[i] : t.data<float>()[i];
  TSTL_FAIL(source, ": parameter ", name, " holds a non-finite value (", v, " at element ", i, " of ", t.numel(),
            "); these weights cannot be used (saved from a run that diverged?)");
}

void load_parameters(Decoder& model, const NamedTensors& parameters, const std::string& source) {
  std::set<std::string> seen;
  for (const auto& [name, value] : parameters) {
    Tensor target = model.parameter(name);  // throws naming an unknown parameter
    TSTL_CHECK(target.shape() == value.shape(), source, ": parameter ", name, " has shape ", shape_str(value.shape()),
               ", the model expects ", shape_str(target.shape()));
    check_finite(name, value, source);
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
  ModelConfig model_config = model_config_from(loaded.config);
  // The attention backend is how a run computed attention, not part of the model: a loaded model
  // (evaluation, generation, export) runs tstl's kernel, which covers every variant and inference
  // method on both devices, so a checkpoint trained with cuDNN's attention evaluates on the CPU.
  model_config.attention_backend = AttentionBackend::Tstl;
  loaded.model = std::make_unique<Decoder>(model_config);
  load_parameters(*loaded.model, state.parameters, checkpoint_path);
  loaded.tokenizer = state.tokenizer;
  loaded.step = state.step;
  return loaded;
}

}  // namespace tstl
