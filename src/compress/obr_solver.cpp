#include "compress/obr_solver.h"

#include <lapacke.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>

#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/quantizer.h"
#include "core/log.h"
#include "core/parallel.h"

namespace obr {

namespace {

// Reusable |I| x |I| factor buffers: one per concurrently running row, so a 4096-wide layer
// does not allocate (and page-fault) a fresh 32 MB matrix for every row. The contents are
// always overwritten before use, so which buffer a row gets does not affect its result.
class BufferPool {
 public:
  std::vector<double> take(size_t n) {
    std::vector<double> v;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        v = std::move(free_.back());
        free_.pop_back();
      }
    }
    v.resize(n);
    return v;
  }
  void give(std::vector<double>&& v) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(v));
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<double>> free_;
};

void solve_with_factor(const double* L, int64_t n, int64_t lda, double* b) {
  if (n == 0) return;
  const lapack_int info =
      LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', lapack_int(n), 1, L, lapack_int(lda), b, lapack_int(n));
  OBR_CHECK(info == 0, "dpotrs: illegal argument ", -info);
}

// parallel_for_dynamic whose body may throw: an exception must not cross the OpenMP region,
// so the one of the lowest row is kept and rethrown after the loop (deterministic).
template <class F>
void parallel_rows_rethrow(int64_t n, F&& f) {
  std::mutex mu;
  int64_t bad_row = -1;
  std::exception_ptr err;
  parallel_for_dynamic(n, [&](int64_t i) {
    try {
      f(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (bad_row < 0 || i < bad_row) {
        bad_row = i;
        err = std::current_exception();
      }
    }
  });
  if (err) std::rethrow_exception(err);
}

}  // namespace

Tensor obr_restore(const Tensor& W, const Tensor& mask, const Tensor& H, const Tensor& scales, int bits, double alpha,
                   float damp, bool quant_compensation, std::vector<std::string>* warnings) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32 && W.is_contiguous(),
            "obr_restore: W must be a contiguous 2-D F32 tensor, got ", W.defined() ? shape_str(W.shape()) : "nothing");
  const int64_t rows = W.dim(0), C = W.dim(1);
  OBR_CHECK(mask.defined() && mask.dtype() == DType::U8 && mask.shape() == W.shape(), "obr_restore: mask must be U8 ",
            shape_str(W.shape()), ", got ", mask.defined() ? shape_str(mask.shape()) : "nothing");
  OBR_CHECK(H.defined() && H.dtype() == DType::F32 && H.shape() == Shape({C, C}) && H.is_contiguous(),
            "obr_restore: H must be a contiguous F32 [", C,
            ", ", C, "], got ", H.defined() ? shape_str(H.shape()) : "nothing");
  OBR_CHECK(scales.defined() && scales.dtype() == DType::F32 && scales.numel() == rows,
            "obr_restore: scales must be F32 [", rows, "]");
  OBR_CHECK(alpha >= 0.0 && alpha <= 1.0, "obr_restore: alpha must be in [0, 1], got ", alpha);

  const int64_t split = int64_t(double(C) * alpha);  // A: kept columns < split; B: the rest
  const float* w = W.data<float>();
  const uint8_t* m = mask.data<uint8_t>();
  const float* s = scales.data<float>();
  const float* Hf = H.data<float>();  // read as float (half the bytes), converted exactly
  double base = damp;  // per-row escalation: diagonal + base * (10^k - 1)
  if (!(base > 0.0)) {
    double mean_diag = 0.0;
    for (int64_t j = 0; j < C; ++j) mean_diag += Hf[j * C + j];
    base = std::max(1e-6 * mean_diag / double(C), 1e-30);
  }

  Tensor Wp = Tensor::zeros({rows, C});
  float* wp = Wp.data<float>();
  std::vector<int> escalations(size_t(rows), 0);
  BufferPool pool;
  SingleThreadedBlas st;
  // Progress for big layers (a 4096 x 4096 layer takes minutes): every 10% of the rows.
  const bool report = double(rows) * double(C) * double(C) * double(C) > 1e13;
  std::atomic<int64_t> done{0};
  Timer timer;

  parallel_rows_rethrow(rows, [&](int64_t c) {
    const float* wr = w + c * C;
    const uint8_t* mr = m + c * C;
    float* out = wp + c * C;
    std::vector<int64_t> P, Z;  // P = [B..., A...] (each ascending), Z = pruned
    P.reserve(size_t(C));
    for (int64_t j = 0; j < C; ++j) {
      out[j] = mr[j] ? wr[j] : 0.0f;  // Wbar
      if (mr[j] && j >= split) P.push_back(j);
      if (!mr[j]) Z.push_back(j);
    }
    const int64_t nB = int64_t(P.size());
    for (int64_t j = 0; j < split; ++j)
      if (mr[j]) P.push_back(j);
    const int64_t n = int64_t(P.size()), nA = n - nB;
    if (n == 0 || Z.empty()) return;

    // b = H_IZ W[c, Z] (in P order)
    std::vector<double> delta(size_t(n), 0.0);
    bool any_wz = false;
    for (int64_t z : Z) any_wz |= wr[z] != 0.0f;
    if (any_wz) {
      for (int64_t k = 0; k < n; ++k) {
        const float* hrow = Hf + P[size_t(k)] * C;
        double acc = 0.0;
        for (int64_t z : Z) acc += double(hrow[z]) * double(wr[z]);
        delta[size_t(k)] = acc;
      }
    }

    // The factor of H_PP (column-major n x n, lower), built on first use.
    std::vector<double> L;
    bool factored = false;
    auto factor = [&]() {
      L = pool.take(size_t(n * n));
      // H_BA in the strict upper triangle (rows B, columns A); dpotrf('L') never touches it.
      for (int64_t a = nB; a < n; ++a) {
        const float* hrow = Hf + P[size_t(a)] * C;
        for (int64_t b = 0; b < nB; ++b) L[size_t(b + a * n)] = hrow[P[size_t(b)]];
      }
      for (int k = 0;; ++k) {
        const double extra = k == 0 ? 0.0 : base * (std::pow(10.0, k) - 1.0);
        for (int64_t b = 0; b < n; ++b) {
          const float* hrow = Hf + P[size_t(b)] * C;
          double* col = L.data() + b * n;
          for (int64_t a = b; a < n; ++a) col[a] = hrow[P[size_t(a)]];
          col[b] += extra;
        }
        if (cholesky_lower_inplace(L.data(), n, n)) {
          escalations[size_t(c)] = k;
          break;
        }
        OBR_CHECK(k < 12, "obr_restore: row ", c, ": H_II (", n, " x ", n,
                  ") is not positive definite even with extra damping ", extra);
      }
      factored = true;
    };

    if (any_wz) {
      factor();
      solve_with_factor(L.data(), n, n, delta.data());
    }
    if (quant_compensation && nA > 0 && nB > 0) {
      // e_A = w'_A - Q(w'_A), w' = Wbar + float(delta)
      std::vector<double> e(static_cast<size_t>(nA));
      bool any_e = false;
      for (int64_t a = 0; a < nA; ++a) {
        const int64_t j = P[size_t(nB + a)];
        const float wpj = out[j] + float(delta[size_t(nB + a)]);
        const float ej = wpj - fake_quant_weight(wpj, s[c], bits);
        e[size_t(a)] = ej;
        any_e |= ej != 0.0f;
      }
      if (any_e) {
        if (!factored) factor();
        // b2 = H_BA e_A, solved with the leading |B| block of the factor: chol(H_BB).
        std::vector<double> b2(size_t(nB), 0.0);
        for (int64_t a = 0; a < nA; ++a) {
          const double ea = e[size_t(a)];
          const double* col = L.data() + (nB + a) * n;
          for (int64_t b = 0; b < nB; ++b) b2[size_t(b)] += col[b] * ea;
        }
        solve_with_factor(L.data(), nB, n, b2.data());
        for (int64_t b = 0; b < nB; ++b) delta[size_t(b)] += b2[size_t(b)];
      }
    }
    for (int64_t k = 0; k < n; ++k) out[P[size_t(k)]] += float(delta[size_t(k)]);
    if (factored) pool.give(std::move(L));
    const int64_t d = ++done;
    if (report && d % std::max<int64_t>(1, rows / 10) == 0)
      log_info("OBR: ", d, " / ", rows, " rows, ", timer.seconds(), " s");
  });

  int64_t escalated = 0;
  int worst = 0;
  for (int k : escalations) {
    escalated += k > 0;
    worst = std::max(worst, k);
  }
  if (escalated > 0) {
    std::string msg = detail::concat("OBR: H_II of ", escalated, " of ", rows,
                                     " rows was not positive definite; their damping was raised up to ",
                                     std::pow(10.0, worst), "x");
    log_warn(msg);
    if (warnings) warnings->push_back(msg);
  }
  return Wp;
}

