#include "compress/quantizer.h"

#include <algorithm>
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
double clip_error_bounded(const float* w, int64_t n, float scale, int bits, double bound, bool ties_lose) {
  constexpr int64_t kChunk = 256;
  double err = 0.0;
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t j1 = std::min(n, j0 + kChunk);
    for (int64_t j = j0; j < j1; ++j) {
      const float d = fake_quant_weight(w[j], scale, bits) - w[j];
      err += std::pow(double(std::fabs(d)), 2.4);
    }
    if (err > bound || (ties_lose && err == bound)) return std::numeric_limits<double>::infinity();
  }
  return err;
}

}  // namespace

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
  // The answer is the first i with the minimal err_i (the plain strict "<" scan from i = 0).
  // To do less work, a candidate guessed from every 16th weight is summed in full first;
  // then every other candidate, in ascending i, is abandoned once its partial sum reaches
  // the best so far (ties go to the lower i, as in the plain scan). Same answer, ~2x faster.
  constexpr int kSteps = 80;  // reference: int(maxshrink * grid) = int(0.8 * 100)
  float cand[kSteps];
  for (int i = 0; i < kSteps; ++i) cand[i] = (float(1.0 - i / 100.0) * xmax) / maxq;
  int guess = 0;
  double guess_err = std::numeric_limits<double>::infinity();
  for (int i = 0; i < kSteps; ++i) {
    double e = 0.0;
    for (int64_t j = 0; j < n; j += 16) {
      const double d = std::fabs(double(fake_quant_weight(w[j], cand[i], spec.bits) - w[j]));
      e += d * d * std::sqrt(d);  // |d|^2.5: a cheap stand-in for |d|^2.4, only to guess
    }
    if (e < guess_err) {
      guess_err = e;
      guess = i;
    }
  }
  double best = weight_clip_error(w, n, cand[guess], spec.bits);
  int best_i = guess;
  for (int i = 0; i < kSteps; ++i) {
    if (i == guess) continue;
    const double e = clip_error_bounded(w, n, cand[i], spec.bits, best, i > best_i);
    if (e < best || (e == best && i < best_i)) {
      best = e;
      best_i = i;
    }
  }
  return cand[best_i];
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
