#include "train/hf_export.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/json.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_config.h"

namespace fs = std::filesystem;

namespace tstl {

namespace {

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    default: TSTL_FAIL("tensors of dtype ", dtype_name(t), " are not exported (model parameters are f32, f64 or bf16)");
  }
}

// The shortest decimal text that reads back as exactly `v` (JSON numbers).
std::string shortest(double v) {
  TSTL_CHECK(std::isfinite(v), "cannot write the non-finite number ", v, " to JSON");
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void write_file_atomically(const std::string& path, const std::vector<std::pair<const void*, size_t>>& pieces) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TSTL_CHECK(f != nullptr, "cannot create '", tmp, "': ", std::strerror(errno));
  bool ok = true;
  for (const auto& [data, n] : pieces) ok = ok && std::fwrite(data, 1, n, f) == n;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    TSTL_FAIL("writing '", path, "' failed: ", why);
  }
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  JsonWriter header;
  header.begin_object();
  header.key("__metadata__");
  header.begin_object();
  for (const auto& [k, v] : metadata) header.field(k, v);
  header.end_object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TSTL_CHECK(!name.empty() && name != "__metadata__", "tensor name '", name, "' cannot be stored in safetensors");
    host.push_back(t.device() == Device::CPU ? t : t.to(Device::CPU));
    header.key(name);
    header.begin_object();
    header.field("dtype", safetensors_dtype(t.dtype()));
    header.key("shape");
    header.begin_array();
    for (int64_t d : t.shape()) header.value(static_cast<double>(d));
    header.end_array();
    header.key("data_offsets");
    header.begin_array();
    header.value(static_cast<double>(offset));
    offset += t.nbytes();
    header.value(static_cast<double>(offset));
    header.end_array();
    header.end_object();
  }
  header.end_object();
  std::string text = header.str();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t n = text.size();  // little-endian hosts: the bytes of n are its encoding
  std::vector<std::pair<const void*, size_t>> pieces = {{&n, 8}, {text.data(), text.size()}};
  for (const Tensor& t : host) pieces.emplace_back(t.raw(), t.nbytes());
  write_file_atomically(path, pieces);
}

void check_gpt_neox_exportable(const ModelConfig& m) {
  TSTL_CHECK(m.variant == Variant::Rope, "model.variant = ", variant_name(m.variant),
             " cannot be exported: no Hugging Face architecture computes that attention on GPT-NeoX weights "
             "(GPTNeoXForCausalLM is rotary attention only); only rope checkpoints are exported");
  TSTL_CHECK(!m.logn, "model.logn = true cannot be exported: GPTNeoXForCausalLM has no log-n query scaling, so the "
             "exported model would compute other logits than the trained one");
  TSTL_CHECK(!m.rmsnorm, "model.norm = rmsnorm cannot be exported: GPTNeoXForCausalLM uses LayerNorm");
  TSTL_CHECK(m.bias, "model.bias = false cannot be exported: GPTNeoXForCausalLM's MLP always has biases");
}

std::string gpt_neox_config_json(const ModelConfig& m, int32_t bos_id, int32_t eos_id) {
  auto id = [](int32_t v) { return v >= 0 ? std::to_string(v) : std::string("null"); };
  std::string s = "{\n";
  auto line = [&s](const std::string& key, const std::string& value, bool last = false) {
    s += "  \"" + key + "\": " + value + (last ? "\n" : ",\n");
  };
  line("architectures", "[\"GPTNeoXForCausalLM\"]");
  line("model_type", "\"gpt_neox\"");
  line("vocab_size", std::to_string(m.vocab_size));
  line("hidden_size", std::to_string(m.hidden));
  line("num_hidden_layers", std::to_string(m.layers));
  line("num_attention_heads", std::to_string(m.heads));
  line("intermediate_size", std::to_string(m.ffn));
  line("hidden_act", "\"gelu\"");
  line("rotary_pct", "1.0");
  line("rotary_emb_base", shortest(m.rope_base));
  line("rope_theta", shortest(m.rope_base));
  line("max_position_embeddings", std::to_string(m.train_len));
  line("layer_norm_eps", shortest(m.norm_eps));
  line("use_parallel_residual", m.parallel_residual ? "true" : "false");
  line("attention_bias", "true");
  line("attention_dropout", "0.0");
  line("hidden_dropout", "0.0");
  line("initializer_range", shortest(m.init_std));
  line("tie_word_embeddings", "false");
  line("use_cache", "true");
  line("bos_token_id", id(bos_id));
  line("eos_token_id", id(eos_id));
  line("torch_dtype", "\"float32\"", true);
  return s + "}\n";
}

std::vector<std::string> export_hf(const HfExportOptions& options) {
  TSTL_CHECK(!options.output_dir.empty(), "no --output directory given");
  CheckpointState state = load_checkpoint(options.checkpoint, /*with_optimizer=*/false);
  const Config config = parse_config(state.config, options.checkpoint + " (its saved config)");
  const ModelConfig model = model_config_from(config);
  check_gpt_neox_exportable(model);

  // The tokenizer: its special ids for config.json and its file (SentencePiece or tokenizer.json).
  const std::string spec = options.tokenizer.empty() ? config.get<std::string>("data.tokenizer") : options.tokenizer;
  std::string tokenizer_file, tokenizer_copy;
  int32_t bos = -1, eos = -1;
  if (!is_external_tokenizer(spec)) {
    if (spec != "byte") {
      const bool hf = spec.rfind("hf:", 0) == 0;
      tokenizer_file = hf ? spec.substr(3) : spec.rfind("spm:", 0) == 0 ? spec.substr(4) : spec;
      tokenizer_copy = hf ? "tokenizer.json" : "tokenizer.model";
      TSTL_CHECK(fs::is_regular_file(tokenizer_file), "the tokenizer file '", tokenizer_file, "' (", spec,
                 ") does not exist: give --tokenizer SPEC with the tokenizer the checkpoint was trained with");
    }
    const auto tok = make_tokenizer_for_config(spec);
    if (is_external_tokenizer(state.tokenizer))
      TSTL_CHECK(tok->vocab_size() <= model.vocab_size, "tokenizer '", tok->identity(), "' has ", tok->vocab_size(),
                 " ids, more than the model's vocabulary of ", model.vocab_size);
    else
      TSTL_CHECK(state.tokenizer.empty() || tok->identity() == state.tokenizer, "tokenizer '", spec, "' is ",
                 tok->identity(), ", but ", options.checkpoint, " was trained with ", state.tokenizer);
    bos = tok->bos_id();
    eos = tok->eos_id();
  }

  fs::create_directories(options.output_dir);
  const fs::path dir(options.output_dir);
  std::vector<std::string> written;
  const std::string config_path = (dir / "config.json").string();
  write_text_file(config_path, gpt_neox_config_json(model, bos, eos));
  written.push_back(config_path);
  const std::string weights_path = (dir / "model.safetensors").string();
  write_safetensors(weights_path, state.parameters,
                    {{"format", "pt"}, {"source", "tstl"}, {"step", std::to_string(state.step)},
                     {"tokenizer", state.tokenizer}});
  written.push_back(weights_path);
  if (!tokenizer_file.empty()) {
    const std::string copy = (dir / tokenizer_copy).string();
    fs::copy_file(tokenizer_file, copy, fs::copy_options::overwrite_existing);
    written.push_back(copy);
  }
  return written;
}

}  // namespace tstl
