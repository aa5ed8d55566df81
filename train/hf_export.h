// `tstl export hf`: a `rope` checkpoint as a Hugging Face GPT-NeoX model directory that
// transformers opens with GPTNeoXForCausalLM.from_pretrained(DIR):
//   config.json        architectures ["GPTNeoXForCausalLM"], rotary_pct 1.0, rotary_emb_base,
//                      use_parallel_residual and layer_norm_eps as trained, hidden_act "gelu"
//                      (tstl's exact erf GELU), untied embeddings, the tokenizer's special ids
//   model.safetensors  every parameter under its checkpoint name (tstl already uses GPT-NeoX's
//                      names and layouts, docs/model.md), bit for bit in its saved dtype
//   tokenizer.model    a copy of the SentencePiece model, when the run used one
//   tokenizer.json     a copy of the Hugging Face tokenizer.json (hf:PATH), when the run used one
// Only what GPT-NeoX computes is exported: variant rope with LayerNorm, biases and no trained
// log-n; anything else is refused naming the key and why.
//
// The safetensors layout: u64 little-endian N, then N bytes of JSON header
//   {"__metadata__": {...}, NAME: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
// (padded with spaces so the data starts 8-byte aligned), then the tensors' bytes, row-major,
// little-endian, offsets relative to the first data byte, contiguous and in header order.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layers/decoder.h"
#include "optim/adamw.h"

namespace tstl {

// Writes `tensors` (any device; F32, F64 or BF16) as a safetensors file, atomically (tmp + rename).
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata);

// Throws, naming the key and the reason, when GPT-NeoX cannot compute `model` as tstl does.
void check_gpt_neox_exportable(const ModelConfig& model);

// config.json's text; bos/eos -1 when unknown (written as null).
std::string gpt_neox_config_json(const ModelConfig& model, int32_t bos_id, int32_t eos_id);

struct HfExportOptions {
  std::string checkpoint;
  std::string output_dir;      // created when missing
  // A tokenizer spec (as data.tokenizer) instead of the run's: a moved model file, or the text
  // form of an external:NAME run (checked to fit the model's vocabulary).
  std::string tokenizer;
};

// Returns the files written, in order.
std::vector<std::string> export_hf(const HfExportOptions& options);

}  // namespace tstl
