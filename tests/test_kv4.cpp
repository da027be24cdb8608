// Tests of the packed 4-bit KV cache (simd/kv4_cache.h) and attention over it.
//
//   * layout: the documented nibble order, scales and zeros, byte for byte;
//   * quantization: dequantized codes equal the simulated quantizer (fake_quant_kv) BITWISE on
//     hostile shapes (head_dim 64/80/128, T = 1/3/17, odd nkv, groups smaller and larger than a
//     head, all-zero and constant groups, misaligned input);
//   * kernels: kv4_scores and kv4_weighted_sum on every SIMD target equal the scalar reference
//     bit for bit (misaligned q/p/out, odd key counts), and the reference is within the
//     floating-point error bound of a double-precision dot product;
//   * attention: the packed path and the f32 path on the same (bitwise equal) K and V agree
//     within a bound derived from the summation-order error;
//   * model: logits with the packed cache vs the simulated f32 cache, on a random model and on
//     a compressed model run by the integer engine; thread-count independence.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "compress/compressed_model.h"
#include "compress/pipeline.h"
#include "compress/quantizer.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "model/llama.h"
#include "model/synthetic.h"
#include "simd/cpu_info.h"
#include "simd/kv4_cache.h"
#include "simd/kv4_ref.h"

using namespace obr;
using namespace obr::simd;
namespace fs = std::filesystem;

namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Buffers at deliberately odd addresses (4 bytes past a 64-byte boundary + offset).
template <class T>
struct Misaligned {
  std::vector<uint8_t> storage;
  T* p;
  Misaligned(size_t n, size_t byte_offset) : storage(n * sizeof(T) + 128) {
    const uintptr_t base = (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63);
    p = reinterpret_cast<T*>(base + byte_offset);
  }
};

// Rows x [T, cols] like real K/V rows: N(0, 1) with per-column spread, a few outliers, and
// special groups: group 1 of row 0 all zero, group 2 of row 1 constant.
void fill_rows(float* x, int64_t T, int64_t cols, int64_t group, uint64_t seed) {
  Rng rng(seed);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      float v = float(rng.normal()) * (0.5f + float(c % 7) * 0.3f);
      if (rng.below(61) == 0) v *= 12.0f;
      x[t * cols + c] = v;
    }
  const int64_t gpr = cols / group;
  if (gpr > 1) std::fill(x + group, x + 2 * group, 0.0f);
  if (T > 1 && gpr > 2) std::fill(x + cols + 2 * group, x + cols + 3 * group, 0.37f);
  if (T > 1 && gpr == 1) std::fill(x + cols, x + 2 * cols, 0.0f);
}

KVQuantSpec sim_spec(const Kv4Quant& q) {
  KVQuantSpec s;
  s.bits = q.bits;
  s.clip = q.clip;
  s.sym = false;
  s.group = int(q.group);
  s.include_zero = q.include_zero;
  return s;
}

// A cache of `rows` rows, the first n written from random data.
Kv4Matrix random_cache(int64_t rows, int64_t n, int64_t cols, int64_t hd, int64_t group, uint64_t seed) {
  Kv4Matrix m = kv4_allocate(rows, cols, hd, group);
  std::vector<float> x(size_t(n * cols));
  fill_rows(x.data(), n, cols, group, seed);
  Kv4Quant q;
  q.group = group;
  kv4_write_rows(m, 0, x.data(), n, q);
  return m;
}

std::string targets_list() {
  std::string s;
  for (const SimdTarget& t : runnable_targets()) s += (s.empty() ? "" : ", ") + t.name;
  return s;
}

struct RestoreThreads {
  int n = num_threads();
  ~RestoreThreads() { set_num_threads(n); }
};

}  // namespace

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

// ---------------------------------------------------------------------------------------------
// Attention: packed vs f32 on the same K and V values

