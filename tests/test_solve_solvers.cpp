// GPTQ, SparseGPT+GPTQ, OBR and the solve_linear entry point on small seeded problems.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/masks.h"
#include "compress/obr_solver.h"
#include "compress/solve_linear.h"
#include "core/parallel.h"
#include "test_solve_util.h"

using namespace obr;
using namespace obr::testing;

namespace {

const Method kAllMethods[] = {Method::RTN,           Method::GPTQ,    Method::WandaRTN, Method::WandaGPTQ,
                              Method::SparseGPTGPTQ, Method::OBR_RTN, Method::OBR_GPTQ};

SolveResult run(const LayerProblem& p, Method m, double sparsity = 0.5, int n = 0, int mm = 0, double alpha = 0.5,
                bool quirks = false) {
  SolveOptions o;
  o.method = m;
  o.sparsity = sparsity;
  o.prune_n = n;
  o.prune_m = mm;
  o.alpha = alpha;
  o.reference_quirks = quirks;
  return solve_linear(p.W, p.H, p.scaler, o);
}

// The invariants every result keeps: W_hat == code * scale, codes in range, pruned = +0.
void check_result_invariants(const SolveResult& r, const Tensor& W) {
  const int64_t rows = W.dim(0), C = W.dim(1);
  REQUIRE(r.W_hat.shape() == W.shape());
  REQUIRE(r.codes.dtype() == DType::I8);
  REQUIRE(r.mask.dtype() == DType::U8);
  REQUIRE(r.scales.numel() == rows);
  for (int64_t i = 0; i < rows * C; ++i) {
    const int c = r.codes.data<int8_t>()[i];
    REQUIRE(c >= -8);
    REQUIRE(c <= 7);
    REQUIRE(r.W_hat.data<float>()[i] == float(c) * r.scales.data<float>()[i / C]);
    if (!r.mask.data<uint8_t>()[i]) REQUIRE(c == 0);
  }
  REQUIRE(std::isfinite(r.loss));
}

}  // namespace

TEST_CASE("solve: parse_method knows the seven names and lists them on error") {
  for (Method m : kAllMethods) CHECK(parse_method(method_name(m)) == m);
  CHECK(parse_method("obr-gptq") == Method::OBR_GPTQ);
  CHECK_THROWS_WITH_AS(parse_method("obr"), doctest::Contains("wanda-gptq, sparsegpt-gptq, obr-rtn, obr-gptq"), Error);
}

TEST_CASE("solve: the GPTQ factor satisfies Hinv^T Hinv H = I") {
  LayerProblem p = make_problem(problem_spec(8, 136, 2, 200, 5));
  PreparedHessian ph = prepare_hessian(p.H, nullptr, 0.01);
  const Tensor Hinv = gptq_inverse_factor(ph.H);
  const int64_t C = 136;
  double worst = 0.0;
  std::vector<double> UtU(size_t(C * C), 0.0);
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) {
      double a = 0.0;
      for (int64_t k = 0; k <= std::min(i, j); ++k) a += double(Hinv.at<float>(k, i)) * Hinv.at<float>(k, j);
      UtU[size_t(i * C + j)] = a;
      if (j < i) REQUIRE(Hinv.at<float>(i, j) == 0.0f);
    }
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) {
      double a = 0.0;
      for (int64_t k = 0; k < C; ++k) a += UtU[size_t(i * C + k)] * ph.H.at<float>(k, j);
      worst = std::max(worst, std::fabs(a - (i == j ? 1.0 : 0.0)));
    }
  CHECK(worst < 1e-3);
}

