#include "model/packed_linear.h"

#include <vector>

#include "simd/kernels.h"

namespace obr {

PackedLinear::PackedLinear(simd::Int4Format format, const Tensor& codes, const Tensor& scales, Tensor bias, int act_bits,
                           float act_clip)
    : bias_(std::move(bias)), act_bits_(act_bits), act_clip_(act_clip) {
  OBR_CHECK(codes.dtype() == DType::I8 && codes.ndim() == 2, "PackedLinear: codes must be I8 [out, in], got ",
            dtype_name(codes.dtype()), " ", shape_str(codes.shape()));
  OBR_CHECK(scales.dtype() == DType::F32 && scales.numel() == codes.dim(0), "PackedLinear: scales ",
            shape_str(scales.shape()), " do not match codes ", shape_str(codes.shape()));
  OBR_CHECK(act_bits >= 2 && act_bits <= 8, "the integer engine needs activations of 2..8 bits, got ", act_bits,
            " (use the simulated engine for A16)");
  W_ = simd::pack_int4(format, codes.data<int8_t>(), scales.data<float>(), codes.dim(0), codes.dim(1));
}

PackedLinear::PackedLinear(simd::PackedWeights W, Tensor bias, int act_bits, float act_clip)
    : W_(std::move(W)), bias_(std::move(bias)), act_bits_(act_bits), act_clip_(act_clip) {
  OBR_CHECK(act_bits >= 2 && act_bits <= 8, "the integer engine needs activations of 2..8 bits, got ", act_bits,
            " (use the simulated engine for A16)");
  OBR_CHECK(!bias_.defined() || bias_.numel() == W_.n_out, "PackedLinear: bias ", shape_str(bias_.shape()),
            " does not match ", W_.n_out, " output rows");
}

std::string PackedLinear::kind() const { return std::string("int4-") + simd::format_name(W_.format); }

void PackedLinear::forward(const float* x, int64_t T, float* y) const {
  const int64_t K = in_features();
  std::vector<int8_t> q(static_cast<size_t>(T * K));
  std::vector<float> s(static_cast<size_t>(T));
  simd::quantize_act_rows_i8(x, T, K, act_bits_, act_clip_, q.data(), s.data());
  simd::int4_matmul(W_, q.data(), s.data(), T, y, nullptr, bias_.defined() ? bias_.data<float>() : nullptr);
}

}  // namespace obr
