#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/half.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace obr;

TEST_CASE("bf16 and f16 conversions round to nearest even and keep specials") {
  // 1 + 2^-8 is halfway between two bf16 values (1 and 1 + 2^-7): ties to even -> 1.
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 and 1+2^-6: ties to even -> 1 + 2^-6.
  CHECK(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  CHECK(f16_to_f32(f32_to_f16(65504.0f)) == 65504.0f);
  // Smallest f16 subnormal 2^-24 survives; half of it (a tie with 0) rounds to even (0).
  CHECK(f16_to_f32(f32_to_f16(std::ldexp(1.0f, -24))) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(f32_to_f16(std::ldexp(1.0f, -25))) == 0.0f);
  CHECK(f16_to_f32(f32_to_f16(std::ldexp(3.0f, -25))) == std::ldexp(2.0f, -24));
  // Every f16 bit pattern that is not NaN round-trips exactly.
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    REQUIRE_MESSAGE(f32_to_f16(f) == h, "f16 pattern ", h);
  }
}

TEST_CASE("tensor: zeros, views, conversions and checks") {
  Tensor t = Tensor::zeros({3, 5});
  CHECK(t.numel() == 15);
  CHECK(t.strides() == Shape{5, 1});
  t.at<float>(2, 4) = 1.5f;
  Tensor c = t.clone();
  CHECK(c.at<float>(2, 4) == 1.5f);
  CHECK_THROWS_AS(t.data<int32_t>(), Error);
  Tensor b = t.to_dtype(DType::BF16);
  CHECK(b.nbytes() == 30);
  CHECK(b.to_f32().at<float>(2, 4) == 1.5f);
  CHECK_THROWS_AS(t.reshape({4, 4}), Error);
  static const float kData[4] = {1, 2, 3, 4};
  Tensor v = Tensor::view(kData, {2, 2}, DType::F32, nullptr);
  const Tensor& cv = v;
  CHECK(cv.at<float>(1, 0) == 3.0f);
  CHECK_THROWS_AS(v.raw_mut(), Error);
}

TEST_CASE("rng is reproducible from its seed") {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) CHECK(a.next_u64() == b.next_u64());
  CHECK(Rng(42).next_u64() != c.next_u64());
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    double x = r.normal();
    s += x;
    s2 += x * x;
  }
  CHECK(std::fabs(s / n) < 0.05);
  CHECK(std::fabs(s2 / n - 1.0) < 0.05);
}
