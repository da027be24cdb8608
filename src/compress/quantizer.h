// Quantizers of ALGORITHM.md section 2: weights (W4, symmetric per output channel, clip
// search), activations (A4, per token) and the KV cache (K4V4, asymmetric per head).
//
// Every formula below is evaluated in float32 in the order written, like the reference
// (QuaRot quant_utils.py: WeightQuantizer, ActQuantizer, sym_quant, asym_quant), so other
// code can reproduce it to the bit:
//   round(x)  = round half to EVEN (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2), like
//               torch.round and std::nearbyint in the default rounding mode; NOT std::round.
//               Implemented as round_half_even() below (same integers as std::nearbyint).
//   a / b     = IEEE float division (never a multiplication by a reciprocal).
//   c * x     = float(c) * x for a double option c (clip, p): the constant is first rounded
//               to float, as PyTorch does with a Python scalar and a float32 tensor.
// Clamps are written as comparisons: a NaN input quantizes to the lowest level (no UB).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace obr {

// ---------------------------------------------------------------------------------------
// Weights: symmetric, per output channel (one scale per row of W [C_out, C_in]).
//   maxq = 2^(bits-1) - 1                       (7 for 4 bits; levels -8..7)
//   xmax = max(|min(w_row, 0)|, max(w_row, 0)), then xmax = max(xmax, 1e-5f)
//   scale = xmax / maxq                          (no clip search)
//   code(w) = clamp(round(w / scale), -(maxq+1), maxq)
//   Q(w)  = scale * code(w)                      (dequantized value, exact in float)
// Clip search (reference "w_clip", on by default): for i = 0..79 (int(0.8 * 100) steps),
//   p       = 1 - i/100                          (double, then rounded to float)
//   scale_p = (float(p) * xmax) / maxq           (float)
//   err_p   = sum_j |Q_p(w_j) - w_j|^2.4         (the difference in float; |d|^2.4 and the
//                                                 sum in double, see below)
//   the row keeps scale_p of the first i with err_p < best (strict <, best starts at +inf).
// The reference sums err_p in float32 in the order of its GPU reduction; we sum in double
// (std::pow(double(|d|), 2.4), ascending j), so two candidates whose errors tie within
// float rounding may be ordered differently from the reference. i = 0 gives xmax / maxq, so
// the search never returns a scale larger than the plain one.
// An all-zero row gets scale 1e-5f / maxq and all codes 0.
struct WeightQuantSpec {
  int bits = 4;             // 2..8 (codes are stored as int8)
  bool clip_search = true;  // the reference's w_clip grid search
};

inline int weight_maxq(int bits) { return (1 << (bits - 1)) - 1; }

// Per-row scales, f32 [C_out], of W (f32 [C_out, C_in]).
Tensor weight_scales(const Tensor& W, const WeightQuantSpec& spec);

// Scales of one row of n weights (the kernel of weight_scales, exposed for tests).
float weight_scale_row(const float* w, int64_t n, const WeightQuantSpec& spec);

// Sum over j of |Q(w_j) - w_j|^2.4 for one row with the given scale: d = Q(w_j) - w_j in
// float, std::pow(double(|d|), 2.4), summed in double in ascending j. This is the definition.
double weight_clip_error(const float* w, int64_t n, float scale, int bits);
// The same sum with a vectorizable libm-free |d|^2.4 in float, for rows with max|w| < 2:
// each term within 4e-6 relative (|d| >= 2^-20) or 2^-47 absolute of the exact one. It only
// ranks the clip candidates; weight_scale_row decides among the close ones with the exact
// sum, so the chosen scale is the one the plain scan picks (exposed for its test).
double weight_clip_error_rank(const float* w, int64_t n, float scale, int bits);

// round(x) for |x| <= 2^22: adding and subtracting 1.5 * 2^23 rounds to the nearest integer,
// ties to even, in float arithmetic; equal to std::nearbyint(x) in the default rounding mode
// (except that -0.5 .. -0 give +0 instead of -0). glibc's nearbyintf, fminf and fmaxf are
// out-of-line calls on x86-64 without SSE4.1, ten times the cost of this in the hot loops.
inline float round_half_even(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagic) - kMagic;
}