TEST_CASE("kv4 attention: packed and f32 caches agree within the summation-order error bound") {
  // Both caches hold bitwise the same K and V values (previous test), so the outputs differ
  // only by the order of the sums. With u = 2^-24 and gamma_m = m u / (1 - m u):
  //   scores:  |ds_j| <= delta_j = 2 gamma_{hd+2} scale sum_d |q_d k_jd|  (each path is within
  //            gamma of the exact dot product: sgemm in some order, dot16 in its own);
  //   softmax: a score shift of at most delta = max_j delta_j changes each p_j by a factor in
  //            [e^-2delta, e^2delta], plus a few u of rounding in exp, the sum and the scaling;
  //   output:  |d out_d| <= (e^{2 delta} - 1 + 8u + 2 gamma_{n+1}) sum_j p_j |v_jd|.
  // The test checks every output against this bound times 2.
  struct Case {
    int64_t nh, nkv, hd, T, pos0;
  };
  const Case cases[] = {{3, 1, 64, 17, 0}, {4, 2, 80, 3, 20}, {6, 3, 128, 1, 40}, {2, 2, 64, 9, 7}};
  for (const Case& cs : cases) {
    const int64_t kvdim = cs.nkv * cs.hd, qdim = cs.nh * cs.hd, n = cs.pos0 + cs.T;
    std::vector<float> K(size_t(n * kvdim)), V(size_t(n * kvdim)), q(size_t(cs.T * qdim));
    fill_rows(K.data(), n, kvdim, cs.hd, uint64_t(cs.hd + 1));
    fill_rows(V.data(), n, kvdim, cs.hd, uint64_t(cs.hd + 2));
    fill_rows(q.data(), cs.T, qdim, cs.hd, uint64_t(cs.hd + 3));
    for (float& v : q) v *= 0.5f;
    Kv4Quant kq;
    kq.group = cs.hd;
    LayerCache packed, f32;
    for (LayerCache* c : {&packed, &f32}) {
      c->max_len = n + 4;
      c->kvdim = kvdim;
      c->head_dim = cs.hd;
    }
    packed.K4 = kv4_allocate(n + 4, kvdim, cs.hd, cs.hd);
    packed.V4 = kv4_allocate(n + 4, kvdim, cs.hd, cs.hd);
    kv4_write_rows(packed.K4, 0, K.data(), n, kq);
    kv4_write_rows(packed.V4, 0, V.data(), n, kq);
    f32.K = Tensor::zeros({n + 4, kvdim});
    f32.V = Tensor::zeros({n + 4, kvdim});
    std::copy(K.begin(), K.end(), f32.K.data<float>());
    std::copy(V.begin(), V.end(), f32.V.data<float>());
    fake_quant_kv(f32.K.data<float>(), n, kvdim, cs.hd, sim_spec(kq));
    fake_quant_kv(f32.V.data<float>(), n, kvdim, cs.hd, sim_spec(kq));
    std::vector<float> out_p(size_t(cs.T * qdim)), out_f(size_t(cs.T * qdim));
    attention(q.data(), packed, cs.T, cs.pos0, cs.nh, cs.nkv, cs.hd, out_p.data());
    attention(q.data(), f32, cs.T, cs.pos0, cs.nh, cs.nkv, cs.hd, out_f.data());

    const double u = std::ldexp(1.0, -24), scale = 1.0 / std::sqrt(double(cs.hd));
    auto gamma = [u](double m) { return m * u / (1 - m * u); };
    const float* Kq = f32.K.data<float>();
    const float* Vq = f32.V.data<float>();
    double worst_ratio = 0;
    for (int64_t t = 0; t < cs.T; ++t) {
      const int64_t valid = cs.pos0 + t + 1;
      for (int64_t h = 0; h < cs.nh; ++h) {
        const int64_t kvh = h / (cs.nh / cs.nkv);
        const float* qh = q.data() + t * qdim + h * cs.hd;
        // Exact softmax weights (double) and delta.
        std::vector<double> s(static_cast<size_t>(valid)), p(static_cast<size_t>(valid));
        double delta = 0, mx = -1e300, sum = 0;
        for (int64_t j = 0; j < valid; ++j) {
          double dot = 0, mag = 0;
          for (int64_t d = 0; d < cs.hd; ++d) {
            const double k = Kq[j * kvdim + kvh * cs.hd + d];
            dot += qh[d] * k;
            mag += std::fabs(qh[d] * k);
          }
          s[size_t(j)] = dot * scale;
          delta = std::max(delta, 2 * gamma(double(cs.hd + 2)) * scale * mag);
          mx = std::max(mx, s[size_t(j)]);
        }
        for (int64_t j = 0; j < valid; ++j) sum += (p[size_t(j)] = std::exp(s[size_t(j)] - mx));
        for (double& v : p) v /= sum;
        for (int64_t d = 0; d < cs.hd; ++d) {
          double pv = 0;
          for (int64_t j = 0; j < valid; ++j) pv += p[size_t(j)] * std::fabs(double(Vq[j * kvdim + kvh * cs.hd + d]));
          const double bound = 2 * (std::expm1(2 * delta) + 8 * u + 2 * gamma(double(valid + 1))) * pv + 1e-30;
          const size_t i = size_t(t * qdim + h * cs.hd + d);
          const double diff = std::fabs(double(out_p[i]) - double(out_f[i]));
          worst_ratio = std::max(worst_ratio, diff / bound);
          if (diff > bound)
            FAIL("nh ", cs.nh, " nkv ", cs.nkv, " hd ", cs.hd, " T ", cs.T, " pos0 ", cs.pos0, ": [t=", t, ", h=", h,
                 ", d=", d, "] packed ", out_p[i], " f32 ", out_f[i], " |diff| ", diff, " > bound ", bound);
        }
      }
    }
    MESSAGE("attention nh=", cs.nh, " hd=", cs.hd, " T=", cs.T, ": worst |diff| / bound = ", worst_ratio);
  }
}

