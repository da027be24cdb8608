#include "model/linear.h"

#include <cblas.h>

namespace obr {

DenseLinear::DenseLinear(Tensor W, Tensor bias) : W_(std::move(W)), bias_(std::move(bias)) {
  OBR_CHECK(W_.dtype() == DType::F32 && W_.ndim() == 2, "DenseLinear: weight must be f32 2-D, got ",
            dtype_name(W_.dtype()), " ", shape_str(W_.shape()));
  has_bias_ = bias_.defined();
  if (has_bias_)
    OBR_CHECK(bias_.dtype() == DType::F32 && bias_.numel() == W_.dim(0), "DenseLinear: bias ",
              shape_str(bias_.shape()), " does not match weight ", shape_str(W_.shape()));
}

void matmul_xWt(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y) {
  if (T == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(out), int(in), 1.0f, W, int(in), x, 1, 0.0f, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(out), int(in), 1.0f, x, int(in), W, int(in),
                0.0f, y, int(out));
  }
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
