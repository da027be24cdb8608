// The FP32 forward pass: against PyTorch golden logits of the shipped models, KV-cache
// consistency, and QuaRot's computational invariance.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/parallel.h"

#include "compress/quarot.h"
#include "io/npy.h"
#include "model/llama.h"
#include "model/perplexity.h"
#include "model/synthetic.h"

using namespace obr;

static ModelConfig small_config(int heads, int kv_heads, int hidden, int inter) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = 2;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.vocab_size = 97;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  return c;
}

// max |a - b| / max |b|
static double rel_err(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, double(std::fabs(a[i] - b[i])));
    den = std::max(den, double(std::fabs(b[i])));
  }
  return num / std::max(den, 1e-30);
}

TEST_CASE("model: incremental decoding with the KV cache equals one full pass") {
  LlamaModel m = random_llama(small_config(4, 2, 128, 320), 1);
  std::vector<int32_t> ids = {1, 5, 9, 33, 2, 96, 0, 41, 7, 7, 7, 12};
  const int64_t T = int64_t(ids.size()), V = m.cfg.vocab_size;
  KVCache full = KVCache::make(m.cfg, T);
  Tensor all = forward(m, ids.data(), T, full);
  KVCache inc = KVCache::make(m.cfg, T);
  Tensor first = forward(m, ids.data(), 5, inc);
  CHECK(rel_err(first.data<float>(), all.data<float>(), 5 * V) < 1e-5);
  for (int64_t t = 5; t < T; ++t) {
    Tensor step = forward(m, ids.data() + t, 1, inc);
    INFO("position ", t);
    CHECK(rel_err(step.data<float>(), all.data<float>() + t * V, V) < 1e-5);
  }
  CHECK(inc.len == T);
  CHECK_THROWS_AS(forward(m, ids.data(), 1, inc), Error);  // cache full
}

TEST_CASE("model: QuaRot rotation leaves the FP logits unchanged") {
  // heads = 4 (across-heads Hadamard) and heads = 3 (full-width fallback); GQA in both.
  for (auto shape : {std::array<int, 4>{4, 2, 128, 320}, std::array<int, 4>{3, 1, 192, 384}}) {
    LlamaModel m = random_llama(small_config(shape[0], shape[1], shape[2], shape[3]), 2);
    std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79};
    const int64_t T = int64_t(ids.size()), V = m.cfg.vocab_size;
    KVCache c0 = KVCache::make(m.cfg, T);
    Tensor ref = forward(m, ids.data(), T, c0);
    rotate_model(m, RotateOptions{7, false});
    KVCache c1 = KVCache::make(m.cfg, T);
    Tensor rot = forward(m, ids.data(), T, c1);
    INFO("heads ", shape[0]);
    CHECK(rel_err(rot.data<float>(), ref.data<float>(), T * V) < 2e-5);
    // Without the online transforms the rotated weights compute something else: the test can fail.
    Runtime saved = m.rt;
    m.rt.had_down_input = false;
    KVCache c2 = KVCache::make(m.cfg, T);
    Tensor broken = forward(m, ids.data(), T, c2);
    CHECK(rel_err(broken.data<float>(), ref.data<float>(), T * V) > 1e-2);
    m.rt = saved;
  }
}

TEST_CASE("model: reference quirk (centred embeddings) changes an RMSNorm model's output") {
  LlamaModel m = random_llama(small_config(4, 2, 128, 320), 3);
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6};
  KVCache c0 = KVCache::make(m.cfg, 6);
  Tensor ref = forward(m, ids.data(), 6, c0);
  rotate_model(m, RotateOptions{0, true});
  KVCache c1 = KVCache::make(m.cfg, 6);
  Tensor rot = forward(m, ids.data(), 6, c1);
  CHECK(rel_err(rot.data<float>(), ref.data<float>(), 6 * m.cfg.vocab_size) > 1e-4);
}

TEST_CASE("model: shipped reference models match PyTorch logits") {
  int found = 0;
  for (std::string name : {"tiny", "small"}) {
    const std::string dir = "data/models/" + name;
    const std::string tok = "data/golden/" + name + "_tokens.npy", lg = "data/golden/" + name + "_logits.npy";
    if (!std::filesystem::exists(dir + "/config.json") || !std::filesystem::exists(lg)) {
      MESSAGE("skipped: ", dir, " or ", lg, " not present");
      continue;
    }
    ++found;
    LlamaModel m = load_llama(dir);
    Tensor ids = read_npy(tok), golden = read_npy(lg);
    REQUIRE(ids.ndim() == 2);
    const int64_t B = ids.dim(0), T = ids.dim(1), V = m.cfg.vocab_size;
    REQUIRE(golden.dim(0) == B);
    const int64_t G = golden.dim(1);  // golden may hold only the last G positions
    for (int64_t b = 0; b < B; ++b) {
      KVCache cache = KVCache::make(m.cfg, T);
      Tensor logits = forward(m, ids.data<int32_t>() + b * T, T, cache);
      double e = rel_err(logits.data<float>() + (T - G) * V, golden.data<float>() + b * G * V, G * V);
      INFO(name, " sequence ", b, " relative error ", e);
      CHECK(e < 1e-4);
    }
  }
}

TEST_CASE("model: logits are bit-identical for 1 and 2 threads") {
  LlamaModel m = random_llama(small_config(4, 2, 128, 320), 4);
  rotate_model(m, RotateOptions{1, false});
  std::vector<int32_t> ids(40);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37 + 11) % 97);
  Tensor out[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    KVCache c = KVCache::make(m.cfg, int64_t(ids.size()));
    out[threads - 1] = forward(m, ids.data(), int64_t(ids.size()), c);
  }
  set_num_threads(2);
  CHECK(std::memcmp(out[0].raw(), out[1].raw(), out[0].nbytes()) == 0);
}
