// Scalar conversions between float32 and the 16-bit float formats, bit-exact with
// PyTorch: round to nearest even, NaN kept NaN (quiet), overflow to infinity.
#pragma once

#include <cstdint>
#include <cstring>

namespace obr {

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;            // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;           // overflow (>= 65520) -> inf
  if (a < 0x38800000u) {                                 // subnormal or zero in f16
    if (a < 0x33000000u) return sign;                    // < 2^-25 rounds to zero
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                            // 14 + (112 - e) + 1 - 1
    uint32_t r = m >> (shift - 1 + 0);
    // r has one extra bit for rounding below
    uint32_t halfway_bits = m & ((1u << (shift - 1)) - 1);
    uint32_t q = r >> 1;
    uint32_t round_bit = r & 1u;
    if (round_bit && (halfway_bits || (q & 1u))) ++q;
    return sign | uint16_t(q);
  }
  uint32_t r = a - 0x38000000u;                          // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);                        // round to nearest even
  return sign | uint16_t(r >> 13);
}

}  // namespace obr
