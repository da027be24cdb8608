// A linear layer y = x W^T (+ b) behind one interface, so the same forward pass runs
// the FP32 reference, the fake-quantized (simulated W4A4) model and the packed INT4 model.
//
// Shapes: x [T, in] row-major, y [T, out] row-major, W [out, in] row-major (PyTorch layout).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace obr {

class Linear {
 public:
  virtual ~Linear() = default;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // y [T, out] = x [T, in] W^T (+ bias). x is not modified.
  virtual void forward(const float* x, int64_t T, float* y) const = 0;
  // Bytes the weights occupy in memory (for `inspect` and memory reports).
  virtual size_t weight_bytes() const = 0;
  virtual std::string kind() const = 0;
};

// FP32 weights, product through OpenBLAS sgemm (sgemv for T = 1).
class DenseLinear : public Linear {
 public:
  DenseLinear(Tensor W, Tensor bias = Tensor());  // W f32 [out, in]; bias f32 [out] or undefined
  int64_t in_features() const override { return W_.dim(1); }
  int64_t out_features() const override { return W_.dim(0); }
  void forward(const float* x, int64_t T, float* y) const override;
  size_t weight_bytes() const override { return W_.nbytes() + (has_bias_ ? bias_.nbytes() : 0); }
  std::string kind() const override { return "dense-f32"; }
  const Tensor& weight() const { return W_; }
  Tensor& weight() { return W_; }
  const Tensor& bias() const { return bias_; }
  bool has_bias() const { return has_bias_; }

 private:
  Tensor W_, bias_;
  bool has_bias_ = false;
};

// y = x W^T + b for f32 buffers; the one GEMM every dense path uses.
void matmul_xWt(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y);

}  // namespace obr
