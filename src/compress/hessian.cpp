#include "compress/hessian.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/log.h"
#include "core/parallel.h"

namespace obr {

SingleThreadedBlas::SingleThreadedBlas() : prev_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
SingleThreadedBlas::~SingleThreadedBlas() { openblas_set_num_threads(prev_); }

HessianAccumulator::HessianAccumulator(int64_t C_in, bool wanda_quirk)
    : C_(C_in), quirk_(wanda_quirk), sqsum_(size_t(std::max<int64_t>(C_in, 0)), 0.0) {
  OBR_CHECK(C_in > 0, "HessianAccumulator: C_in must be positive, got ", C_in);
  H_ = Tensor::zeros({C_in, C_in});
}

void HessianAccumulator::add(const float* X, int64_t T) {
  OBR_CHECK(T >= 1, "HessianAccumulator::add: a sample needs T >= 1 tokens, got ", T);
  const int64_t C = C_;
  const float r = float(double(n_) / double(n_ + 1));
  n_ += 1;
  const float s = float(std::sqrt(2.0 / double(n_)));

  // Xs = s * X  [T, C]
  std::vector<float> xs(size_t(T * C));
  for (int64_t i = 0; i < T * C; ++i) xs[size_t(i)] = s * X[i];

  // Wanda statistic: per column sum of squares over the T tokens (double).
  std::vector<double> ss(size_t(C), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < C; ++j) ss[size_t(j)] += double(X[t * C + j]) * double(X[t * C + j]);
  for (int64_t j = 0; j < C; ++j) sqsum_[size_t(j)] += quirk_ ? ss[size_t(j)] / double(n_) : ss[size_t(j)];

  // Upper triangle, one 128-column panel [j0, j1) per task: G = Xs[:, 0:j1]^T Xs[:, j0:j1].
  constexpr int64_t kPanel = 128;
  const int64_t panels = (C + kPanel - 1) / kPanel;
  float* H = H_.data<float>();
  SingleThreadedBlas st;
  parallel_for_dynamic(panels, [&](int64_t p) {
    const int64_t j0 = p * kPanel, j1 = std::min(C, j0 + kPanel), nb = j1 - j0;
    std::vector<float> G(size_t(j1 * nb));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(j1), int(nb), int(T), 1.0f, xs.data(), int(C),
                xs.data() + j0, int(C), 0.0f, G.data(), int(nb));
    for (int64_t i = 0; i < j1; ++i)
      for (int64_t j = std::max(i, j0); j < j1; ++j) {
        float h = H[i * C + j] * r;
        H[i * C + j] = h + G[size_t(i * nb + (j - j0))];
      }
  });
  parallel_for(C, [&](int64_t i) {
    for (int64_t j = 0; j < i; ++j) H[i * C + j] = H[j * C + i];
  });
}

void HessianAccumulator::add(const Tensor& X) {
  OBR_CHECK(X.defined() && X.dtype() == DType::F32 && X.is_contiguous() && (X.ndim() == 2 || X.ndim() == 3) &&
                X.dim(-1) == C_,
            "HessianAccumulator::add: expected F32 [T, ", C_, "] or [S, T, ", C_, "], got ",
            X.defined() ? shape_str(X.shape()) : "nothing", " ", dtype_name(X.dtype()));
  const float* x = X.data<float>();
  if (X.ndim() == 2) {
    add(x, X.dim(0));
  } else {
    const int64_t T = X.dim(1);
    for (int64_t s = 0; s < X.dim(0); ++s) add(x + s * T * C_, T);
  }
}

Tensor HessianAccumulator::H() const { return H_.clone(); }

Tensor HessianAccumulator::scaler() const {
  Tensor out = Tensor::zeros({C_});
  float* o = out.data<float>();
  for (int64_t j = 0; j < C_; ++j) {
    const double v = sqsum_[size_t(j)];
    o[j] = float(n_ == 0 ? 0.0 : (quirk_ ? v : v / double(n_)));
  }
  return out;
}

bool cholesky_lower_inplace(double* a, int64_t n, int64_t lda) {
  if (n == 0) return true;
  const lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', lapack_int(n), a, lapack_int(lda));
  OBR_CHECK(info >= 0, "dpotrf: illegal argument ", -info);
  return info == 0;
}

// True if the f32 symmetric matrix H [C, C] has a double Cholesky factor.
static bool is_positive_definite(const float* H, int64_t C) {
  std::vector<double> a(size_t(C * C));
  for (int64_t i = 0; i < C * C; ++i) a[size_t(i)] = H[i];
  SingleThreadedBlas st;
  return cholesky_lower_inplace(a.data(), C, C);
}

PreparedHessian prepare_hessian(const Tensor& H_in, Tensor* W, double percdamp, double first_retry_percdamp,
                                std::vector<std::string>* warnings) {
  OBR_CHECK(H_in.defined() && H_in.ndim() == 2 && H_in.dtype() == DType::F32 && H_in.dim(0) == H_in.dim(1),
            "prepare_hessian: H must be a square F32 matrix, got ", H_in.defined() ? shape_str(H_in.shape()) : "nothing",
            " ", dtype_name(H_in.dtype()));
  const int64_t C = H_in.dim(0);
  OBR_CHECK(percdamp >= 0.0 && std::isfinite(percdamp), "prepare_hessian: percdamp must be >= 0, got ", percdamp);
  if (W) {
    OBR_CHECK(W->ndim() == 2 && W->dim(1) == C && W->dtype() == DType::F32,
              "prepare_hessian: W must be F32 [C_out, ", C, "], got ", shape_str(W->shape()));
  }
  PreparedHessian out;
  Tensor base = H_in.clone();
  float* h = base.data<float>();
  for (int64_t j = 0; j < C; ++j) {
    OBR_CHECK(std::isfinite(h[j * C + j]), "prepare_hessian: H[", j, ", ", j, "] = ", h[j * C + j], " is not finite");
    if (h[j * C + j] == 0.0f) {
      h[j * C + j] = 1.0f;
      out.dead.push_back(j);
    }
  }
  if (W && !out.dead.empty()) {
    float* w = W->data<float>();
    const int64_t rows = W->dim(0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j : out.dead) w[r * C + j] = 0.0f;
  }
  double mean_diag = 0.0;
  for (int64_t j = 0; j < C; ++j) mean_diag += h[j * C + j];
  mean_diag /= double(C);

  double pd = percdamp;
  for (;;) {
    out.H = base.clone();
    out.damp = float(pd * mean_diag);
    float* d = out.H.data<float>();
    for (int64_t j = 0; j < C; ++j) d[j * C + j] += out.damp;
    out.percdamp = pd;
    if (is_positive_definite(d, C)) break;
    const double next = std::max({10.0 * pd, first_retry_percdamp, 1e-6});
    OBR_CHECK(next <= 1e6, "prepare_hessian: H [", C, ", ", C, "] is not positive definite even with percdamp ", pd,
              " (mean diag ", mean_diag, "); is H finite and symmetric?");
    std::string msg = detail::concat("H [", C, " x ", C, "] is not positive definite with percdamp ", pd,
                                     "; retrying with percdamp ", next);
    log_warn(msg);
    if (warnings) warnings->push_back(msg);
    pd = next;
  }
  return out;
}

}  // namespace obr
