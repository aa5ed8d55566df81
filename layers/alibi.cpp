// ALiBi slopes and their inference-time rescalings (interpolation, static and dynamic NTK-ALiBi).
#include "layers/alibi.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tstl {

namespace {

bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

std::vector<double> power_of_two_slopes(int64_t heads) {
  std::vector<double> m(static_cast<size_t>(heads));
  for (int64_t h = 1; h <= heads; ++h)
    m[static_cast<size_t>(h - 1)] = std::exp2(-8.0 * static_cast<double>(h) / static_cast<double>(heads));
  return m;
}

}  // namespace

std::vector<double> alibi_slopes(int64_t heads) {
  TSTL_CHECK(heads >= 1, "alibi_slopes: need at least one head, got ", heads);
  if (is_power_of_two(heads)) return power_of_two_slopes(heads);
  int64_t c = 1;
  while (c * 2 <= heads) c *= 2;
  std::vector<double> m = power_of_two_slopes(c);
  const std::vector<double> finer = power_of_two_slopes(2 * c);
  for (int64_t k = 0; k < heads - c; ++k) m.push_back(finer[static_cast<size_t>(2 * k)]);
  return m;
}

const char* alibi_scaling_name(AlibiScaling s) {
  switch (s) {
    case AlibiScaling::None: return "none";
    case AlibiScaling::Interp: return "interp";
    case AlibiScaling::NTK: return "ntk";
    case AlibiScaling::DynamicNTK: return "dynamic-ntk";
  }
  return "?";
}

std::vector<double> alibi_scaled_slopes(int64_t heads, int64_t total_len, const AlibiOptions& o) {
  std::vector<double> m = alibi_slopes(heads);
  if (o.scaling == AlibiScaling::None) return m;
  TSTL_CHECK(o.factor >= 1, "alibi: scaling ", alibi_scaling_name(o.scaling), " needs a factor >= 1, got ", o.factor);
  if (o.scaling == AlibiScaling::Interp) {
    for (double& v : m) v /= o.factor;
    return m;
  }
  double a = o.factor;
  if (o.scaling == AlibiScaling::DynamicNTK) {
    TSTL_CHECK(o.train_len > 0, "alibi: dynamic-ntk needs train_len > 0, got ", o.train_len);
    TSTL_CHECK(total_len > 0, "alibi: dynamic-ntk needs the current total length > 0, got ", total_len);
    a = std::max(o.factor * static_cast<double>(total_len) / static_cast<double>(o.train_len), 1.0);
  }
  if (heads == 1) return m;  // the single head is the steepest: unchanged
  // Rank heads from the steepest (largest slope) to the flattest.
  std::vector<size_t> order(m.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return m[i] > m[j]; });
  std::vector<double> scaled(m.size());
  for (size_t rank = 0; rank < order.size(); ++rank)
    scaled[order[rank]] = m[order[rank]] * std::pow(a, -static_cast<double>(rank) / static_cast<double>(heads - 1));
  return scaled;
}

Tensor alibi_slopes_tensor(int64_t heads, int64_t total_len, const AlibiOptions& options, DType dtype, Device device) {
  Tensor t = Tensor::from_vector(alibi_scaled_slopes(heads, total_len, options), {heads});  // (H)
  if (table_dtype_for(dtype) != DType::F64) t = t.to(table_dtype_for(dtype));  // f32 for bf16 activations
  return device == Device::CPU ? t : t.to(device);
}

}  // namespace tstl