TEST_CASE("solve: GPTQ does not depend on the block layout, and a start column is the trailing subproblem") {
  LayerProblem p = make_problem(problem_spec(40, 192, 4, 96, 21));
  PreparedHessian ph = prepare_hessian(p.H, nullptr, 0.01);
  const Tensor Hinv = gptq_inverse_factor(ph.H);
  const Tensor S = weight_scales(p.W, WeightQuantSpec{});
  auto sweep = [&](const Tensor& W, const Tensor& Hinvf, const Tensor& sc, int bs, int64_t first) {
    Tensor Q = Tensor::zeros(W.shape()), codes = Tensor::zeros(W.shape(), DType::I8);
    gptq_sweep(W, Hinvf, sc, 4, Tensor(), bs, first, Q, codes);
    return codes;
  };
  auto agreement = [](const Tensor& a, const Tensor& b, int64_t col0, int64_t col0b) {
    int64_t same = 0, total = 0;
    const int64_t ca = a.dim(1), cb = b.dim(1);
    for (int64_t r = 0; r < a.dim(0); ++r)
      for (int64_t j = 0; j + col0 < ca; ++j, ++total)
        same += a.data<int8_t>()[r * ca + col0 + j] == b.data<int8_t>()[r * cb + col0b + j];
    return double(same) / double(total);
  };
  const Tensor c128 = sweep(p.W, Hinv, S, 128, 0), c16 = sweep(p.W, Hinv, S, 16, 0), cfull = sweep(p.W, Hinv, S, 192, 0);
  CHECK(agreement(c128, c16, 0, 0) > 0.99);  // only round-off flips at rounding ties
  CHECK(agreement(c128, cfull, 0, 0) > 0.99);
  // From column k = 77: equals GPTQ from 0 on (W[:, k:], H[k:, k:]) since Hinv[k:, k:] is its factor.
  const int64_t k = 77, C = 192, R = 40, n = C - k;
  const Tensor ck = sweep(p.W, Hinv, S, 128, k);
  Tensor Wk = Tensor::zeros({R, n}), Hk = Tensor::zeros({n, n});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < n; ++j) Wk.at<float>(r, j) = p.W.at<float>(r, k + j);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) Hk.at<float>(i, j) = ph.H.at<float>(k + i, k + j);
  const Tensor csub = sweep(Wk, gptq_inverse_factor(Hk), S, 128, 0);
  CHECK(agreement(ck, csub, k, 0) > 0.99);
  // Columns before the start are left untouched.
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < k; ++j) REQUIRE(ck.at<int8_t>(r, j) == 0);
}

TEST_CASE("solve: GPTQ and OBR are never worse than RTN on the layer objective for the same mask") {
  for (int64_t C : {128, 192, 136, 256}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      LayerProblem p = make_problem(problem_spec(32, C, 4, 2 * C / 4 + 40, seed * 101 + uint64_t(C)));
      INFO("C_in ", C, " seed ", seed);
      const double rtn = run(p, Method::RTN, 0.0).loss, gptq = run(p, Method::GPTQ, 0.0).loss;
      CHECK(gptq < rtn);
      for (double alpha : {0.5, 0.37}) {
        const SolveResult wr = run(p, Method::WandaRTN, 0.5), wg = run(p, Method::WandaGPTQ, 0.5);
        const SolveResult orr = run(p, Method::OBR_RTN, 0.5, 0, 0, alpha), og = run(p, Method::OBR_GPTQ, 0.5, 0, 0, alpha);
        INFO("alpha ", alpha, ": wanda-rtn ", wr.loss, " wanda-gptq ", wg.loss, " obr-rtn ", orr.loss, " obr-gptq ",
             og.loss);
        CHECK(bitwise_equal(wr.mask, orr.mask));  // the same Wanda mask
        CHECK(wg.loss < wr.loss);
        CHECK(orr.loss < wr.loss);
        CHECK(og.loss < wr.loss);
      }
    }
  }
}

