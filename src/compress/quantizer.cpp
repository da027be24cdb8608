#include "compress/quantizer.h"

#include <algorithm>
#include <cstring>
#include <vector>
#include <limits>

#include "core/parallel.h"

namespace obr {

static void check_bits(int bits, const char* what) {
  OBR_CHECK(bits >= 2 && bits <= 8, what, ": bits must be in 2..8 (codes are int8), got ", bits);
}

static void check_matrix_f32(const Tensor& t, const char* name) {
  OBR_CHECK(t.defined() && t.ndim() == 2 && t.dtype() == DType::F32 && t.is_contiguous(), name,
            " must be a contiguous 2-D F32 tensor, got ", t.defined() ? shape_str(t.shape()) : "nothing", " ",
            dtype_name(t.dtype()));
}

double weight_clip_error(const float* w, int64_t n, float scale, int bits) {
  double err = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const float d = fake_quant_weight(w[j], scale, bits) - w[j];
    err += std::pow(double(std::fabs(d)), 2.4);
  }
  return err;
}

namespace {

// weight_clip_error, abandoned (returning +inf) as soon as the partial sum shows that the
// candidate cannot win: the terms are >= 0 and double rounding is monotone, so the final
// sum is >= every partial sum. A candidate that can win is summed exactly as
// weight_clip_error sums it (same terms, same order).
double clip_error_bounded(const float* w, int64_t n, float scale, int bits, double bound) {
  constexpr int64_t kChunk = 256;
  double err = 0.0;
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t j1 = std::min(n, j0 + kChunk);
    for (int64_t j = j0; j < j1; ++j) {
      const float d = fake_quant_weight(w[j], scale, bits) - w[j];
      err += std::pow(double(std::fabs(d)), 2.4);
    }
    if (err >= bound) return std::numeric_limits<double>::infinity();
  }
  return err;
}

// x^2.4 in float for 0 <= x < 8, written so that the compiler vectorizes it (no libm):
// x = m 2^e, m in [1, 2); ln m = 2 atanh(z), z = (m-1)/(m+1) in [0, 1/3), series to z^13
// (truncation < 1e-8); y = 2.4 e + ln(m) 2.4/ln2; 2^y = 2^k e^t, k = round(y),
// |t| <= ln2/2, Taylor to t^6 (< 1.2e-7); 2^k built from bits, flushed to 0 below 2^-126.
// Relative error below 4e-6 for x >= 2^-20 (the float rounding of y, |y| <= 48, dominates);
// for smaller x the result is within 2^-47 of the exact value (both are tiny).
inline float pow24_rank(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const int32_t e = int32_t(b >> 23) - 127;
  const uint32_t mb = (b & 0x007fffffu) | 0x3f800000u;
  float m;
  std::memcpy(&m, &mb, 4);
  const float z = (m - 1.0f) / (m + 1.0f), z2 = z * z;
  const float ln_m =
      2.0f * z *
      (1.0f + z2 * (1.0f / 3 + z2 * (1.0f / 5 + z2 * (1.0f / 7 + z2 * (1.0f / 9 + z2 * (1.0f / 11 + z2 / 13))))));
  const float y = 2.4f * float(e) + ln_m * 3.46246771f;  // 2.4 / ln 2
  const float k = (y + 12582912.0f) - 12582912.0f;       // round(y), |y| < 2^22
  const float t = (y - k) * 0.693147181f;
  const float p =
      1.0f + t * (1.0f + t * (0.5f + t * (1.0f / 6 + t * (1.0f / 24 + t * (1.0f / 120 + t * (1.0f / 720))))));
  int32_t ki = int32_t(k);
  ki = ki > -127 ? ki : -127;  // 2^-127 -> bits 0 -> 0
  const uint32_t kb = uint32_t(ki + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &kb, 4);
  return p * two_k;
}

}  // namespace

// Built for AVX-512, AVX2 and baseline x86 (GCC picks one at load time): the loop vectorizes 16,
// 8 or 4 lanes wide with the same per-element arithmetic; no FMA contraction (fp-contract=off
// for this file), so every target computes the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
double weight_clip_error_rank(const float* w, int64_t n, float scale, int bits) {
  const float maxq = float(weight_maxq(bits)), minq = -(maxq + 1.0f);
  constexpr int kLanes = 16;
  double acc[kLanes] = {};
  float t[kLanes];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      float c = w[j + k] / scale;
      c = c >= minq ? c : minq;
      c = c <= maxq ? c : maxq;
      c = (c + 12582912.0f) - 12582912.0f;
      t[k] = pow24_rank(std::fabs(scale * c - w[j + k]));
    }
    for (int k = 0; k < kLanes; ++k) acc[k] += double(t[k]);
  }
  double sum = 0.0;
  for (int k = 0; k < kLanes; ++k) sum += acc[k];
  for (; j < n; ++j) sum += pow24_rank(std::fabs(fake_quant_weight(w[j], scale, bits) - w[j]));
  return sum;
}

