// Quantizers (ALGORITHM.md section 2): weights, activations, KV cache.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "compress/quantizer.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "test_solve_util.h"

using namespace obr;

namespace {

// The clip search written out from the formula in quantizer.h, independently of it.
float brute_force_scale(const float* w, int64_t n) {
  float xmax = 0.0f;
  for (int64_t j = 0; j < n; ++j) xmax = std::max(xmax, std::fabs(w[j]));
  xmax = std::max(xmax, 1e-5f);
  float best_scale = xmax / 7.0f;
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 80; ++i) {
    const float sc = (float(1.0 - i / 100.0) * xmax) / 7.0f;
    double err = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      float c = std::nearbyint(w[j] / sc);
      c = std::min(7.0f, std::max(-8.0f, c));
      err += std::pow(std::fabs(double(sc * c - w[j])), 2.4);
    }
    if (err < best) {
      best = err;
      best_scale = sc;
    }
  }
  return best_scale;
}

}  // namespace

TEST_CASE("solve: weight codes round half to even and clamp to -8..7") {
  const float s = 1.0f;
  CHECK(quantize_weight(0.5f, s, 4) == 0);
  CHECK(quantize_weight(1.5f, s, 4) == 2);
  CHECK(quantize_weight(2.5f, s, 4) == 2);   // std::round would give 3
  CHECK(quantize_weight(3.5f, s, 4) == 4);
  CHECK(quantize_weight(-2.5f, s, 4) == -2);
  CHECK(quantize_weight(-0.5f, s, 4) == 0);
  CHECK(quantize_weight(6.5f, s, 4) == 6);
  CHECK(quantize_weight(7.5f, s, 4) == 7);   // rounds to 8, clamped
  CHECK(quantize_weight(-8.5f, s, 4) == -8);
  CHECK(quantize_weight(-100.0f, s, 4) == -8);
  CHECK(quantize_weight(100.0f, s, 4) == 7);
  CHECK(quantize_weight(1e9f, 0.25f, 8) == 127);
  CHECK(quantize_weight(-1e9f, 0.25f, 8) == -128);
  // A tie after the division: 0.375 / 0.25 = 1.5 exactly -> 2; 0.625 / 0.25 = 2.5 -> 2.
  CHECK(quantize_weight(0.375f, 0.25f, 4) == 2);
  CHECK(quantize_weight(0.625f, 0.25f, 4) == 2);
  CHECK(fake_quant_weight(0.625f, 0.25f, 4) == 0.5f);
}

TEST_CASE("solve: weight scales match a brute-force clip search, and RTN codes reproduce W_hat") {
  for (int64_t cols : {1, 3, 17, 136, 192, 1000}) {
    Rng rng(100 + uint64_t(cols));
    const int64_t rows = 40;
    Tensor W = Tensor::zeros({rows, cols});
    float* w = W.data<float>();
    for (int64_t i = 0; i < rows * cols; ++i) w[i] = float(rng.normal() * (rng.uniform() < 0.02 ? 8.0 : 1.0));
    for (int64_t j = 0; j < cols; ++j) w[2 * cols + j] = 0.0f;                 // all-zero row
    for (int64_t j = 0; j < cols; ++j) w[3 * cols + j] = -std::fabs(w[3 * cols + j]);  // all negative
    for (int64_t j = 0; j < cols; ++j) w[4 * cols + j] = float(int(j % 15) - 7) / 7.0f;  // on the grid
    for (int64_t j = 0; j < cols; ++j) w[5 * cols + j] = 1e-30f * w[6 * cols + j];      // tiny
    for (int64_t j = 0; j < cols; ++j) w[7 * cols + j] = 3e4f * w[8 * cols + j];        // large
    for (int64_t j = 0; j < cols; ++j) w[9 * cols + j] = float(std::pow(std::fabs(w[9 * cols + j]), 3.0));
    const Tensor S = weight_scales(W, WeightQuantSpec{});
    const Tensor S0 = weight_scales(W, WeightQuantSpec{4, false});
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = w + r * cols;
      INFO("cols ", cols, " row ", r);
      CHECK(S.data<float>()[r] == brute_force_scale(row, cols));
      float xmax = 1e-5f;
      for (int64_t j = 0; j < cols; ++j) xmax = std::max(xmax, std::fabs(row[j]));
      CHECK(S0.data<float>()[r] == xmax / 7.0f);
      // The chosen scale is no worse than any candidate of the grid.
      const double chosen = weight_clip_error(row, cols, S.data<float>()[r], 4);
      for (int i = 0; i < 80; i += 7)
        CHECK(chosen <= weight_clip_error(row, cols, (float(1.0 - i / 100.0) * xmax) / 7.0f, 4));
    }
    CHECK(S.data<float>()[2] == 1e-5f / 7.0f);
    Tensor codes;
    const Tensor Q = quantize_rtn(W, S, 4, &codes);
    REQUIRE(codes.dtype() == DType::I8);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const int c = codes.data<int8_t>()[i];
      REQUIRE(c >= -8);
      REQUIRE(c <= 7);
      REQUIRE(Q.data<float>()[i] == float(c) * S.data<float>()[i / cols]);
    }
  }
  CHECK_THROWS_AS(weight_scales(Tensor::zeros({2, 3}), WeightQuantSpec{9, true}), Error);
}

