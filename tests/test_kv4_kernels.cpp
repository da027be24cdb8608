// Tests of the packed 4-bit KV cache's layout, quantizer and kernels (simd/kv4_cache.h):
//
//   * layout: the documented nibble order, scales and zeros, byte for byte;
//   * quantization: dequantized codes equal the simulated quantizer (fake_quant_kv) BITWISE on
//     hostile shapes (head_dim 64/80/128, T = 1/3/17, odd nkv, groups smaller and larger than a
//     head, all-zero and constant groups, misaligned input);
//   * kernels: kv4_scores and kv4_weighted_sum on every SIMD target equal the scalar reference
//     bit for bit (misaligned q/p/out, odd key counts), and the reference is within the
//     floating-point error bound of a double-precision dot product.
// Attention and whole-model tests: test_kv4.cpp. These need only simd/, the quantizer and the
// tensor type, so tests/aarch64/neon_check.sh runs them on NEON under qemu too.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "test_kv4_util.h"

using namespace obr;
using namespace obr::simd;
using namespace obr::testing;
// ---------------------------------------------------------------------------------------------
// Layout and quantization

TEST_CASE("kv4 layout: nibble order, scales and zeros match the documented bytes") {
  // One row of 32 columns, group 16. Group 0: values 0..15 with clip 1 -> scale 1, zero 0,
  // code = value. Group 1: values -8..7 -> xmin -8, xmax 7, scale 1, zero 8, code = value + 8.
  std::vector<float> x(32);
  for (int c = 0; c < 16; ++c) x[size_t(c)] = float(c);
  for (int c = 0; c < 16; ++c) x[size_t(16 + c)] = float(c - 8);
  Kv4Matrix m = kv4_allocate(2, 32, 16, 16);
  Kv4Quant q;
  q.clip = 1.0f;
  q.group = 16;
  kv4_write_rows(m, 1, x.data(), 1, q);  // row 1; row 0 stays zero
  REQUIRE(m.codes.size() == 32);
  REQUIRE(m.bytes() == 32 + 4 * 4 + 4 * 4);
  for (int i = 0; i < 16; ++i) CHECK(m.codes[size_t(i)] == 0);
  for (int i = 0; i < 8; ++i) {  // byte i = column 2i | column 2i+1 << 4
    CHECK_MESSAGE(m.codes[size_t(16 + i)] == uint8_t((2 * i) | (2 * i + 1) << 4), "byte ", i);
    CHECK_MESSAGE(m.codes[size_t(24 + i)] == uint8_t((2 * i) | (2 * i + 1) << 4), "byte ", 8 + i);
  }
  CHECK(m.scale[2] == 1.0f);
  CHECK(m.zero[2] == 0.0f);
  CHECK(m.scale[3] == 1.0f);
  CHECK(m.zero[3] == 8.0f);
  for (int c = 0; c < 32; ++c) CHECK(kv4_deq_at(m, 1, c) == x[size_t(c)]);
}

