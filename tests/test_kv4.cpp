// Tests of the packed 4-bit KV cache (simd/kv4_cache.h) and attention over it.
//
//   * attention: the packed path and the f32 path on the same (bitwise equal) K and V agree
//     within a bound derived from the summation-order error;
//   * model: logits with the packed cache vs the simulated f32 cache, on a random model and on
//     a compressed model run by the integer engine; thread-count independence.
// Layout, quantizer and kernels: test_kv4_kernels.cpp.
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
#include "test_kv4_util.h"

using namespace obr;
using namespace obr::simd;
using namespace obr::testing;
namespace fs = std::filesystem;

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
