// Calibration statistics (HessianAccumulator, prepare_hessian) and pruning masks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "compress/hessian.h"
#include "compress/masks.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "test_solve_util.h"

using namespace obr;
using namespace obr::testing;

TEST_CASE("solve: the Hessian accumulator equals (2/N) sum X^T X and the Wanda scaler its mean") {
  for (int64_t C : {1, 3, 136, 257}) {
    Rng rng(7 + uint64_t(C));
    const int64_t S = 5, T = 33;
    Tensor X = Tensor::zeros({S, T, C});
    float* x = X.data<float>();
    for (int64_t i = 0; i < S * T * C; ++i) x[i] = float(rng.normal() * (1 + (i % C) % 5));
    HessianAccumulator acc(C), quirk(C, true);
    acc.add(X);
    for (int64_t s = 0; s < S; ++s) quirk.add(x + s * T * C, T);
    CHECK(acc.nsamples() == S);
    const Tensor H = acc.H();
    // Direct formula in double.
    double worst = 0.0;
    for (int64_t i = 0; i < C; ++i)
      for (int64_t j = 0; j < C; ++j) {
        double d = 0.0, mag = 0.0;
        for (int64_t t = 0; t < S * T; ++t) {
          d += double(x[t * C + i]) * x[t * C + j];
          mag += std::fabs(double(x[t * C + i]) * x[t * C + j]);
        }
        d *= 2.0 / double(S);
        mag *= 2.0 / double(S);
        worst = std::max(worst, std::fabs(H.at<float>(i, j) - d) / (mag + 1e-30));
        REQUIRE(H.at<float>(i, j) == H.at<float>(j, i));  // exactly symmetric
      }
    INFO("C_in ", C, " worst relative error ", worst);
    CHECK(worst < 2e-5);
    const Tensor sc = acc.scaler(), sq = quirk.scaler();
    for (int64_t j = 0; j < C; ++j) {
      double mean = 0.0, q = 0.0;
      for (int64_t s = 0; s < S; ++s) {
        double ss = 0.0;
        for (int64_t t = 0; t < T; ++t) ss += double(x[(s * T + t) * C + j]) * x[(s * T + t) * C + j];
        mean += ss / double(S);
        q += ss / double(s + 1);
      }
      CHECK(sc.data<float>()[j] == doctest::Approx(mean).epsilon(1e-6));
      CHECK(sq.data<float>()[j] == doctest::Approx(q).epsilon(1e-6));
      // H's diagonal is twice the correct-mean scaler.
      CHECK(H.at<float>(j, j) == doctest::Approx(2.0 * mean).epsilon(1e-5));
    }
  }
  // One sample: quirk and correct mean agree.
  HessianAccumulator a(4), b(4, true);
  const float one[8] = {1, 2, 3, 4, -1, 0, 2, 5};
  a.add(one, 2);
  b.add(one, 2);
  CHECK(bitwise_equal(a.scaler(), b.scaler()));
  CHECK_THROWS_AS(a.add(Tensor::zeros({2, 5})), Error);
}

TEST_CASE("solve: the Hessian is bit-identical for 1 and 2 threads") {
  Rng rng(3);
  const int64_t C = 300, T = 64;
  std::vector<float> x(size_t(T * C));
  for (auto& v : x) v = float(rng.normal());
  const int saved = num_threads();
  set_num_threads(1);
  HessianAccumulator a(C);
  a.add(x.data(), T);
  a.add(x.data(), T / 2);
  set_num_threads(2);
  HessianAccumulator b(C);
  b.add(x.data(), T);
  b.add(x.data(), T / 2);
  set_num_threads(saved);
  CHECK(bitwise_equal(a.H(), b.H()));
}

