// Element types and devices. bf16 is stored as the upper 16 bits of an IEEE float; conversion
// rounds to nearest even (the TSTL_HD helpers below are shared by CPU and CUDA code).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/hd.h"

namespace tstl {

enum class DType : uint8_t { F32, F64, BF16, I32, I64, U16, U32 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
bool dtype_is_float(DType t);

struct bf16 {
  uint16_t bits;
};

TSTL_HD float bf16_to_float(bf16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

TSTL_HD bf16 float_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// The dtype of the tables, factors, scales and statistics that go with activations of dtype
// `activation`: f32 for bf16 (rounding RoPE angles, log-n factors or ALiBi slopes to 8 bits would
// change the model), the activation dtype itself otherwise.
inline DType table_dtype_for(DType activation) { return activation == DType::BF16 ? DType::F32 : activation; }

template <class T>
struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<bf16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint16_t> { static constexpr DType value = DType::U16; };
template <> struct dtype_of<uint32_t> { static constexpr DType value = DType::U32; };

// Calls fn(T{}) with T the C++ type of a floating dtype that CPU kernels support (f32, f64):
//   visit_float(t.dtype(), [&](auto tag) { using T = decltype(tag); ... });
template <class Fn>
void visit_float(DType dtype, Fn&& fn);

}  // namespace tstl

template <class Fn>
void tstl::visit_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::F32: fn(float{}); return;
    case DType::F64: fn(double{}); return;
    default: TSTL_FAIL("expected dtype f32 or f64, got ", dtype_name(dtype));
  }
}
