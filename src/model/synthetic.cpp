#include "model/synthetic.h"

#include <cmath>

#include "core/rng.h"

namespace obr {

static Tensor normal(const Shape& shape, double std, Rng& rng) {
  Tensor t = Tensor::zeros(shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(rng.normal() * std);
  return t;
}

// Norm weights around 1 with a log-normal spread and every 37th channel an outlier (x8).
static Tensor norm_weight(int64_t n, Rng& rng) {
  Tensor t = Tensor::zeros({n});
  float* p = t.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = float(std::exp(0.5 * rng.normal()) * (i % 37 == 5 ? 8.0 : 1.0));
  return t;
}

LlamaModel random_llama(const ModelConfig& cfg, uint64_t seed) {
  LlamaModel m;
  m.cfg = cfg;
  m.source = "random";
  Rng rng(seed);
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size;
  m.embed = normal({V, H}, 1.0, rng);
  m.final_norm = norm_weight(H, rng);
  m.lm_head = std::make_unique<DenseLinear>(normal({V, H}, 0.02, rng));
  const auto shapes = proj_shapes(cfg);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    DecoderLayer L;
    L.attn_norm = norm_weight(H, rng);
    L.mlp_norm = norm_weight(H, rng);
    for (int j = 0; j < kNumProj; ++j) {
      Tensor b;
      if (cfg.qkv_bias && j <= int(Proj::V)) b = normal({shapes[j][0]}, 0.02, rng);
      L.proj[size_t(j)] = std::make_unique<DenseLinear>(normal(shapes[j], 0.02, rng), b);
    }
    m.layers.push_back(std::move(L));
  }
  return m;
}

}  // namespace obr
