// cuDNN's fused attention (the SDPA node of the cuDNN frontend graph API) as a peer of tstl's
// flash attention: the same contract as layers/flash_attention.h for the cases it covers, so the
// benchmark and the GPU tests can run both on the same data.
//
// Covered: bf16 q (B, H, N, d), k, v (B, H, M, d) with N <= M, causal with the queries at the end
// of the keys (offset M - N: cuDNN's bottom-right aligned causal mask), any scale, and ALiBi with
// cuDNN's own slopes (2^(-8h/H), H a power of two) when `alibi` is set. Not covered: log-n
// factors, other slopes (NTK-ALiBi, interpolation), an explicit query offset.
// LSE (B, H, N) is f32, natural log, as tstl's. Graphs are built once per shape and cached.
//
// Compiled only where the frontend's headers were found (TSTL_WITH_CUDNN_FRONTEND; installed by
// scripts/install-deps next to the CUDA toolkit); elsewhere cudnn_attention_available() is false
// and the other functions throw.
#pragma once

#include "core/tensor.h"

namespace tstl::kernels {

bool cudnn_attention_available();

// o (B, H, N, d) bf16 and lse (B, H, N) f32 are written.
void cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool alibi, Tensor& o,
                             Tensor& lse);
// dq, dk, dv are written (=).
void cudnn_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                              const Tensor& d_o, double scale, bool alibi, Tensor& dq, Tensor& dk, Tensor& dv);

}  // namespace tstl::kernels
