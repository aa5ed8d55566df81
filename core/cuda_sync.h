// The count of host-device synchronisations. Every call by which tstl makes the host wait for the
// device (a stream or device synchronise, a device-to-host read) goes through the counted helpers
// of core/cuda_sync_cuda.h, so a test can require a number of synchronisations per training step
// (tests/gpu/test_gpu_syncs.cpp: one). Usable from host code; without CUDA the count stays 0.
#pragma once

#include <cstdint>

namespace tstl::cuda {

// Synchronising calls made through the counted helpers since the process started.
int64_t sync_count();
// Records one synchronising call (called by the helpers, not by kernels' launchers directly).
void note_sync();

}  // namespace tstl::cuda
