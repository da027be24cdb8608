// Scalar reference of the packed KV4 cache (see kv4_ref.h, layout in kv4_cache.h), and the
// parts that have no SIMD twin: allocation, quantization of new rows, dequantization.
#include "simd/kv4_ref.h"

#include <cmath>
#include <limits>

#include "core/check.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Every f32 operation rounds on its own: no fused multiply-add even when the build targets a
// CPU with FMA (GCC contracts a * b + c by default in C++), so that the SIMD targets, compiled
// with the same setting, agree to the bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace obr::simd {

bool kv4_supported(int64_t head_dim, int64_t cols, int64_t group, int bits) {
  return bits >= 2 && bits <= 4 && head_dim > 0 && head_dim % kKv4Chunk == 0 && group > 0 &&
         group % kKv4Chunk == 0 && cols > 0 && cols % head_dim == 0 && cols % group == 0;
}

Kv4Matrix kv4_allocate(int64_t rows, int64_t cols, int64_t head_dim, int64_t group) {
  OBR_CHECK(rows >= 0 && kv4_supported(head_dim, cols, group, 4), "kv4_allocate: unsupported shape: rows ",
            rows, ", cols ", cols, ", head_dim ", head_dim, ", group ", group,
            " (head_dim and group must be multiples of 16 and divide cols)");
  Kv4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  m.codes.assign(size_t(rows * (cols / 2)), 0);
  m.scale.assign(size_t(rows * (cols / group)), 0.0f);
  m.zero.assign(size_t(rows * (cols / group)), 0.0f);
  return m;
}

Kv4GroupParams kv4_group_params_ref(const float* x, int64_t n, const Kv4Quant& q) {
  float lo, hi;
  if (q.include_zero) {
    lo = 0.0f;
    hi = 0.0f;
  } else {
    lo = std::numeric_limits<float>::infinity();
    hi = -std::numeric_limits<float>::infinity();
  }
  for (int64_t j = 0; j < n; ++j) {
    lo = x[j] < lo ? x[j] : lo;  // NaN is skipped, like fmin/fmax
    hi = x[j] > hi ? x[j] : hi;
  }
  float xmin = q.clip * lo, xmax = q.clip * hi;
  const float maxq = float((1 << q.bits) - 1);
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  Kv4GroupParams g;
  g.scale = (xmax - xmin) / maxq;
  g.zero = std::nearbyint(-xmin / g.scale);
  return g;
}

int kv4_code_ref(float x, const Kv4GroupParams& g, int bits) {
  const float maxq = float((1 << bits) - 1);
  float v = x / g.scale;
  // Clamp before rounding (the bounds are integers, so the integer is the same) to keep the
  // argument of the round-half-even trick below 2^22.
  const float lo = 0.0f - g.zero, hi = maxq - g.zero;
  v = v >= lo ? v : lo;
  v = v <= hi ? v : hi;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: (v + kMagic) - kMagic rounds half to even
  const float code = ((v + kMagic) - kMagic) + g.zero;
  return code >= 0.0f && code <= maxq ? int(code) : 0;
}

void kv4_write_rows(Kv4Matrix& m, int64_t row0, const float* x, int64_t T, const Kv4Quant& q) {
  OBR_CHECK(!m.empty() && row0 >= 0 && T >= 0 && row0 + T <= m.rows, "kv4_write_rows: rows [", row0, ", ",
            row0 + T, ") do not fit a cache of ", m.rows, " rows");
  OBR_CHECK(q.group == 0 || q.group == m.group, "kv4_write_rows: quantizer group ", q.group,
            " differs from the cache's ", m.group);
  OBR_CHECK(q.bits >= 2 && q.bits <= 4 && q.clip > 0.0f && q.clip <= 1.0f, "kv4_write_rows: bits ", q.bits,
            " must be in 2..4 and clip ", q.clip, " in (0, 1]");
  OBR_CHECK(T == 0 || x, "kv4_write_rows: null input for ", T, " rows");
  const int64_t G = m.group, gpr = m.groups_per_row(), n_items = T * gpr;
  // Each (row, group) writes its own G/2 bytes and its own scale and zero.
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_items * G >= (int64_t(1) << 16))
#endif
  for (int64_t it = 0; it < n_items; ++it) {
    const int64_t t = it / gpr, g = it % gpr;
    const float* v = x + t * m.cols + g * G;
    const Kv4GroupParams p = kv4_group_params_ref(v, G, q);
    uint8_t* dst = m.codes.data() + (row0 + t) * m.row_bytes() + g * G / 2;
    for (int64_t i = 0; i < G; i += 2)
      dst[i / 2] = uint8_t(kv4_code_ref(v[i], p, q.bits) | kv4_code_ref(v[i + 1], p, q.bits) << 4);
    m.scale[size_t((row0 + t) * gpr + g)] = p.scale;
    m.zero[size_t((row0 + t) * gpr + g)] = p.zero;
  }
}

void kv4_dequant_rows(const Kv4Matrix& m, int64_t row0, int64_t T, float* out) {
  OBR_CHECK(row0 >= 0 && T >= 0 && row0 + T <= m.rows, "kv4_dequant_rows: rows [", row0, ", ", row0 + T,
            ") outside a cache of ", m.rows, " rows");
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < m.cols; ++c) out[t * m.cols + c] = kv4_deq_at(m, row0 + t, c);
}

void kv4_scores_ref(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n, float scale,
                    float* s) {
  for (int64_t j = 0; j < n; ++j) {
    float acc[kKv4Chunk] = {};
    for (int64_t d = 0; d < hd; ++d) acc[d % kKv4Chunk] = acc[d % kKv4Chunk] + q[d] * kv4_deq_at(K, j, col0 + d);
    for (int64_t w = kKv4Chunk / 2; w >= 1; w /= 2)
      for (int64_t l = 0; l < w; ++l) acc[l] = acc[l] + acc[l + w];
    s[j] = acc[0] * scale;
  }
}

void kv4_weighted_sum_ref(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n, float* out) {
  for (int64_t d = 0; d < hd; ++d) out[d] = 0.0f;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < hd; ++d) out[d] = out[d] + p[j] * kv4_deq_at(V, j, col0 + d);
}

}  // namespace obr::simd
