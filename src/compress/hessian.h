// Calibration statistics of one linear layer (ALGORITHM.md section 0) and the preparation
// of H that every solver shares (section 5, steps 2-3).
//
//   X_s    [T, C_in]   the inputs of the layer for calibration sample s = 1..N
//   H      [C_in, C_in] = (2/N) * sum_s X_s^T X_s                (f32, symmetric)
//   scaler [C_in]       = (1/N) * sum_s ||X_s[:, j]||^2           (Wanda statistic)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace obr {

// Accumulates H and the Wanda scaler one sample at a time, as the reference's add_batch with
// one sample per batch (t = 1), in float32:
//   r = float(n / (n + 1));  n = n + 1;  Xs = float(sqrt(2 / n)) * X        (float)
//   H = fl(fl(H * r) + Xs^T Xs)                                           (float)
// Xs^T Xs is computed by single-threaded OpenBLAS SGEMM calls on fixed 128-column panels of
// H (the upper triangle; the lower one is mirrored, so H is exactly symmetric), the panels
// spread over OpenMP threads: each element's summation order is fixed by the panel
// layout alone, so H is bit-identical for any thread count. It matches the reference up to
// the summation order inside the GEMM.
//
// scaler (accumulated in double per column, returned as f32):
//   default:           (1/N) * sum_s ||X_s[:, j]||^2                     (the correct mean)
//   wanda_quirk=true:  sum_s ||X_s[:, j]||^2 / s  (the reference's add_batch lacks the
//                      "scaler *= n/(n+t)" rescale; identical to the default for N = 1)
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t C_in, bool wanda_quirk = false);

  // One sample: X row-major [T, C_in], T >= 1.
  void add(const float* X, int64_t T);
  // Same with a tensor: [T, C_in] is one sample; [S, T, C_in] is S samples added in order.
  void add(const Tensor& X);

  Tensor H() const;       // f32 [C_in, C_in] (zeros before the first sample)
  Tensor scaler() const;  // f32 [C_in]
  int64_t nsamples() const { return n_; }
  int64_t columns() const { return C_; }
  bool wanda_quirk() const { return quirk_; }

 private:
  int64_t C_;
  bool quirk_;
  int64_t n_ = 0;
  Tensor H_;                    // f32 [C, C]
  std::vector<double> sqsum_;   // per column: sum_s ||X_s[:,j]||^2 (quirk: divided by s)
};

// The H used by the solvers, from the undamped H (ALGORITHM.md 5.2-5.3, reference order):
//   dead columns: where H_jj == 0: H_jj = 1 and W[:, j] = 0 (when W is given);
//   damping:      damp = float(percdamp * mean(diag H)) (mean in double, after the dead fix);
//                 H_jj = H_jj + damp (float).
// If the damped H is not positive definite (double Cholesky of it fails), the damping is
// escalated, percdamp_k = max(10 * percdamp_{k-1}, first_retry_percdamp), recomputed from
// the undamped H, with a warning (obr::log_warn, and appended to `warnings`), until it
// factorises; past percdamp 1e6 it is an error. SparseGPT passes first_retry 0.1 (the
// reference's retry); everything else passes 0 (pure x10 steps).
struct PreparedHessian {
  Tensor H;                     // f32 [C, C]: dead columns fixed and damped
  std::vector<int64_t> dead;    // the dead columns, ascending
  double percdamp = 0.0;        // the damping fraction used (> requested when escalated)
  float damp = 0.0f;            // the value added to the diagonal
};
PreparedHessian prepare_hessian(const Tensor& H, Tensor* W, double percdamp, double first_retry_percdamp = 0.0,
                                std::vector<std::string>* warnings = nullptr);

// Lower Cholesky factor in double, in place on a column-major n x n matrix `a` (only the
// lower triangle is read and written). Returns false if it is not positive definite.
bool cholesky_lower_inplace(double* a, int64_t n, int64_t lda);

// While alive, OpenBLAS runs single-threaded (restored on destruction). The solvers call
// BLAS/LAPACK inside OpenMP loops over independent rows or panels; a single-threaded BLAS
// there avoids oversubscription and makes each call's result independent of any thread
// count.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int prev_;
};

}  // namespace obr