TEST_CASE("solve: the clip-candidate ranking sum stays within its stated bound of the exact sum") {
  Rng rng(9);
  double worst_rel = 0.0;
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t n = 1 + int64_t(rng.below(300));
    std::vector<float> w(static_cast<size_t>(n));
    const double spread = std::ldexp(1.0, -int(rng.below(40)));  // rows with tiny entries too
    for (auto& v : w) v = float(std::max(-1.99, std::min(1.99, rng.normal() * (rng.uniform() < 0.5 ? spread : 0.5))));
    if (trial % 7 == 0) w[0] = 0.0f;
    const float scale = float(0.3 * (0.2 + rng.uniform()) / 7.0);
    const double exact = weight_clip_error(w.data(), n, scale, 4);
    const double rank = weight_clip_error_rank(w.data(), n, scale, 4);
    const double slack = double(n) * std::ldexp(1.0, -47);
    REQUIRE(std::fabs(rank - exact) <= 4e-6 * exact + slack);
    if (exact > 1e-6) worst_rel = std::max(worst_rel, std::fabs(rank - exact) / exact);
  }
  INFO("worst relative difference ", worst_rel);
  CHECK(worst_rel < 4e-6);
}

TEST_CASE("solve: per-token activation quantization, symmetric and asymmetric") {
  // Symmetric, clip 0.9: xmax = 0.9 * 4 = 3.6 (float), scale = 3.6 / 7.
  std::vector<float> x = {1.0f, -4.0f, 2.0f, 0.5f, 0.0f, 0.0f, 0.0f, 0.0f};
  std::vector<int8_t> codes(8);
  std::vector<float> scales(2), zeros(2);
  ActQuantSpec sym;
  quantize_act_rows(x.data(), 2, 4, sym, codes.data(), scales.data(), zeros.data());
  const float sc = (0.9f * 4.0f) / 7.0f;
  CHECK(scales[0] == sc);
  CHECK(scales[1] == 1.0f);  // all-zero row
  CHECK(codes[0] == int8_t(std::nearbyint(1.0f / sc)));
  CHECK(codes[1] == -8);  // -4 / sc = -7.78 -> -8
  CHECK(codes[2] == 4);   // 2 / sc = 3.89 -> 4
  CHECK(codes[3] == 1);   // 0.5 / sc = 0.97 -> 1
  CHECK(zeros[0] == 0.0f);
  std::vector<float> y = x;
  fake_quant_act_rows(y.data(), 2, 4, sym);
  for (int i = 0; i < 8; ++i) CHECK(y[size_t(i)] == scales[size_t(i / 4)] * float(codes[size_t(i)]));
  for (int i = 4; i < 8; ++i) CHECK(y[size_t(i)] == 0.0f);

  // Asymmetric, clip 1: row [-2, -1, 0, 3]: scale = 5/15, zero = round(2 / scale) = 6.
  std::vector<float> a = {-2.0f, -1.0f, 0.0f, 3.0f};
  ActQuantSpec asym{4, 1.0f, false};
  quantize_act_rows(a.data(), 1, 4, asym, codes.data(), scales.data(), zeros.data());
  const float as = (3.0f - -2.0f) / 15.0f;
  CHECK(scales[0] == as);
  CHECK(zeros[0] == std::nearbyint(2.0f / as));
  CHECK(codes[0] == 0);
  CHECK(codes[3] == 15);
  std::vector<float> b = a;
  fake_quant_act_rows(b.data(), 1, 4, asym);
  for (int i = 0; i < 4; ++i) CHECK(b[size_t(i)] == as * (float(codes[size_t(i)]) - zeros[0]));
  CHECK_THROWS_AS(quantize_act_rows(a.data(), 1, 4, asym, codes.data(), scales.data(), nullptr), Error);
  CHECK_THROWS_AS(fake_quant_act_rows(a.data(), 1, 4, ActQuantSpec{4, 1.5f, true}), Error);
}

TEST_CASE("solve: KV cache quantization is asymmetric per group with clip on xmax and xmin") {
  // Two groups of 4 in one row: [-2, -1, 0, 3 | 0, 0, 0, 0], clip 0.5: xmin = -1, xmax = 1.5.
  std::vector<float> x = {-2.0f, -1.0f, 0.0f, 3.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  KVQuantSpec spec;
  spec.clip = 0.5f;
  fake_quant_kv(x.data(), 1, 8, 4, spec);
  const float scale = (0.5f * 3.0f - 0.5f * -2.0f) / 15.0f, zero = std::nearbyint(-(0.5f * -2.0f) / scale);
  auto deq = [&](float v) {
    const float c = std::min(15.0f, std::max(0.0f, std::nearbyint(v / scale) + zero));
    return scale * (c - zero);
  };
  CHECK(x[3] == deq(3.0f));
  CHECK(std::fabs(x[3] - 1.5f) < 1e-6f);   // clipped to clip * xmax
  CHECK(std::fabs(x[0] - -1.0f) < 1e-6f);  // clipped to clip * xmin
  CHECK(x[1] == deq(-1.0f));
  for (int i = 4; i < 8; ++i) CHECK(x[size_t(i)] == 0.0f);  // all-zero group stays 0

  // include_zero = false (QuaRot's grouped V path): the range is [min, max] without 0.
  std::vector<float> pos = {1.0f, 2.0f, 3.0f, 4.0f};
  KVQuantSpec g;
  g.clip = 1.0f;
  g.include_zero = false;
  std::vector<float> p2 = pos;
  fake_quant_kv(p2.data(), 1, 4, 4, g);
  CHECK(p2[0] == doctest::Approx(1.0f).epsilon(1e-6));
  CHECK(p2[3] == doctest::Approx(4.0f).epsilon(1e-6));
  g.include_zero = true;
  p2 = pos;
  fake_quant_kv(p2.data(), 1, 4, 4, g);  // range [0, 4]: scale 4/15, 1 -> round(3.75) = 4 -> 1.0667
  CHECK(p2[0] == (4.0f / 15.0f) * 4.0f);
  CHECK_THROWS_AS(fake_quant_kv(x.data(), 1, 8, 3, spec), Error);
}
