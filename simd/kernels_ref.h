// Scalar reference kernels: plain C++, no SIMD library. Read these first; they define what the
// fast kernels in simd/kernels.h compute, and the tests compare the fast kernels with them
// bit for bit (int32 exactly, f32 bitwise).
#pragma once

#include <cstdint>

#include "simd/packed_format.h"

namespace obr::simd {

// Per-token symmetric quantization of x [T, K] (row-major f32) to int8 codes in
// [lo, hi] = [-2^(bits-1), 2^(bits-1) - 1], bits in [2, 8], clip in (0, 1]:
//   scale[t] = max(|min(x[t, :], 0)|, max(x[t, :], 0)) * clip / hi   (f32, in that order)
//   scale[t] = 1 if that is 0 (all-zero row, or a row so small that the product underflows)
//   q[t, k]  = clamp(nearbyint(x[t, k] / scale[t]), lo, hi)
// nearbyint rounds half to even (default rounding mode). A true division, not a multiply by
// 1 / scale, so that every SIMD target gets the same codes. Throws obr::Error if x holds a
// NaN or an infinity (naming the row and column).
void quantize_act_rows_i8_ref(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                              float* scale);

// y [T, N] = dequantized (qa [T, K] x W^T), with W packed (any format):
//   acc[t, n] = sum_k qa[t, k] * q_w[n, k]                      (int32, exact)
//   y[t, n]   = (float(acc[t, n]) * sa[t]) * W.scale[n]          (f32, in that order)
//   y[t, n]   = y[t, n] + bias[n]                                if bias != nullptr
// qa may hold any int8 codes (A4 codes in [-8, 7] or A8 in [-128, 127]); int32 stays exact
// (also inside the fast kernels, which add 128 to the activations) for K <= 2^20, which
// int4_matmul checks. acc_out [T, N] (optional) receives acc.
void int4_matmul_ref(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                     int32_t* acc_out = nullptr, const float* bias = nullptr);

}  // namespace obr::simd