// ---------------------------------------------------------------------------------------------
// Whole model

namespace {

ModelConfig kv4_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 192;
  c.intermediate_size = 320;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;  // odd nkv, GQA 3:1, head_dim 64 (the shape of data/models/tiny)
  c.head_dim = 64;
  c.vocab_size = 101;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  return c;
}

// Prefill of the first `split` tokens, then one token at a time (both attention shapes).
Tensor run_tokens(const LlamaModel& m, const std::vector<int32_t>& ids, int64_t split) {
  const int64_t T = int64_t(ids.size()), V = m.cfg.vocab_size;
  KVCache c = KVCache::make(m.cfg, T);
  Tensor all = Tensor::zeros({T, V});
  Tensor first = forward(m, ids.data(), split, c);
  std::copy(first.data<float>(), first.data<float>() + split * V, all.data<float>());
  for (int64_t t = split; t < T; ++t) {
    Tensor l = forward(m, ids.data() + t, 1, c);
    std::copy(l.data<float>(), l.data<float>() + V, all.data<float>() + t * V);
  }
  return all;
}

// max |a - b| / max |b|
double rel_err(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    num = std::max(num, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
    den = std::max(den, double(std::fabs(b.data<float>()[i])));
  }
  return num / std::max(den, 1e-30);
}

const std::vector<int32_t> kIds = {1, 7, 42, 3, 99, 0, 15, 64, 8, 77, 23, 5, 50, 51, 52, 2, 9, 33, 70, 11};

}  // namespace

TEST_CASE("kv4 model: packed and simulated KV caches give the same logits up to rounding") {
  // KV quantization on, activation quantization off: K and V are bitwise equal in both caches,
  // so the logits differ only through the attention sums' rounding order (|ds| ~ 1e-6
  // relative), carried through 2 layers with no quantizer that could amplify it. 1e-4 of the
  // largest logit leaves two orders of magnitude of margin over the observed ~1e-6.
  LlamaModel m = random_llama(kv4_config(), 21);
  CompressOptions opt;
  opt.abits = 16;
  enable_quantized_runtime(m.rt, opt);
  REQUIRE(m.rt.quant_kv);
  const Tensor sim = run_tokens(m, kIds, 12);
  Kv4Quant q;
  q.bits = opt.kvbits;
  q.clip = opt.kv.clip;
  q.include_zero = opt.kv.include_zero;
  REQUIRE(enable_packed_kv(m.rt, m.cfg, q));
  CHECK(m.rt.kv4.group == 64);
  CHECK(m.rt.describe().find("packed 4-bit") != std::string::npos);
  const Tensor packed = run_tokens(m, kIds, 12);
  const double err = rel_err(packed, sim);
  MESSAGE("random model, packed vs simulated KV: max |dlogit| / max |logit| = ", err);
  CHECK(err < 1e-4);
  // Incremental decoding equals one full pass up to rounding (the attention shape changes).
  const Tensor full = run_tokens(m, kIds, int64_t(kIds.size()));
  CHECK(rel_err(full, packed) < 1e-5);
  // A cache is filled in one format only.
  KVCache c = KVCache::make(m.cfg, 4);
  forward(m, kIds.data(), 2, c);
  CHECK(c.bytes() == 2 * 2 * 4 * (64 / 2 + 8));  // layers x (K, V) x rows x (codes + scale, zero)
  CHECK(c.f32_bytes() == 2 * 2 * 4 * 64 * 4);
  m.rt.kv_packed = false;
  CHECK_THROWS_AS(forward(m, kIds.data() + 2, 1, c), Error);
}

