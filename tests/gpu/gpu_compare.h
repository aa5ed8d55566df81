// Helpers of the GPU suite: comparing a CUDA tensor with its CPU reference, and the tolerances.
//
// Error measure: max_i |gpu_i - cpu_i| / max_i |cpu_i| (relative to the reference tensor's
// largest magnitude, so elements near zero do not dominate), against a tolerance per dtype:
//   f32  1e-5  (same math; only summation order and device libm ulps differ)
//   bf16 2e-2  (inputs are the same bf16 values on both sides; the CPU computes in f32 while the
//               GPU rounds every op's output to bf16, 2^-9 relative each, through a few ops)
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tstl::gpu_test {

inline double tolerance(DType dtype) { return dtype == DType::BF16 ? 2e-2 : 1e-5; }

// Largest |a - b| relative to max |b|; 0 when both are all zero.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  if (diff == 0) return 0;
  return scale > 0 ? diff / scale : INFINITY;
}

inline void expect_close(const Tensor& gpu, const Tensor& cpu, double tol, const std::string& what) {
  ASSERT_TRUE(gpu.defined()) << what << ": no GPU tensor";
  ASSERT_TRUE(cpu.defined()) << what << ": no CPU tensor";
  EXPECT_EQ(gpu.device(), Device::CUDA) << what;
  EXPECT_EQ(cpu.device(), Device::CPU) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what << ": shapes " << shape_str(gpu.shape()) << " vs "
                                      << shape_str(cpu.shape());
  const std::vector<double> g = gpu.to_vector<double>(), c = cpu.to_vector<double>();
  for (size_t i = 0; i < g.size(); ++i) ASSERT_TRUE(std::isfinite(g[i])) << what << ": element " << i << " = " << g[i];
  EXPECT_LE(relative_error(g, c), tol) << what << " (" << dtype_name(gpu.dtype()) << ", " << g.size()
                                       << " elements)";
}

}  // namespace tstl::gpu_test
