// Scalar conversions between float and the 16-bit float formats (IEEE fp16, bfloat16).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/host_device.h"

namespace ptq {

PTQ_HD float f32_from_bits(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
PTQ_HD uint32_t f32_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

PTQ_HD float fp16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return f32_from_bits(sign);
    // Subnormal: value = man * 2^-24.
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000 | (man << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest, ties to even; overflow gives +-inf, NaN stays NaN.
PTQ_HD uint16_t f32_to_fp16(float f) {
  uint32_t x = f32_to_bits(f);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return uint16_t(sign | 0x7e00);           // NaN
  if (abs >= 0x477ff000) return uint16_t(sign | 0x7c00);          // >= 65520 rounds to inf
  if (abs < 0x38800000) {                                         // below the smallest normal 2^-14
    // Subnormal: add in float so the FPU does the round-half-even at 2^-24 granularity.
    float v = f32_from_bits(abs) + 0.5f;
    return uint16_t(sign | (f32_to_bits(v) - 0x3f000000));
  }
  uint32_t mant_odd = (abs >> 13) & 1;
  abs += 0xc8000fff + mant_odd;  // re-bias exponent (-112 << 23) and round half to even
  return uint16_t(sign | (abs >> 13));
}

PTQ_HD float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

PTQ_HD uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return uint16_t(x >> 16);
}

}  // namespace ptq