float weight_scale_row(const float* w, int64_t n, const WeightQuantSpec& spec) {
  const float maxq = float(weight_maxq(spec.bits));
  float lo = 0.0f, hi = 0.0f;  // min(w, 0), max(w, 0)
  for (int64_t j = 0; j < n; ++j) {
    lo = w[j] < lo ? w[j] : lo;
    hi = w[j] > hi ? w[j] : hi;
  }
  float xmax = -lo > hi ? -lo : hi;
  xmax = xmax > 1e-5f ? xmax : 1e-5f;
  if (!spec.clip_search) return xmax / maxq;
  constexpr int kSteps = 80;  // reference: int(maxshrink * grid) = int(0.8 * 100)
  float cand[kSteps];
  for (int i = 0; i < kSteps; ++i) cand[i] = (float(1.0 - i / 100.0) * xmax) / maxq;

  // The answer is the first i with the minimal exact err_i (weight_clip_error: the plain
  // strict "<" scan from i = 0). Computing 80 exact sums costs 80 std::pow per weight, so:
  // 1. Rank every candidate with weight_clip_error_rank on the row scaled by 2^-E (E = exponent of
  //    xmax; a power-of-two scaling changes neither the codes nor, up to the factor
  //    2^(-2.4E), the error). Per term the ranking is within 4e-6 relative, or 2^-47
  //    absolute, of the exact scaled term, so with eps = 1e-4 and slack = n 2^-46:
  //       exact_i >= (rank_i - slack) / (1 + eps),  exact_min <= (rank_min + slack) / (1 - eps).
  // 2. Only candidates with rank_i <= (rank_min + slack)(1 + eps)/(1 - eps) + slack can hold
  //    the exact minimum (usually 1 to 3 of the 80); they are summed exactly, in ascending i
  //    with the strict "<" (abandoning a sum once it reaches the best), which returns the
  //    same scale as the full scan.
  int E = 0;
  std::frexp(xmax, &E);  // xmax in [2^(E-1), 2^E)
  std::vector<float> wn(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) wn[size_t(j)] = std::ldexp(w[j], -E);
  double rank[kSteps];
  double rank_min = std::numeric_limits<double>::infinity();
  for (int i = 0; i < kSteps; ++i) {
    rank[i] = weight_clip_error_rank(wn.data(), n, std::ldexp(cand[i], -E), spec.bits);
    rank_min = std::min(rank_min, rank[i]);
  }
  constexpr double kEps = 1e-4;
  const double slack = double(n) * std::ldexp(1.0, -46);
  const double limit = (rank_min + slack) * ((1.0 + kEps) / (1.0 - kEps)) + slack;
  double best = std::numeric_limits<double>::infinity();
  float scale = cand[0];
  for (int i = 0; i < kSteps; ++i) {
    if (!(rank[i] <= limit)) continue;
    const double err = clip_error_bounded(w, n, cand[i], spec.bits, best);
    if (err < best) {
      best = err;
      scale = cand[i];
    }
  }
  return scale;
}

Tensor weight_scales(const Tensor& W, const WeightQuantSpec& spec) {
  check_matrix_f32(W, "weight_scales: W");
  check_bits(spec.bits, "weight_scales");
  const int64_t rows = W.dim(0), cols = W.dim(1);
  Tensor scales = Tensor::zeros({rows});
  const float* w = W.data<float>();
  float* s = scales.data<float>();
  parallel_for(rows, [&](int64_t r) { s[r] = weight_scale_row(w + r * cols, cols, spec); });
  return scales;
}

Tensor quantize_rtn(const Tensor& W, const Tensor& scales, int bits, Tensor* codes_out) {
  check_matrix_f32(W, "quantize_rtn: W");
  check_bits(bits, "quantize_rtn");
  const int64_t rows = W.dim(0), cols = W.dim(1);
  OBR_CHECK(scales.defined() && scales.dtype() == DType::F32 && scales.numel() == rows,
            "quantize_rtn: scales must be F32 with one value per row (", rows, "), got ",
            scales.defined() ? shape_str(scales.shape()) : "nothing");
  Tensor Q = Tensor::zeros({rows, cols});
  Tensor codes = Tensor::zeros({rows, cols}, DType::I8);
  const float* w = W.data<float>();
  const float* s = scales.data<float>();
  float* q = Q.data<float>();
  int8_t* c = codes.data<int8_t>();
  parallel_for(rows, [&](int64_t r) {
    for (int64_t j = 0; j < cols; ++j) {
      const int code = quantize_weight(w[r * cols + j], s[r], bits);
      c[r * cols + j] = int8_t(code);
      q[r * cols + j] = dequantize_weight(code, s[r]);
    }
  });
  if (codes_out) *codes_out = codes;
  return Q;
}

