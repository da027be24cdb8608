// Scalar reference twins of the packed KV4 kernels (simd/kv4_cache.h): plain C++, no SIMD
// library. They define what the fast kernels compute; the tests compare every SIMD target
// with them bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "simd/kv4_cache.h"

namespace obr::simd {

// Scale and zero point of one group of n values, the formula of kv4_cache.h (the same
// operations, in the same order, as compress/quantizer.cpp's find_group_params, asymmetric).
struct Kv4GroupParams {
  float scale, zero;
};
Kv4GroupParams kv4_group_params_ref(const float* x, int64_t n, const Kv4Quant& q);

// code = clamp(round(x / scale) + zero, 0, maxq) as an integer (0 for a NaN result, which only
// a NaN input or a zero scale can produce).
int kv4_code_ref(float x, const Kv4GroupParams& g, int bits);

// Code of column c of row t (0..15), and its dequantized value scale * (float(code) - zero).
inline int kv4_code_at(const Kv4Matrix& m, int64_t t, int64_t c) {
  const uint8_t b = m.codes[size_t(t * m.row_bytes() + c / 2)];
  return (c & 1) ? b >> 4 : b & 15;
}
inline float kv4_deq_at(const Kv4Matrix& m, int64_t t, int64_t c) {
  const int64_t g = t * m.groups_per_row() + c / m.group;
  return m.scale[size_t(g)] * (float(kv4_code_at(m, t, c)) - m.zero[size_t(g)]);
}

// dot16 of kv4_cache.h: 16 partial sums over d % 16, then the pairwise tree.
void kv4_scores_ref(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n,
                    float scale, float* s);

// out[d] = sum over j = 0..n-1 (sequential, from +0) of p[j] * deq(V[j, col0 + d]).
void kv4_weighted_sum_ref(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n,
                          float* out);

}  // namespace obr::simd