// code(w) = clamp(round(w / scale), -(maxq+1), maxq). The clamp is applied to w / scale
// before rounding, which gives the same integer (the bounds are integers and round is
// monotone) and keeps the argument of round_half_even small. NaN maps to -(maxq+1).
inline int quantize_weight(float w, float scale, int bits) {
  const float maxq = float(weight_maxq(bits)), minq = -(maxq + 1.0f);
  float x = w / scale;
  x = x >= minq ? x : minq;
  x = x <= maxq ? x : maxq;
  return int(round_half_even(x));
}

inline float dequantize_weight(int code, float scale) { return float(code) * scale; }

// Q(w) = scale * code(w).
inline float fake_quant_weight(float w, float scale, int bits) {
  return dequantize_weight(quantize_weight(w, scale, bits), scale);
}

// Round to nearest with the given per-row scales: returns Q(W) (f32 [C_out, C_in]); when
// codes_out is given it receives the codes (I8 [C_out, C_in]), so Q(W) == code * scale[row]
// element by element.
Tensor quantize_rtn(const Tensor& W, const Tensor& scales, int bits, Tensor* codes_out = nullptr);

// ---------------------------------------------------------------------------------------
// Activations: per token (one scale per row of X [rows, cols]). QuaRot ActQuantizer,
// groupsize -1:
//   xmin = float(clip) * min(min(x_row), 0)     xmax = float(clip) * max(max(x_row), 0)
//   sym  (default): maxq = 2^(bits-1) - 1; xmax = max(|xmin|, xmax);
//                   scale = xmax / maxq, and scale = 1 where xmax == 0 (all-zero row);
//                   code = clamp(round(x / scale), -(maxq+1), maxq);  x~ = scale * code.
//   asym:           maxq = 2^bits - 1; where xmin == 0 and xmax == 0: xmin = -1, xmax = +1;
//                   scale = (xmax - xmin) / maxq;  zero = round(-xmin / scale);
//                   code = clamp(round(x / scale) + zero, 0, maxq);  x~ = scale * (code - zero).
// QuaRot paper setting: 4 bits, symmetric, clip 0.9 (the reference's default clip is 1.0).
struct ActQuantSpec {
  int bits = 4;       // 2..8
  float clip = 0.9f;  // in (0, 1]
  bool sym = true;
};

// In place: X[r, :] <- x~ for every row.
void fake_quant_act_rows(float* X, int64_t rows, int64_t cols, const ActQuantSpec& spec);

// Codes (int8 [rows, cols]) and per-row scales (f32 [rows]); for asym also the per-row zero
// points (f32 [rows], integers; `zeros` must then be non-null), codes in 0..maxq and
// x~ = scale * (code - zero). For sym `zeros` may be null (it is filled with 0 if given).
void quantize_act_rows(const float* X, int64_t rows, int64_t cols, const ActQuantSpec& spec, int8_t* codes,
                       float* scales, float* zeros = nullptr);

// ---------------------------------------------------------------------------------------
// KV cache: asymmetric (default) per group of `group` consecutive values of a row (a
// row = one token, a group = one head: group = head_dim, 128 on Llama). With maxq = 2^bits-1:
//   xmin = float(clip) * min(min(x_g), 0)      xmax = float(clip) * max(max(x_g), 0)
//   (QuaRot multiplies BOTH xmax and xmin by clip; include_zero = false drops the "0" in the
//    min/max, which is QuaRot's find_params_per_token_groupwise, the path of its V cache
//    with v_groupsize > 0; its K cache with k_groupsize = head_dim takes the per-token path
//    on [tokens*heads, head_dim] rows, i.e. include_zero = true.)
//   where xmin == 0 and xmax == 0: xmin = -1, xmax = +1
//   scale = (xmax - xmin) / maxq;  zero = round(-xmin / scale)
//   code = clamp(round(x / scale) + zero, 0, maxq);  x~ = scale * (code - zero)
// sym = true uses the symmetric per-token formula of the activations on each group.
// QuaRot paper setting: 4 bits, asymmetric, clip 0.95, group = head_dim (the reference's
// defaults are clip 1.0, symmetric, per token).
struct KVQuantSpec {
  int bits = 4;
  float clip = 0.95f;
  bool sym = false;
  int group = 0;              // 0 = head_dim (the caller passes head_dim as `group`)
  bool include_zero = true;   // see above
};

// In place on x [rows, cols]; cols must be a multiple of group (group > 0).
void fake_quant_kv(float* x, int64_t rows, int64_t cols, int64_t group, const KVQuantSpec& spec);

}  // namespace obr
