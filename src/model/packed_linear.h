// A linear layer that really runs in integers: INT4 weights packed (dense, 2:4 or unstructured
// sparse; simd/packed_format.h), activations quantized per token to int8 codes on the fly, int32
// accumulation, and the fixed float epilogue y = (float(acc) * s_a) * s_w (+ bias)
// (simd/kernels.h). It computes the same function as the simulated model (fake-quantized
// activations times W_hat = codes * s_w in float), up to float rounding of the products.
#pragma once

#include "model/linear.h"
#include "simd/packed_format.h"

namespace obr {

class PackedLinear : public Linear {
 public:
  // codes I8 [out, in] in [-8, 7], scales F32 [out]; act_bits 2..8, act_clip in (0, 1].
  PackedLinear(simd::Int4Format format, const Tensor& codes, const Tensor& scales, Tensor bias, int act_bits,
               float act_clip);
  // Already packed weights (e.g. read from a packed model file).
  PackedLinear(simd::PackedWeights W, Tensor bias, int act_bits, float act_clip);
  int64_t in_features() const override { return W_.k_in; }
  int64_t out_features() const override { return W_.n_out; }
  void forward(const float* x, int64_t T, float* y) const override;
  size_t weight_bytes() const override { return W_.bytes() + (bias_.defined() ? bias_.nbytes() : 0); }
  std::string kind() const override;
  const simd::PackedWeights& packed() const { return W_; }

 private:
  simd::PackedWeights W_;
  Tensor bias_;
  int act_bits_;
  float act_clip_;
};

}  // namespace obr
