// The counted synchronising calls (core/cuda_sync.h). Include only from .cu files: a kernel
// launcher that must wait for the device calls one of these, never cudaStreamSynchronize,
// cudaDeviceSynchronize or a blocking cudaMemcpy directly, so that tests can count the waits.
#pragma once

#include <cstddef>

#include "core/cuda_check.h"
#include "core/cuda_sync.h"

namespace tstl::cuda {

// Blocks the host until `stream` has finished its work.
inline void counted_stream_synchronize(cudaStream_t stream) {
  note_sync();
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Blocks the host until the device is idle.
inline void counted_device_synchronize() {
  note_sync();
  CUDA_CHECK(cudaDeviceSynchronize());
}

// Copies `bytes` from device memory to host memory once `stream`'s earlier work is done: the
// host waits for it (one synchronisation).
inline void counted_read_to_host(void* host, const void* device, size_t bytes, cudaStream_t stream) {
  note_sync();
  CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace tstl::cuda