// ---- activations and KV cache --------------------------------------------------------

namespace {

// Parameters of one quantization group (a row of activations, a head of K or V).
struct GroupParams {
  float scale, zero;
  float qmin, qmax;  // code range
};

GroupParams find_group_params(const float* x, int64_t n, int bits, float clip, bool sym, bool include_zero) {
  float lo, hi;
  if (include_zero) {
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
  float xmin = clip * lo, xmax = clip * hi;
  GroupParams g;
  if (sym) {
    const float maxq = float((1 << (bits - 1)) - 1);
    xmax = -xmin > xmax ? -xmin : xmax;  // max(|xmin|, xmax)
    g.scale = xmax == 0.0f ? 1.0f : xmax / maxq;
    g.zero = 0.0f;
    g.qmin = -(maxq + 1.0f);
    g.qmax = maxq;
  } else {
    const float maxq = float((1 << bits) - 1);
    if (xmin == 0.0f && xmax == 0.0f) {
      xmin = -1.0f;
      xmax = 1.0f;
    }
    g.scale = (xmax - xmin) / maxq;
    g.zero = std::nearbyint(-xmin / g.scale);
    g.qmin = 0.0f;
    g.qmax = maxq;
  }
  return g;
}

// clamp(round(x / scale) + zero, qmin, qmax); NaN maps to qmin.
inline float group_code(float x, const GroupParams& g) {
  float q = x / g.scale;
  // Clamp before rounding (same result, see quantize_weight) so round_half_even is exact.
  const float lo = g.qmin - g.zero, hi = g.qmax - g.zero;
  q = q >= lo ? q : lo;
  q = q <= hi ? q : hi;
  return round_half_even(q) + g.zero;
}

inline float group_dequant(float code, const GroupParams& g) { return g.scale * (code - g.zero); }

void check_act_spec(int bits, float clip, const char* what) {
  check_bits(bits, what);
  OBR_CHECK(clip > 0.0f && clip <= 1.0f, what, ": clip ratio must be in (0, 1], got ", clip);
}

}  // namespace

void fake_quant_act_rows(float* X, int64_t rows, int64_t cols, const ActQuantSpec& spec) {
  check_act_spec(spec.bits, spec.clip, "fake_quant_act_rows");
  OBR_CHECK(rows >= 0 && cols > 0, "fake_quant_act_rows: bad shape [", rows, ", ", cols, "]");
  parallel_for(rows, [&](int64_t r) {
    float* x = X + r * cols;
    const GroupParams g = find_group_params(x, cols, spec.bits, spec.clip, spec.sym, true);
    for (int64_t j = 0; j < cols; ++j) x[j] = group_dequant(group_code(x[j], g), g);
  });
}

void quantize_act_rows(const float* X, int64_t rows, int64_t cols, const ActQuantSpec& spec, int8_t* codes,
                       float* scales, float* zeros) {
  check_act_spec(spec.bits, spec.clip, "quantize_act_rows");
  OBR_CHECK(rows >= 0 && cols > 0, "quantize_act_rows: bad shape [", rows, ", ", cols, "]");
  OBR_CHECK(spec.sym || zeros != nullptr, "quantize_act_rows: asymmetric quantization needs a zeros output");
  parallel_for(rows, [&](int64_t r) {
    const float* x = X + r * cols;
    const GroupParams g = find_group_params(x, cols, spec.bits, spec.clip, spec.sym, true);
    for (int64_t j = 0; j < cols; ++j) codes[r * cols + j] = int8_t(group_code(x[j], g));
    scales[r] = g.scale;
    if (zeros) zeros[r] = g.zero;
  });
}

void fake_quant_kv(float* x, int64_t rows, int64_t cols, int64_t group, const KVQuantSpec& spec) {
  check_act_spec(spec.bits, spec.clip, "fake_quant_kv");
  const int64_t g = spec.group > 0 ? spec.group : group;
  OBR_CHECK(g > 0 && cols > 0 && cols % g == 0, "fake_quant_kv: row length ", cols,
            " must be a positive multiple of the group size ", g);
  const int64_t groups = rows * (cols / g);
  parallel_for(groups, [&](int64_t k) {
    float* v = x + k * g;
    const GroupParams p = find_group_params(v, g, spec.bits, spec.clip, spec.sym, spec.include_zero);
    for (int64_t j = 0; j < g; ++j) v[j] = group_dequant(group_code(v[j], p), p);
  });
}

}  // namespace obr
