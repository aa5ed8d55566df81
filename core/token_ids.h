// Token ids checked on the host, before they are uploaded to a device. The CUDA embedding and
// cross-entropy kernels read nothing back (a training step makes no host synchronisation,
// docs/gpu.md), so an id outside the vocabulary is caught where the ids still are on the host;
// the messages are the CPU kernels' (core/embedding_cpu.cpp, core/cross_entropy_cpu.cpp).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tstl {

// ids: i32 or i64 on the CPU, any shape (flattened). Throws "embedding: id 11 at position 2
// outside [0, 11)" for the first id outside [0, vocab).
void check_embedding_ids(const Tensor& ids, int64_t vocab);
// targets: i32 or i64 on the CPU. Throws "cross_entropy: target 6 at row 3 outside [0, 6)" for
// the first target outside [0, vocab) that is not ignore_index.
void check_target_ids(const Tensor& targets, int64_t vocab, int64_t ignore_index);

}  // namespace tstl
