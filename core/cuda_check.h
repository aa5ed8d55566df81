// Checked calls into CUDA, cuBLAS, cuDNN and NCCL: a failure throws tstl::Error naming the call,
// the file and line, and the library's own message. Include only from .cu files or CUDA-only code.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_CHECK(call)                                                                      \
  do {                                                                                        \
    cudaError_t err_ = (call);                                                                \
    if (err_ != cudaSuccess) TSTL_FAIL("CUDA error in ", #call, ": ", cudaGetErrorString(err_)); \
  } while (0)

// After every kernel launch: a bad launch configuration is reported where it happened.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                        \
  do {                                                                                            \
    cublasStatus_t st_ = (call);                                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                             \
      TSTL_FAIL("cuBLAS error in ", #call, ": ", cublasGetStatusName(st_), " (", cublasGetStatusString(st_), ")"); \
  } while (0)

#ifdef TSTL_WITH_CUDNN
#include <cudnn.h>
#define CUDNN_CHECK(call)                                                                   \
  do {                                                                                      \
    cudnnStatus_t st_ = (call);                                                             \
    if (st_ != CUDNN_STATUS_SUCCESS) TSTL_FAIL("cuDNN error in ", #call, ": ", cudnnGetErrorString(st_)); \
  } while (0)
#endif

#ifdef TSTL_WITH_NCCL
#include <nccl.h>
#define NCCL_CHECK(call)                                                                    \
  do {                                                                                      \
    ncclResult_t st_ = (call);                                                              \
    if (st_ != ncclSuccess) TSTL_FAIL("NCCL error in ", #call, ": ", ncclGetErrorString(st_)); \
  } while (0)
#endif
