#include "compress/sparsegpt.h"

#include <cblas.h>

#include <algorithm>
#include <numeric>

#include "compress/gptq.h"
#include "compress/hessian.h"
#include "compress/quantizer.h"
#include "core/parallel.h"

namespace obr {

SparseGptOutput sparsegpt_gptq(const Tensor& W, const Tensor& H, const Tensor& scales, const SparseGptOptions& opt) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32 && W.is_contiguous(),
            "sparsegpt_gptq: W must be a contiguous 2-D F32 tensor, got ", W.defined() ? shape_str(W.shape()) : "nothing");
  const int64_t rows = W.dim(0), C = W.dim(1);
  OBR_CHECK(scales.defined() && scales.dtype() == DType::F32 && scales.numel() == rows,
            "sparsegpt_gptq: scales must be F32 [", rows, "]");
  OBR_CHECK(opt.blocksize > 0, "sparsegpt_gptq: blocksize must be positive, got ", opt.blocksize);
  check_mask_spec(opt.mask, C);
  const bool nm = opt.mask.nm();
  const int M = opt.mask.prune_m, N = opt.mask.prune_n;
  OBR_CHECK(!nm || opt.blocksize % M == 0, "sparsegpt_gptq: blocksize ", opt.blocksize, " must be a multiple of M = ", M,
            " for N:M sparsity");

  SparseGptOutput out;
  Tensor Wc = W.clone();
  PreparedHessian ph = prepare_hessian(H, &Wc, opt.percdamp, 0.1, &out.warnings);
  out.percdamp = ph.percdamp;
  const Tensor Hinv = gptq_inverse_factor(ph.H);

  out.W_hat = Tensor::zeros({rows, C});
  out.codes = Tensor::zeros({rows, C}, DType::I8);
  out.mask = Tensor::zeros({rows, C}, DType::U8);
  float* w = Wc.data<float>();
  const float* hinv = Hinv.data<float>();
  const float* s = scales.data<float>();
  float* q = out.W_hat.data<float>();
  int8_t* c = out.codes.data<int8_t>();
  uint8_t* keep = out.mask.data<uint8_t>();
  std::fill(keep, keep + rows * C, uint8_t(1));
  const int64_t bs = opt.blocksize;
  constexpr int64_t kPanel = 64;
  const int64_t panels = (rows + kPanel - 1) / kPanel;
  std::vector<float> tmp;
  SingleThreadedBlas st;

  for (int64_t i1 = 0; i1 < C; i1 += bs) {
    const int64_t i2 = std::min(C, i1 + bs), count = i2 - i1;
    if (!nm && opt.mask.sparsity > 0.0) {
      // Block-wide threshold over all rows: tmp = w^2 / U_ii^2.
      tmp.resize(size_t(rows * count));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = i1; i < i2; ++i) {
          const float x = w[r * C + i], d = hinv[i * C + i];
          tmp[size_t(r * count + (i - i1))] = (x * x) / (d * d);
        }
      std::vector<float> sorted = tmp;
      const size_t k = size_t(double(sorted.size()) * opt.mask.sparsity);
      std::nth_element(sorted.begin(), sorted.begin() + std::ptrdiff_t(k), sorted.end());
      const float thresh = sorted[k];
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = i1; i < i2; ++i)
          if (tmp[size_t(r * count + (i - i1))] <= thresh) keep[r * C + i] = 0;
    }
    parallel_for_dynamic(panels, [&](int64_t p) {
      const int64_t r0 = p * kPanel, r1 = std::min(rows, r0 + kPanel);
      std::vector<float> Err1(size_t((r1 - r0) * bs));
      std::vector<int> idx(size_t(std::max(M, 1)));
      std::vector<float> g(size_t(std::max(M, 1)));
      for (int64_t r = r0; r < r1; ++r) {
        float* W1 = w + r * C;
        float* e = Err1.data() + (r - r0) * bs;
        for (int64_t i = i1; i < i2; ++i) {
          if (nm && (i - i1) % M == 0) {
            for (int t = 0; t < M; ++t) {
              const float x = W1[i + t], d = hinv[(i + t) * C + (i + t)];
              g[size_t(t)] = (x * x) / (d * d);
            }
            std::iota(idx.begin(), idx.end(), 0);
            std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return g[size_t(a)] < g[size_t(b)]; });
            for (int t = 0; t < N; ++t) keep[r * C + i + idx[size_t(t)]] = 0;
          }
          const float x = W1[i];
          const int code = keep[r * C + i] ? quantize_weight(x, s[r], opt.bits) : 0;
          const float qv = dequantize_weight(code, s[r]);
          const float err = (x - qv) / hinv[i * C + i];
          const float* hi = hinv + i * C;
          for (int64_t j = i + 1; j < i2; ++j) W1[j] -= err * hi[j];
          e[i - i1] = err;
          q[r * C + i] = qv;
          c[r * C + i] = int8_t(code);
        }
      }
      if (i2 < C)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(r1 - r0), int(C - i2), int(count), -1.0f,
                    Err1.data(), int(bs), hinv + i1 * C + i2, int(C), 1.0f, w + r0 * C + i2, int(C));
    });
  }
  return out;
}

}  // namespace obr
