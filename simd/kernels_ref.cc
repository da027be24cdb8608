// Scalar reference kernels (see kernels_ref.h): the test oracle, one plain loop each.
#include "simd/kernels_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/check.h"

// Every f32 operation rounds on its own, as the contract says: no fused multiply-add even when
// the build targets a CPU with FMA (GCC contracts a * b + c by default in C++).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace obr::simd {

void quantize_act_rows_i8_ref(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                              float* scale) {
  OBR_CHECK(T >= 0 && K > 0, "quantize_act_rows_i8: bad shape [", T, ", ", K, "]");
  OBR_CHECK(bits >= 2 && bits <= 8, "quantize_act_rows_i8: bits must be in [2, 8], got ", bits);
  OBR_CHECK(clip > 0.0f && clip <= 1.0f, "quantize_act_rows_i8: clip must be in (0, 1], got ", clip);
  const float hi = float((1 << (bits - 1)) - 1);
  const float lo = -hi - 1.0f;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * K;
    float xmin = 0.0f, xmax = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      OBR_CHECK(std::isfinite(xt[k]), "quantize_act_rows_i8: x[", t, ", ", k, "] = ", xt[k],
                " is not finite");
      xmin = std::min(xmin, xt[k]);
      xmax = std::max(xmax, xt[k]);
    }
    float s = std::max(-xmin, xmax) * clip / hi;
    if (s == 0.0f) s = 1.0f;
    scale[t] = s;
    for (int64_t k = 0; k < K; ++k) {
      const float v = std::nearbyint(xt[k] / s);
      q[t * K + k] = int8_t(std::min(std::max(v, lo), hi));
    }
  }
}

void int4_matmul_ref(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                     int32_t* acc_out, const float* bias) {
  OBR_CHECK(T >= 0, "int4_matmul: T must be >= 0, got ", T);
  const int64_t N = W.n_out, K = W.k_in;
  std::vector<int8_t> w_row(static_cast<size_t>(K));
  for (int64_t n = 0; n < N; ++n) {
    decode_row_ref(W, n, w_row.data());
    for (int64_t t = 0; t < T; ++t) {
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += int32_t(qa[t * K + k]) * int32_t(w_row[size_t(k)]);
      float v = (float(acc) * sa[t]) * W.scale[size_t(n)];
      if (bias) v = v + bias[n];
      y[t * N + n] = v;
      if (acc_out) acc_out[t * N + n] = acc;
    }
  }
}

}  // namespace obr::simd
