// The [model] section of a run config as a ModelConfig (layers/decoder.h).
#pragma once

#include <cstdint>

#include "layers/decoder.h"
#include "train/config.h"

namespace tstl {

// model.ffn = 0 means 4 x hidden; model.vocab_size = 0 takes `tokenizer_vocab` (an error when
// that is 0 too). A nonzero vocab_size different from a nonzero tokenizer_vocab is an error.
ModelConfig model_config_from(const Config& cfg, int64_t tokenizer_vocab = 0);

}  // namespace tstl