TEST_CASE("kv4 quantization: dequantized codes equal fake_quant_kv bitwise on hostile shapes") {
  struct Shape {
    int64_t hd, nkv, group;
  };
  const Shape shapes[] = {{64, 1, 64},  {64, 3, 64},  {128, 1, 128}, {128, 5, 128}, {80, 3, 80},
                          {80, 1, 16},  {128, 3, 32}, {64, 2, 128},  {80, 5, 400}};
  int checked = 0;
  for (const Shape& sh : shapes) {
    const int64_t cols = sh.hd * sh.nkv;
    REQUIRE(kv4_supported(sh.hd, cols, sh.group, 4));
    for (int64_t T : {1, 3, 17}) {
      for (int variant = 0; variant < 4; ++variant) {
        Kv4Quant q;
        q.group = sh.group;
        q.clip = variant == 1 ? 1.0f : 0.95f;
        q.include_zero = variant != 2;
        q.bits = variant == 3 ? 3 : 4;
        const uint64_t seed = uint64_t(sh.hd * 1000 + sh.nkv * 100 + T * 10 + variant);
        Misaligned<float> x(size_t(T * cols), 4 + 4 * size_t(T % 3));
        fill_rows(x.p, T, cols, sh.group, seed);
        if (!q.include_zero && T > 1 && cols / sh.group > 2)  // an all-zero group without the 0 in min/max
          std::fill(x.p + cols + 2 * sh.group, x.p + cols + 3 * sh.group, 0.0f);
        // The simulated path: fake-quantize a copy in f32.
        std::vector<float> sim(x.p, x.p + T * cols);
        fake_quant_kv(sim.data(), T, cols, sh.group, sim_spec(q));
        // The packed path: write at an offset row of a larger cache, then dequantize.
        const int64_t row0 = 5;
        Kv4Matrix m = kv4_allocate(row0 + T + 2, cols, sh.hd, sh.group);
        kv4_write_rows(m, row0, x.p, T, q);
        std::vector<float> deq(size_t(T * cols));
        kv4_dequant_rows(m, row0, T, deq.data());
        for (int64_t i = 0; i < T * cols; ++i) {
          if (bits_of(deq[size_t(i)]) == bits_of(sim[size_t(i)]) || (std::isnan(deq[size_t(i)]) && std::isnan(sim[size_t(i)])))
            continue;
          FAIL("hd ", sh.hd, " nkv ", sh.nkv, " group ", sh.group, " T ", T, " bits ", q.bits, " clip ", q.clip,
               " include_zero ", q.include_zero, ": [t=", i / cols, ", c=", i % cols, "] x ", x.p[i],
               ": simulated ", sim[size_t(i)], ", packed ", deq[size_t(i)], " (code ",
               kv4_code_at(m, row0 + i / cols, i % cols), ")");
        }
        // Every code fits in `bits`, rows outside [row0, row0 + T) are untouched.
        for (int64_t t = 0; t < m.rows; ++t)
          for (int64_t c = 0; c < cols; ++c) {
            const int code = kv4_code_at(m, t, c);
            const bool written = t >= row0 && t < row0 + T;
            if (!(code < (1 << q.bits) && (written || code == 0)))
              FAIL("row ", t, " col ", c, ": code ", code);
          }
        ++checked;
      }
    }
  }
  CHECK(checked == 9 * 3 * 4);
}

TEST_CASE("kv4 quantization: shape and argument checks name the values") {
  CHECK_FALSE(kv4_supported(72, 72, 72, 4));    // head_dim not a multiple of 16
  CHECK_FALSE(kv4_supported(64, 192, 40, 4));   // group not a multiple of 16
  CHECK_FALSE(kv4_supported(64, 192, 128, 4));  // 192 columns are not whole groups of 128
  CHECK(kv4_supported(64, 192, 64, 4));
  CHECK_FALSE(kv4_supported(64, 192, 64, 5));   // codes wider than a nibble
  CHECK_THROWS_AS(kv4_allocate(4, 72, 72, 72), Error);
  Kv4Matrix m = kv4_allocate(4, 64, 64, 64);
  std::vector<float> x(64 * 5, 1.0f);
  Kv4Quant q;
  q.group = 64;
  CHECK_THROWS_WITH_AS(kv4_write_rows(m, 2, x.data(), 3, q), doctest::Contains("do not fit"), Error);
  q.group = 32;
  CHECK_THROWS_AS(kv4_write_rows(m, 0, x.data(), 1, q), Error);
  std::vector<float> s(8), qv(64);
  CHECK_THROWS_AS(kv4_scores(m, 8, 64, qv.data(), 1, 1.0f, s.data()), Error);   // col0 not 16-aligned
  CHECK_THROWS_AS(kv4_scores(m, 0, 64, qv.data(), 5, 1.0f, s.data()), Error);   // more rows than the cache
  CHECK_THROWS_AS(kv4_weighted_sum(Kv4Matrix(), 0, 64, qv.data(), 1, s.data()), Error);
}

// ---------------------------------------------------------------------------------------------
// Kernels: every target against the reference, bit for bit