TEST_CASE("kv4 model: packed-cache logits are bit-identical for 1 and 2 threads") {
  LlamaModel m = random_llama(kv4_config(), 22);
  CompressOptions opt;
  enable_quantized_runtime(m.rt, opt);
  Kv4Quant q;
  REQUIRE(enable_packed_kv(m.rt, m.cfg, q));
  RestoreThreads restore;
  set_num_threads(1);
  const Tensor a = run_tokens(m, kIds, 9);
  set_num_threads(2);
  const Tensor b = run_tokens(m, kIds, 9);
  CHECK(std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

TEST_CASE("kv4 model: the integer engine turns the packed cache on; logits match simulated KV") {
  // A compressed model (rotation, OBR-GPTQ, W4A4KV4) loaded by the integer engine, run with the
  // packed cache and again with the simulated f32 cache. Here the activations are quantized to
  // 4 bits after attention: a rounding-order difference can move one o_proj input across a
  // code boundary, a jump of one step (max|x| * 0.9 / 7) in one of 192 inputs, not a rounding
  // error. The tolerance allows for a few such flips: 2e-2 of the largest logit on the worst
  // value, and 2e-3 on average; without a flip the difference is ~1e-6.
  const fs::path dir = fs::temp_directory_path() / ("obr_kv4_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "src");
  ModelConfig cfg = kv4_config();
  {
    const std::string cj = cfg.to_json();
    FILE* f = std::fopen((dir / "src" / "config.json").c_str(), "wb");
    REQUIRE(f);
    std::fwrite(cj.data(), 1, cj.size(), f);
    std::fclose(f);
  }
  CompressOptions opt;
  LlamaModel m = random_llama(cfg, 23);
  rotate_model(m, opt.rotation);
  Rng r(3);
  std::vector<int32_t> text(800);
  for (auto& t : text) t = int32_t(r.below(101));
  CompressReport rep = compress_model(m, calibration_windows(text, 4, 32, 3), opt);
  const std::string out = (dir / "out").string();
  save_compressed(out, m, rep, opt, (dir / "src").string(), {}, false);

  LoadedModel lm = load_any_model(out, false, Engine::Int4);
  LlamaModel& mi = *lm.model;
  REQUIRE(mi.rt.kv_packed);
  CHECK(!mi.rt.quant_kv);
  CHECK(mi.rt.kv4.group == 64);
  const Tensor packed = run_tokens(mi, kIds, 12);
  // The same engine with the simulated KV cache.
  mi.rt.kv_packed = false;
  mi.rt.quant_kv = [k = opt.kv, bits = opt.kvbits](float* x, int64_t rows, int64_t cols, int64_t head_dim) {
    KVQuantSpec s = k;
    s.bits = bits;
    fake_quant_kv(x, rows, cols, head_dim, s);
  };
  const Tensor sim = run_tokens(mi, kIds, 12);
  double mean = 0, den = 0;
  for (int64_t i = 0; i < sim.numel(); ++i) {
    mean += std::fabs(double(packed.data<float>()[i]) - sim.data<float>()[i]);
    den = std::max(den, double(std::fabs(sim.data<float>()[i])));
  }
  mean /= double(sim.numel()) * den;
  const double err = rel_err(packed, sim);
  MESSAGE("int4 engine, packed vs simulated KV: max |dlogit| / max |logit| = ", err, ", mean = ", mean);
  CHECK(err < 2e-2);
  CHECK(mean < 2e-3);
  fs::remove_all(dir);
}