void obr_quantize(const Tensor& W_prime, const Tensor& mask, const Tensor& H, const Tensor& scales,
                  const ObrOptions& opt, Tensor& W_hat, Tensor& codes) {
  OBR_CHECK(W_prime.defined() && W_prime.ndim() == 2 && W_prime.dtype() == DType::F32,
            "obr_quantize: W' must be 2-D F32");
  const int64_t C = W_prime.dim(1);
  W_hat = quantize_rtn(W_prime, scales, opt.bits, &codes);
  if (!opt.gptq_final) return;
  const int64_t split = int64_t(double(C) * opt.alpha);
  const Tensor Hinv = gptq_inverse_factor(H);
  if (!opt.reference_quirks) {
    gptq_sweep(W_prime, Hinv, scales, opt.bits, mask, opt.blocksize, split, W_hat, codes);
    return;
  }
  // Reference layout: RTN for [0, split), then its GPTQ output from column floor(0.5*C):
  // concatenating the two only gives C columns when both floors agree.
  const int64_t hard = int64_t(double(C) * 0.5);
  OBR_CHECK(split == hard, "reference_quirks: alpha ", opt.alpha, " splits C_in = ", C, " at column ", split,
            " but the reference's GPTQ part returns columns from floor(0.5*C_in) = ", hard,
            "; the reference fails here on a shape mismatch");
  int64_t first = 0;  // first 128-aligned block with i1 >= alpha*C (reference: skip i1 < alpha*C)
  while (first < C && double(first) < opt.alpha * double(C)) first += opt.blocksize;
  float* q = W_hat.data<float>();
  int8_t* cd = codes.data<int8_t>();
  const int64_t rows = W_prime.dim(0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = split; j < std::min(first, C); ++j) {  // never quantized: stays 0
      q[r * C + j] = 0.0f;
      cd[r * C + j] = 0;
    }
  gptq_sweep(W_prime, Hinv, scales, opt.bits, mask, opt.blocksize, std::min(first, C), W_hat, codes);
}

}  // namespace obr
