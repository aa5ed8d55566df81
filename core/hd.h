// TSTL_HD marks the per-element math shared by the CPU and the CUDA backend: under nvcc it
// expands to __host__ __device__, elsewhere to plain inline, so one definition serves both.
#pragma once

#if defined(__CUDACC__)
#define TSTL_HD __host__ __device__ __forceinline__
#else
#define TSTL_HD inline
#endif