TEST_CASE("kv4 kernels: scores and weighted sums are bit-identical to the reference on every target") {
  MESSAGE("SIMD targets compared with the reference: ", targets_list());
  struct Case {
    int64_t hd, nkv, group, n;
  };
  const Case cases[] = {{64, 1, 64, 1},    {64, 3, 64, 17},  {128, 1, 128, 3}, {128, 2, 128, 100},
                        {80, 3, 80, 17},   {80, 1, 16, 33},  {128, 3, 32, 7},  {64, 2, 128, 64},
                        {80, 5, 400, 129}, {256, 1, 256, 5}, {48, 3, 48, 2}};
  for (const Case& cs : cases) {
    const int64_t cols = cs.hd * cs.nkv;
    const uint64_t seed = uint64_t(cs.hd * 7919 + cs.nkv * 31 + cs.n);
    const Kv4Matrix M = random_cache(cs.n + 3, cs.n, cols, cs.hd, cs.group, seed);
    Rng rng(seed + 1);
    Misaligned<float> q(size_t(cs.hd), 4 * size_t(1 + cs.n % 5));
    Misaligned<float> p(size_t(cs.n), 4 * size_t(1 + cs.hd % 3));
    for (int64_t d = 0; d < cs.hd; ++d) q.p[d] = float(rng.normal());
    for (int64_t j = 0; j < cs.n; ++j) p.p[j] = float(rng.uniform()) / float(cs.n);
    const float scale = 1.0f / std::sqrt(float(cs.hd));
    for (int64_t kvh = 0; kvh < cs.nkv; ++kvh) {
      const int64_t col0 = kvh * cs.hd;
      std::vector<float> s_ref(size_t(cs.n)), o_ref(size_t(cs.hd));
      kv4_scores_ref(M, col0, cs.hd, q.p, cs.n, scale, s_ref.data());
      kv4_weighted_sum_ref(M, col0, cs.hd, p.p, cs.n, o_ref.data());
      // The reference itself against double precision: |error| <= gamma * sum |q k|, with
      // gamma = (hd/16 + 4 + 1) u for dot16 (a 16-lane sum of hd/16 terms, a 4-level tree, the
      // final scale), and (n + 1) u * sum |p v| for the sequential weighted sum.
      const double u = std::ldexp(1.0, -24);
      for (int64_t j = 0; j < cs.n; ++j) {
        double exact = 0, mag = 0;
        for (int64_t d = 0; d < cs.hd; ++d) {
          const double k = kv4_deq_at(M, j, col0 + d);
          exact += double(q.p[d]) * k;
          mag += std::fabs(double(q.p[d]) * k);
        }
        const double bound = (double(cs.hd / 16 + 6) * u) * mag * scale + 1e-30;
        REQUIRE_MESSAGE(std::fabs(double(s_ref[size_t(j)]) - exact * scale) <= bound, "hd ", cs.hd, " key ", j);
      }
      for (int64_t d = 0; d < cs.hd; ++d) {
        double exact = 0, mag = 0;
        for (int64_t j = 0; j < cs.n; ++j) {
          const double v = kv4_deq_at(M, j, col0 + d);
          exact += double(p.p[j]) * v;
          mag += std::fabs(double(p.p[j]) * v);
        }
        REQUIRE_MESSAGE(std::fabs(double(o_ref[size_t(d)]) - exact) <= double(cs.n + 1) * u * mag + 1e-30, "hd ",
                        cs.hd, " d ", d);
      }
      for (const SimdTarget& target : runnable_targets()) {
        ScopedTarget scoped(target);
        Misaligned<float> s(size_t(cs.n), 4 * size_t(1 + kvh % 3));
        Misaligned<float> o(size_t(cs.hd), 4 * size_t(2 + kvh % 3));
        std::fill(s.p, s.p + cs.n, std::numeric_limits<float>::quiet_NaN());
        std::fill(o.p, o.p + cs.hd, std::numeric_limits<float>::quiet_NaN());
        kv4_scores(M, col0, cs.hd, q.p, cs.n, scale, s.p);
        kv4_weighted_sum(M, col0, cs.hd, p.p, cs.n, o.p);
        for (int64_t j = 0; j < cs.n; ++j)
          if (bits_of(s.p[j]) != bits_of(s_ref[size_t(j)]))
            FAIL(target.name, " kv4_scores hd ", cs.hd, " nkv ", cs.nkv, " group ", cs.group, " n ", cs.n,
                 " kv head ", kvh, ": key ", j, " expected ", s_ref[size_t(j)], " got ", s.p[j]);
        for (int64_t d = 0; d < cs.hd; ++d)
          if (bits_of(o.p[d]) != bits_of(o_ref[size_t(d)]))
            FAIL(target.name, " kv4_weighted_sum hd ", cs.hd, " nkv ", cs.nkv, " group ", cs.group, " n ", cs.n,
                 " kv head ", kvh, ": d ", d, " expected ", o_ref[size_t(d)], " got ", o.p[d]);
        // n = 0: no scores, a zero output.
        kv4_weighted_sum(M, col0, cs.hd, p.p, 0, o.p);
        for (int64_t d = 0; d < cs.hd; ++d) REQUIRE(bits_of(o.p[d]) == 0u);
      }
    }
  }
}