TEST_CASE("solve: prepare_hessian fixes dead columns, damps, and escalates on a non-PD H") {
  Tensor H = Tensor::zeros({3, 3});
  float h[9] = {2, 1, 0, 1, 2, 0, 0, 0, 0};  // column 2 dead
  std::copy(h, h + 9, H.data<float>());
  Tensor W = Tensor::zeros({2, 3});
  std::fill(W.data<float>(), W.data<float>() + 6, 1.0f);
  PreparedHessian p = prepare_hessian(H, &W, 0.01);
  REQUIRE(p.dead.size() == 1);
  CHECK(p.dead[0] == 2);
  CHECK(W.at<float>(0, 2) == 0.0f);
  CHECK(W.at<float>(1, 1) == 1.0f);
  const float damp = float(0.01 * (2.0 + 2.0 + 1.0) / 3.0);
  CHECK(p.damp == damp);
  CHECK(p.H.at<float>(2, 2) == 1.0f + damp);
  CHECK(p.H.at<float>(0, 0) == 2.0f + damp);
  CHECK(p.H.at<float>(0, 1) == 1.0f);

  // Indefinite: eigenvalues 3.5, -1.5 and 1; 1% damping is not enough.
  float g[9] = {1, 2.5f, 0, 2.5f, 1, 0, 0, 0, 1};
  std::copy(g, g + 9, H.data<float>());
  std::vector<std::string> warnings;
  p = prepare_hessian(H, nullptr, 0.01, 0.0, &warnings);
  CHECK(!warnings.empty());
  // mean(diag) = 1; eigenvalue -1.5 needs damping > 1.5: 0.01 -> 0.1 -> 1 -> 10.
  CHECK(warnings.size() == 3);
  CHECK(p.percdamp == doctest::Approx(10.0));
  CHECK(p.H.at<float>(0, 0) == 11.0f);
  CHECK(p.H.at<float>(0, 1) == 2.5f);
  CHECK_THROWS_AS(prepare_hessian(Tensor::zeros({2, 3}), nullptr, 0.01), Error);
}

TEST_CASE("solve: masks have exactly the requested sparsity or N:M pattern") {
  for (int64_t C : {4, 128, 136, 192}) {
    Rng rng(11 + uint64_t(C));
    const int64_t R = 9;
    Tensor W = Tensor::zeros({R, C});
    for (int64_t i = 0; i < R * C; ++i) W.data<float>()[i] = float(rng.normal());
    Tensor scaler = Tensor::zeros({C});
    for (int64_t j = 0; j < C; ++j) scaler.data<float>()[j] = float(std::exp(rng.normal()));
    for (double sp : {0.0, 0.3, 0.5}) {
      const Tensor m = wanda_mask(W, scaler, MaskSpec{sp, 0, 0});
      const int64_t prune = int64_t(double(C) * sp);
      const Tensor metric = wanda_metric(W, scaler);
      for (int64_t r = 0; r < R; ++r) {
        int64_t zeros = 0;
        float max_pruned = -1.0f, min_kept = 1e30f;
        for (int64_t j = 0; j < C; ++j) {
          const float v = metric.at<float>(r, j);
          if (m.at<uint8_t>(r, j) == 0) {
            ++zeros;
            max_pruned = std::max(max_pruned, v);
          } else {
            min_kept = std::min(min_kept, v);
          }
        }
        CHECK(zeros == prune);
        if (prune > 0) CHECK(max_pruned <= min_kept);  // the smallest were pruned
      }
    }
    const Tensor nm = wanda_mask(W, scaler, MaskSpec{0.0, 2, 4});
    CHECK(mask_is_nm(nm, 2, 4));
    CHECK(mask_sparsity(nm) == 0.5);
    const Tensor metric = wanda_metric(W, scaler);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t g = 0; g < C; g += 4) {
        float max_pruned = -1.0f, min_kept = 1e30f;
        for (int64_t j = g; j < g + 4; ++j) {
          const float v = metric.at<float>(r, j);
          if (nm.at<uint8_t>(r, j))
            min_kept = std::min(min_kept, v);
          else
            max_pruned = std::max(max_pruned, v);
        }
        CHECK(max_pruned <= min_kept);
      }
    CHECK(mask_is_nm(magnitude_mask(W, MaskSpec{0.0, 1, 4}), 1, 4));
  }
  // Ties: a stable sort prunes the lower column index first.
  Tensor flat = Tensor::zeros({1, 8});
  std::fill(flat.data<float>(), flat.data<float>() + 8, 1.0f);
  const Tensor m = magnitude_mask(flat, MaskSpec{0.5, 0, 0});
  for (int j = 0; j < 8; ++j) CHECK(m.at<uint8_t>(0, j) == (j < 4 ? 0 : 1));
  const Tensor m24 = magnitude_mask(flat, MaskSpec{0.0, 2, 4});
  for (int j = 0; j < 8; ++j) CHECK(m24.at<uint8_t>(0, j) == (j % 4 < 2 ? 0 : 1));
  // C_in not a multiple of M, bad N, bad sparsity: errors that name the values.
  CHECK_THROWS_WITH_AS(magnitude_mask(Tensor::zeros({2, 6}), MaskSpec{0.0, 2, 4}),
                       doctest::Contains("multiple of M = 4"), Error);
  CHECK_THROWS_AS(magnitude_mask(Tensor::zeros({2, 8}), MaskSpec{0.0, 4, 4}), Error);
  CHECK_THROWS_AS(magnitude_mask(Tensor::zeros({2, 8}), MaskSpec{1.0, 0, 0}), Error);
}