TEST_CASE("solve: OBR's compensations zero the gradient of the quadratic objective (KKT)") {
  for (double alpha : {0.5, 0.29}) {
    for (bool ill : {false, true}) {
      ProblemSpec spec = problem_spec(24, 136, 3, 80, 77);
      spec.ill_conditioned = ill;
      LayerProblem p = make_problem(spec);
      Tensor W = p.W.clone();
      PreparedHessian ph = prepare_hessian(p.H, &W, 0.01);
      const Tensor mask = wanda_mask(W, p.scaler, MaskSpec{0.5, 0, 0});
      const Tensor S = weight_scales(p.W, WeightQuantSpec{});
      const Tensor W1 = obr_restore(W, mask, ph.H, S, 4, alpha, ph.damp, false);  // pruning compensation only
      const Tensor W2 = obr_restore(W, mask, ph.H, S, 4, alpha, ph.damp, true);
      const int64_t C = 136, split = int64_t(double(C) * alpha);
      double worst1 = 0.0, worst2 = 0.0;
      for (int64_t r = 0; r < 24; ++r) {
        // Stage 1: (H (w' - w))_i = 0 for kept i, w'_Z = 0.
        for (int64_t i = 0; i < C; ++i) {
          if (!mask.at<uint8_t>(r, i)) {
            REQUIRE(W1.at<float>(r, i) == 0.0f);
            continue;
          }
          double g = 0.0, mag = 1e-30;
          for (int64_t j = 0; j < C; ++j) {
            const double hij = ph.H.at<float>(i, j);
            g += hij * (double(W1.at<float>(r, j)) - W.at<float>(r, j));
            mag += std::fabs(hij) * (std::fabs(W1.at<float>(r, j)) + std::fabs(W.at<float>(r, j)));
          }
          worst1 = std::max(worst1, std::fabs(g) / mag);
        }
        // Stage 2: with A fixed at Q(w'_A), (H x)_b = 0 for b in B, where x = w'' - w' on B,
        // Q(w'_A) - w'_A on A and 0 on Z.
        std::vector<double> x(size_t(C), 0.0);
        for (int64_t j = 0; j < C; ++j) {
          if (!mask.at<uint8_t>(r, j)) continue;
          const float w1 = W1.at<float>(r, j);
          x[size_t(j)] = j < split ? double(fake_quant_weight(w1, S.data<float>()[r], 4)) - w1
                                   : double(W2.at<float>(r, j)) - w1;
          if (j < split) REQUIRE(W2.at<float>(r, j) == w1);  // A is not moved by the second solve
        }
        for (int64_t b = split; b < C; ++b) {
          if (!mask.at<uint8_t>(r, b)) continue;
          double g = 0.0, mag = 1e-30;
          for (int64_t j = 0; j < C; ++j) {
            const double hbj = ph.H.at<float>(b, j);
            g += hbj * x[size_t(j)];
            mag += std::fabs(hbj) * (std::fabs(W2.at<float>(r, j)) + std::fabs(W1.at<float>(r, j)));
          }
          worst2 = std::max(worst2, std::fabs(g) / mag);
        }
      }
      INFO("alpha ", alpha, " ill-conditioned ", ill, ": stage 1 ", worst1, ", stage 2 ", worst2);
      CHECK(worst1 < 1e-5);
      CHECK(worst2 < 1e-5);
    }
  }
}

TEST_CASE("solve: OBR beats Wanda+GPTQ, and SparseGPT+GPTQ is reasonable") {
  for (int nm : {0, 1}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      LayerProblem p = make_problem(problem_spec(32, 256, 4, 160, 900 + seed));
      const int n = nm ? 2 : 0, m = nm ? 4 : 0;
      const double wr = run(p, Method::WandaRTN, 0.5, n, m).loss, wg = run(p, Method::WandaGPTQ, 0.5, n, m).loss;
      const SolveResult sg = run(p, Method::SparseGPTGPTQ, 0.5, n, m);
      const double orr = run(p, Method::OBR_RTN, 0.5, n, m).loss, og = run(p, Method::OBR_GPTQ, 0.5, n, m).loss;
      INFO((nm ? "2:4" : "50%"), " seed ", seed, ": wanda-rtn ", wr, " wanda-gptq ", wg, " sparsegpt-gptq ", sg.loss,
           " obr-rtn ", orr, " obr-gptq ", og);
      CHECK(og < wg);
      CHECK(orr < wg);
      CHECK(og <= orr * 1.02);
      CHECK(sg.loss < wr);
      CHECK(sg.loss < 3.0 * og);
      if (nm)
        CHECK(mask_is_nm(sg.mask, 2, 4));
      else
        CHECK(mask_sparsity(sg.mask) >= 0.5);
    }
  }
}

