// Small seeded layer problems for the solver tests (tests/test_solve_*.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "compress/hessian.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace obr::testing {

struct LayerProblem {
  Tensor W;       // f32 [C_out, C_in]
  Tensor X;       // f32 [S, T, C_in], the calibration samples
  Tensor H;       // f32 [C_in, C_in] = (2/S) sum X_s^T X_s (HessianAccumulator)
  Tensor scaler;  // f32 [C_in]
};

struct ProblemSpec {
  int64_t C_out = 48, C_in = 128;
  int64_t samples = 4, tokens = 96;  // S samples of T tokens each
  uint64_t seed = 1;
  std::vector<int64_t> dead_cols;    // input channels that are always 0
  std::vector<int64_t> zero_rows;    // all-zero rows of W
  bool ill_conditioned = false;      // tiny channels and near-duplicate channels
};

inline ProblemSpec problem_spec(int64_t C_out, int64_t C_in, int64_t samples, int64_t tokens, uint64_t seed) {
  ProblemSpec p;
  p.C_out = C_out;
  p.C_in = C_in;
  p.samples = samples;
  p.tokens = tokens;
  p.seed = seed;
  return p;
}

// Inputs with low-rank correlation (C_in/4 latent factors), per-channel scales spread over
// e^{+-1}, every 17th channel an outlier (x8), plus noise; W Gaussian with a few large weights.
inline LayerProblem make_problem(const ProblemSpec& p) {
  Rng rng(p.seed);
  const int64_t C = p.C_in, S = p.samples, T = p.tokens, r = std::max<int64_t>(1, C / 4);
  std::vector<double> A(size_t(r * C)), chan(static_cast<size_t>(C));
  for (auto& a : A) a = rng.normal() / std::sqrt(double(r));
  for (int64_t j = 0; j < C; ++j) chan[size_t(j)] = std::exp(0.5 * rng.normal()) * (j % 17 == 3 ? 8.0 : 1.0);
  LayerProblem out;
  out.X = Tensor::zeros({S, T, C});
  float* x = out.X.data<float>();
  std::vector<double> g(static_cast<size_t>(r));
  for (int64_t t = 0; t < S * T; ++t) {
    for (auto& v : g) v = rng.normal();
    for (int64_t j = 0; j < C; ++j) {
      double v = 0.3 * rng.normal();
      for (int64_t k = 0; k < r; ++k) v += g[size_t(k)] * A[size_t(k * C + j)];
      x[t * C + j] = float(v * chan[size_t(j)]);
    }
    if (p.ill_conditioned) {
      for (int64_t j = 5; j < C; j += 29) x[t * C + j] *= 1e-3f;  // tiny channels
      for (int64_t j = 7; j + 1 < C; j += 31)                       // near duplicates
        x[t * C + j + 1] = x[t * C + j] + 1e-4f * float(rng.normal());
    }
    for (int64_t j : p.dead_cols) x[t * C + j] = 0.0f;
  }
  out.W = Tensor::zeros({p.C_out, C});
  float* w = out.W.data<float>();
  for (int64_t i = 0; i < p.C_out * C; ++i) {
    double v = 0.05 * rng.normal();
    if (rng.uniform() < 0.01) v *= 6.0;
    w[i] = float(v);
  }
  for (int64_t rrow : p.zero_rows)
    for (int64_t j = 0; j < C; ++j) w[rrow * C + j] = 0.0f;
  HessianAccumulator acc(C);
  acc.add(out.X);
  out.H = acc.H();
  out.scaler = acc.scaler();
  return out;
}

// Largest |a - b| over two f32 tensors of one shape.
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(double(a.data<float>()[i]) - b.data<float>()[i]));
  return m;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::equal(static_cast<const uint8_t*>(a.raw()), static_cast<const uint8_t*>(a.raw()) + a.nbytes(),
                    static_cast<const uint8_t*>(b.raw()));
}

}  // namespace obr::testing
