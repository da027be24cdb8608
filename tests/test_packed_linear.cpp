// The integer engine's linear against the simulated one: the same function up to float rounding
// (the simulated path multiplies dequantized floats; the integer path accumulates exact int32).
#include <doctest/doctest.h>

#include <cmath>

#include "compress/quantizer.h"
#include "core/rng.h"
#include "model/packed_linear.h"

using namespace obr;

TEST_CASE("packed linear: int4 engine equals the simulated W4A4 linear up to float rounding") {
  struct Case {
    simd::Int4Format fmt;
    int64_t out, in, T;
  };
  for (Case cs : {Case{simd::Int4Format::kDense, 96, 192, 7}, Case{simd::Int4Format::kSparse24, 64, 384, 1},
                  Case{simd::Int4Format::kSparse24, 100, 128, 33}, Case{simd::Int4Format::kUnstructured, 70, 320, 5}}) {
    Rng r(uint64_t(cs.out * 1000 + cs.in));
    Tensor codes = Tensor::zeros({cs.out, cs.in}, DType::I8), scales = Tensor::zeros({cs.out});
    int8_t* q = codes.data<int8_t>();
    for (int64_t i = 0; i < cs.out; ++i) {
      scales.data<float>()[i] = float(0.01 + 0.02 * r.uniform());
      for (int64_t g = 0; g < cs.in; g += 4) {
        // 2:4 pattern for every format (valid for all three), two random kept positions.
        int a = int(r.below(4)), b = (a + 1 + int(r.below(3))) % 4;
        for (int k = 0; k < 4; ++k)
          q[i * cs.in + g + k] = (k == a || k == b) ? int8_t(int(r.below(16)) - 8) : int8_t(0);
      }
    }
    PackedLinear packed(cs.fmt, codes, scales, Tensor(), 4, 0.9f);
    Tensor W_hat = codes.to_f32();
    for (int64_t i = 0; i < cs.out; ++i)
      for (int64_t k = 0; k < cs.in; ++k) W_hat.data<float>()[i * cs.in + k] *= scales.data<float>()[i];
    DenseLinear dense(W_hat);

    std::vector<float> x(size_t(cs.T * cs.in)), y1(size_t(cs.T * cs.out)), y2(size_t(cs.T * cs.out));
    for (auto& v : x) v = float(r.normal());
    packed.forward(x.data(), cs.T, y1.data());
    ActQuantSpec spec;
    spec.bits = 4;
    spec.clip = 0.9f;
    fake_quant_act_rows(x.data(), cs.T, cs.in, spec);
    dense.forward(x.data(), cs.T, y2.data());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < y1.size(); ++i) {
      worst = std::max(worst, double(std::fabs(y1[i] - y2[i])));
      scale = std::max(scale, double(std::fabs(y2[i])));
    }
    INFO(packed.kind(), " ", cs.out, "x", cs.in, " T=", cs.T, " worst ", worst, " of ", scale);
    CHECK(worst <= 1e-5 * scale);
  }
}