TEST_CASE("solve: every method keeps W_hat == codes * scale and is bit-identical for 1 and 2 threads") {
  ProblemSpec spec = problem_spec(70, 192, 3, 64, 5);  // T*S < C_in: rank-deficient H, damping needed
  spec.dead_cols = {0, 5, 150};
  spec.zero_rows = {3, 69};
  spec.ill_conditioned = true;
  LayerProblem p = make_problem(spec);
  const int saved = num_threads();
  for (Method m : kAllMethods) {
    for (int nm : {0, 1}) {
      INFO(method_name(m), nm ? " 2:4" : " 50%");
      set_num_threads(1);
      const SolveResult a = run(p, m, 0.5, nm ? 2 : 0, nm ? 4 : 0, 0.41);
      set_num_threads(2);
      const SolveResult b = run(p, m, 0.5, nm ? 2 : 0, nm ? 4 : 0, 0.41);
      check_result_invariants(a, p.W);
      CHECK(bitwise_equal(a.W_hat, b.W_hat));
      CHECK(bitwise_equal(a.codes, b.codes));
      CHECK(bitwise_equal(a.mask, b.mask));
      CHECK(a.loss == b.loss);
      for (int64_t r : spec.zero_rows)
        for (int64_t j = 0; j < 192; ++j) REQUIRE(a.W_hat.at<float>(r, j) == 0.0f);
      if (m != Method::RTN && m != Method::WandaRTN)
        for (int64_t j : spec.dead_cols)
          for (int64_t r = 0; r < 70; ++r) REQUIRE(a.W_hat.at<float>(r, j) == 0.0f);
    }
  }
  set_num_threads(saved);
}

TEST_CASE("solve: dense RTN and GPTQ are quantization only") {
  LayerProblem p = make_problem(problem_spec(16, 128, 2, 100, 8));
  for (Method m : {Method::RTN, Method::GPTQ}) {
    const SolveResult r = run(p, m, 0.0);
    check_result_invariants(r, p.W);
    CHECK(mask_sparsity(r.mask) == 0.0);
  }
  Tensor codes;
  const SolveResult r = run(p, Method::RTN, 0.0);
  const Tensor q = quantize_rtn(p.W, weight_scales(p.W, WeightQuantSpec{}), 4, &codes);
  CHECK(bitwise_equal(r.W_hat, q));
  CHECK(r.loss == doctest::Approx(layer_loss(p.W, q, p.H)));
}

TEST_CASE("solve: a non-positive-definite H is handled with a warning") {
  LayerProblem p = make_problem(problem_spec(16, 128, 2, 100, 9));
  // Make H indefinite: subtract 5% of its mean diagonal from the diagonal.
  double mean = 0.0;
  for (int64_t j = 0; j < 128; ++j) mean += p.H.at<float>(j, j) / 128.0;
  Tensor H = p.H.clone();
  for (int64_t j = 0; j < 128; ++j) H.at<float>(j, j) -= float(0.2 * mean);
  for (Method m : {Method::GPTQ, Method::SparseGPTGPTQ, Method::OBR_RTN, Method::OBR_GPTQ}) {
    SolveOptions o;
    o.method = m;
    const SolveResult r = solve_linear(p.W, H, p.scaler, o);
    INFO(method_name(m));
    CHECK(!r.warnings.empty());
    CHECK(r.percdamp > 0.01);
    check_result_invariants(r, p.W);
  }
}

TEST_CASE("solve: reference quirks reproduce the reference's OBR-GPTQ column layout") {
  // alpha = 0.5 and C_in a multiple of 256: the quirks change nothing.
  LayerProblem p = make_problem(problem_spec(16, 256, 2, 150, 12));
  CHECK(bitwise_equal(run(p, Method::OBR_GPTQ, 0.5, 0, 0, 0.5, true).W_hat,
                      run(p, Method::OBR_GPTQ, 0.5, 0, 0, 0.5, false).W_hat));
  // C_in = 192: alpha*C_in = 96, the reference's GPTQ starts at block 128, columns 96..127 stay 0.
  LayerProblem q = make_problem(problem_spec(16, 192, 2, 150, 13));
  const SolveResult quirk = run(q, Method::OBR_GPTQ, 0.5, 0, 0, 0.5, true);
  const SolveResult good = run(q, Method::OBR_GPTQ, 0.5, 0, 0, 0.5, false);
  int64_t nonzero_good = 0;
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t j = 96; j < 128; ++j) {
      REQUIRE(quirk.W_hat.at<float>(r, j) == 0.0f);
      nonzero_good += good.W_hat.at<float>(r, j) != 0.0f;
    }
  CHECK(nonzero_good > 0);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t j = 0; j < 96; ++j) REQUIRE(quirk.W_hat.at<float>(r, j) == good.W_hat.at<float>(r, j));
  CHECK(good.loss < quirk.loss);
  // Another alpha: the reference's concatenation has the wrong width; so does this (an error).
  CHECK_THROWS_WITH_AS(run(q, Method::OBR_GPTQ, 0.5, 0, 0, 0.3, true), doctest::Contains("shape mismatch"), Error);
}
