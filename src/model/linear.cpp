#include "model/linear.h"

#include <cblas.h>

#include <algorithm>

#include "core/parallel.h"

namespace obr {

DenseLinear::DenseLinear(Tensor W, Tensor bias) : W_(std::move(W)), bias_(std::move(bias)) {
  OBR_CHECK(W_.dtype() == DType::F32 && W_.ndim() == 2, "DenseLinear: weight must be f32 2-D, got ",
            dtype_name(W_.dtype()), " ", shape_str(W_.shape()));
  has_bias_ = bias_.defined();
  if (has_bias_)
    OBR_CHECK(bias_.dtype() == DType::F32 && bias_.numel() == W_.dim(0), "DenseLinear: bias ",
              shape_str(bias_.shape()), " does not match weight ", shape_str(W_.shape()));
}

// OpenBLAS runs single-threaded; the threads split fixed blocks of output features. Each
// output element is then computed by the same single-threaded kernel on the same block shape
// whatever the thread count, so results are bit-identical for any number of threads (OpenBLAS's
// own threading changes the blocking, and with it the rounding).
static constexpr int64_t kOutBlock = 64;

void matmul_xWt(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y) {
  static const bool single_threaded_blas = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single_threaded_blas;
  const int64_t blocks = (out + kOutBlock - 1) / kOutBlock;
  parallel_for(blocks, [&](int64_t b) {
    const int64_t o0 = b * kOutBlock, n = std::min(kOutBlock, out - o0);
    if (T == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(n), int(in), 1.0f, W + o0 * in, int(in), x, 1, 0.0f, y + o0, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(n), int(in), 1.0f, x, int(in), W + o0 * in,
                  int(in), 0.0f, y + o0, int(out));
    }
  });
}

void DenseLinear::forward(const float* x, int64_t T, float* y) const {
  const int64_t in = in_features(), out = out_features();
  matmul_xWt(x, T, in, W_.data<float>(), out, y);
  if (has_bias_) {
    const float* b = bias_.data<float>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * out + o] += b[o];
  }
}

}  // namespace obr
