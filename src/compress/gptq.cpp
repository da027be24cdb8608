#include "compress/gptq.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <vector>

#include "compress/hessian.h"
#include "compress/masks.h"
#include "compress/quantizer.h"
#include "core/parallel.h"

namespace obr {

Tensor gptq_inverse_factor(const Tensor& H) {
  OBR_CHECK(H.defined() && H.ndim() == 2 && H.dtype() == DType::F32 && H.dim(0) == H.dim(1),
            "gptq_inverse_factor: H must be a square F32 matrix, got ", H.defined() ? shape_str(H.shape()) : "nothing");
  const int64_t C = H.dim(0);
  const float* h = H.data<float>();
  std::vector<double> a(size_t(C * C));
  for (int64_t i = 0; i < C * C; ++i) a[size_t(i)] = h[i];  // symmetric: row- and column-major agree
  SingleThreadedBlas st;
  // chol(H) = L (column-major lower), then H^-1 from it (lower triangle).
  lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', lapack_int(C), a.data(), lapack_int(C));
  OBR_CHECK(info == 0, "gptq_inverse_factor: H [", C, " x ", C, "] is not positive definite (leading minor ", info,
            "); damp it with prepare_hessian first");
  info = LAPACKE_dpotri_work(LAPACK_COL_MAJOR, 'L', lapack_int(C), a.data(), lapack_int(C));
  OBR_CHECK(info == 0, "gptq_inverse_factor: dpotri failed with info ", info);
  // chol(H^-1) = L2 (column-major lower): H^-1 = L2 L2^T = U^T U with U = L2^T. Element
  // (j, i), j >= i, of L2 sits at a[j + i*C], which is row-major (i, j): the buffer read
  // row-major is U once the other triangle is cleared.
  info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', lapack_int(C), a.data(), lapack_int(C));
  OBR_CHECK(info == 0, "gptq_inverse_factor: H^-1 is not numerically positive definite (leading minor ", info, ")");
  Tensor Hinv = Tensor::zeros({C, C});
  float* hinv = Hinv.data<float>();
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = i; j < C; ++j) hinv[i * C + j] = float(a[size_t(i * C + j)]);
  return Hinv;
}

void gptq_sweep(const Tensor& W, const Tensor& Hinv, const Tensor& scales, int bits, const Tensor& mask,
                int blocksize, int64_t first_col, Tensor& W_hat, Tensor& codes) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32 && W.is_contiguous(),
            "gptq_sweep: W must be a contiguous 2-D F32 tensor, got ", W.defined() ? shape_str(W.shape()) : "nothing");
  const int64_t rows = W.dim(0), C = W.dim(1);
  OBR_CHECK(Hinv.defined() && Hinv.shape() == Shape({C, C}) && Hinv.dtype() == DType::F32, "gptq_sweep: Hinv must be F32 [", C,
            ", ", C, "], got ", Hinv.defined() ? shape_str(Hinv.shape()) : "nothing");
  OBR_CHECK(scales.defined() && scales.dtype() == DType::F32 && scales.numel() == rows,
            "gptq_sweep: scales must be F32 [", rows, "]");
  OBR_CHECK(!mask.defined() || (mask.dtype() == DType::U8 && mask.shape() == W.shape()),
            "gptq_sweep: mask must be U8 ", shape_str(W.shape()), ", got ", mask.defined() ? shape_str(mask.shape()) : "");
  OBR_CHECK(W_hat.defined() && W_hat.shape() == W.shape() && W_hat.dtype() == DType::F32 && codes.defined() &&
                codes.shape() == W.shape() && codes.dtype() == DType::I8,
            "gptq_sweep: W_hat (F32) and codes (I8) must be allocated with W's shape ", shape_str(W.shape()));
  OBR_CHECK(blocksize > 0, "gptq_sweep: blocksize must be positive, got ", blocksize);
  OBR_CHECK(first_col >= 0 && first_col <= C, "gptq_sweep: first column ", first_col, " outside [0, ", C, "]");
  if (first_col == C || rows == 0) return;

  Tensor Wc = W.clone();
  float* w = Wc.data<float>();
  const float* hinv = Hinv.data<float>();
  const float* s = scales.data<float>();
  const uint8_t* m = mask.defined() ? mask.data<uint8_t>() : nullptr;
  float* q = W_hat.data<float>();
  int8_t* c = codes.data<int8_t>();
  const int64_t bs = blocksize;

  constexpr int64_t kPanel = 64;  // rows per task; fixed, so results do not depend on threads
  const int64_t panels = (rows + kPanel - 1) / kPanel;
  SingleThreadedBlas st;
  parallel_for_dynamic(panels, [&](int64_t p) {
    const int64_t r0 = p * kPanel, r1 = std::min(rows, r0 + kPanel);
    std::vector<float> Err1(size_t((r1 - r0) * bs));
    for (int64_t i1 = first_col; i1 < C;) {
      const int64_t i2 = std::min(C, (i1 / bs + 1) * bs);
      for (int64_t r = r0; r < r1; ++r) {
        float* W1 = w + r * C;  // the row; columns [i1, i2) are the block
        float* e = Err1.data() + (r - r0) * bs;
        for (int64_t i = i1; i < i2; ++i) {
          const float x = W1[i];
          const int code = (!m || m[r * C + i]) ? quantize_weight(x, s[r], bits) : 0;
          const float qv = dequantize_weight(code, s[r]);
          const float err = (x - qv) / hinv[i * C + i];
          const float* hi = hinv + i * C;
          for (int64_t j = i + 1; j < i2; ++j) W1[j] -= err * hi[j];
          e[i - i1] = err;
          q[r * C + i] = qv;
          c[r * C + i] = int8_t(code);
        }
      }
      if (i2 < C)  // W[:, i2:] -= Err1 * Hinv[i1:i2, i2:]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r1 - r0), int(C - i2), int(i2 - i1), -1.0f,
                    Err1.data(), int(bs), hinv + i1 * C + i2, int(C), 1.0f, w + r0 * C + i2, int(C));
      i1 = i2;
    }
  });
}

GptqOutput gptq_quantize(const Tensor& W, const Tensor& H, const Tensor& scales, int bits, const Tensor& mask,
                         int blocksize, double percdamp) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32, "gptq_quantize: W must be 2-D F32, got ",
            W.defined() ? shape_str(W.shape()) : "nothing");
  GptqOutput out;
  Tensor Wd = W.clone();
  PreparedHessian ph = prepare_hessian(H, &Wd, percdamp, 0.0, &out.warnings);
  out.percdamp = ph.percdamp;
  if (mask.defined()) Wd = apply_mask(Wd, mask);
  const Tensor Hinv = gptq_inverse_factor(ph.H);
  out.W_hat = Tensor::zeros(W.shape());
  out.codes = Tensor::zeros(W.shape(), DType::I8);
  gptq_sweep(Wd, Hinv, scales, bits, mask, blocksize, 0, out.W_hat, out.codes);
  return out;
}

}  // namespace obr
