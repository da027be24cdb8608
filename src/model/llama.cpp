#include "model/llama.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/log.h"
#include "core/parallel.h"
#include "io/safetensors.h"

namespace obr {

const char* proj_name(Proj p) {
  static const char* names[kNumProj] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names[int(p)];
}

const char* proj_module(Proj p) { return int(p) <= int(Proj::O) ? "self_attn" : "mlp"; }

std::array<Shape, kNumProj> proj_shapes(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t qdim = int64_t(c.num_attention_heads) * c.head_dim, kvdim = int64_t(c.num_key_value_heads) * c.head_dim;
  return {Shape{qdim, H}, Shape{kvdim, H}, Shape{kvdim, H}, Shape{H, qdim}, Shape{I, H}, Shape{I, H}, Shape{H, I}};
}

std::string Runtime::describe() const {
  std::ostringstream os;
  os << "online Hadamard: " << (had_down_input || had_o_input || had_qk ? "on" : "off")
     << ", activation quantization: " << (act_quant_in_linears ? "int8 codes in the integer kernels" : quant_act ? "on (simulated)" : "off") << ", KV quantization: ";
  if (kv_packed)
    os << "packed " << kv4.bits << "-bit cache (group " << kv4.group << ")";
  else
    os << (quant_kv ? "on" : "off");
  return os.str();
}

bool enable_packed_kv(Runtime& rt, const ModelConfig& cfg, simd::Kv4Quant q) {
  const int64_t hd = cfg.head_dim, kvdim = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  if (q.group == 0) q.group = hd;
  if (!simd::kv4_supported(hd, kvdim, q.group, q.bits) || !(q.clip > 0.0f && q.clip <= 1.0f)) return false;
  rt.kv_packed = true;
  rt.kv4 = q;
  rt.quant_kv = nullptr;
  return true;
}

// ---------------------------------------------------------------- loading

static Tensor load_f32(const TensorStore& st, const std::string& name, const Shape& want, const std::string& where) {
  OBR_CHECK(st.has(name), "missing tensor '", name, "' in the model at ", where);
  Tensor t = st.get(name);
  OBR_CHECK(t.shape() == want, "tensor '", name, "' has shape ", shape_str(t.shape()), ", expected ", shape_str(want),
            " from config.json");
  Tensor f = t.to_f32();  // an owned copy: the file's pages need not stay resident
  st.drop_pages(name);
  const float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i)
    OBR_CHECK(std::isfinite(p[i]), "tensor '", name, "' holds a non-finite value (", p[i], ") at flat index ", i);
  return f;
}

LlamaModel load_llama(const std::string& dir) {
  LlamaModel m;
  m.cfg = ModelConfig::from_file(dir);
  m.source = dir;
  const ModelConfig& c = m.cfg;
  TensorStore st = TensorStore::open(dir);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  m.embed = load_f32(st, "model.embed_tokens.weight", {V, H}, dir);
  m.final_norm = load_f32(st, "model.norm.weight", {H}, dir);
  if (st.has("lm_head.weight")) {
    m.lm_head = std::make_unique<DenseLinear>(load_f32(st, "lm_head.weight", {V, H}, dir));
  } else {
    OBR_CHECK(c.tie_word_embeddings, "missing tensor 'lm_head.weight' and tie_word_embeddings is false in ", dir);
    m.lm_head = std::make_unique<DenseLinear>(m.embed.clone());
  }
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayer L;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.attn_norm = load_f32(st, p + "input_layernorm.weight", {H}, dir);
    L.mlp_norm = load_f32(st, p + "post_attention_layernorm.weight", {H}, dir);
    const auto shapes = proj_shapes(c);
    for (int j = 0; j < kNumProj; ++j) {
      Proj pj = Proj(j);
      std::string base = p + proj_module(pj) + "." + proj_name(pj);
      Tensor W = load_f32(st, base + ".weight", shapes[j], dir);
      Tensor b;
      if (st.has(base + ".bias")) b = load_f32(st, base + ".bias", {shapes[j][0]}, dir);
      L.proj[size_t(j)] = std::make_unique<DenseLinear>(std::move(W), std::move(b));
    }
    m.layers.push_back(std::move(L));
  }
  return m;
}

KVCache KVCache::make(const ModelConfig& cfg, int64_t max_len) {
  OBR_CHECK(max_len >= 0, "KV cache length must be >= 0, got ", max_len);
  KVCache c;
  c.max_len = max_len;
  LayerCache shape;
  shape.max_len = max_len;
  shape.head_dim = cfg.head_dim;
  shape.kvdim = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  c.layers.assign(size_t(cfg.num_hidden_layers), shape);
  return c;
}

int64_t LayerCache::bytes() const {
  return (K.defined() ? K.nbytes() : 0) + (V.defined() ? V.nbytes() : 0) + K4.bytes() + V4.bytes();
}

int64_t KVCache::bytes() const {
  int64_t b = 0;
  for (const LayerCache& l : layers) b += l.bytes();
  return b;
}

int64_t KVCache::f32_bytes() const {
  int64_t b = 0;
  for (const LayerCache& l : layers) b += 2 * l.max_len * l.kvdim * int64_t(sizeof(float));
  return b;
}

// Allocates a layer's storage on first use, in the format rt asks for; a cache already filled
// in the other format is an error (one KVCache per model).
static void ensure_storage(LayerCache& c, const Runtime& rt) {
  if (!c.allocated()) {
    if (rt.kv_packed) {
      c.K4 = simd::kv4_allocate(c.max_len, c.kvdim, c.head_dim, rt.kv4.group);
      c.V4 = simd::kv4_allocate(c.max_len, c.kvdim, c.head_dim, rt.kv4.group);
    } else {
      c.K = Tensor::zeros({c.max_len, c.kvdim});
      c.V = Tensor::zeros({c.max_len, c.kvdim});
    }
  }
  OBR_CHECK(c.packed() == rt.kv_packed, "this KV cache holds ", c.packed() ? "packed 4-bit" : "f32",
            " rows but the model's runtime asks for ", rt.kv_packed ? "packed 4-bit" : "f32", " ones");
  OBR_CHECK(!c.packed() || c.K4.group == rt.kv4.group, "this KV cache has groups of ", c.K4.group,
            " columns, the runtime's quantizer ", rt.kv4.group);
}

// ---------------------------------------------------------------- building blocks

void rms_norm(const float* x, const float* w, int64_t T, int64_t n, double eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * n;
    float* yr = y + t * n;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = float(1.0 / std::sqrt(ss / double(n) + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = w ? w[i] * (xr[i] * inv) : xr[i] * inv;
  }
}

// Rotary inverse frequencies [hd/2], as transformers computes them in float32, with
// Llama-3 / linear scaling applied.
static std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int hd = c.head_dim;
  std::vector<float> f(size_t(hd / 2));
  for (int i = 0; i < hd / 2; ++i) f[size_t(i)] = float(1.0 / std::pow(c.rope_theta, double(2 * i) / double(hd)));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    for (float& v : f) v = float(v / s.factor);
  } else if (s.type == "llama3") {
    const double old_ctx = s.original_max_position_embeddings;
    const double low_wl = old_ctx / s.low_freq_factor, high_wl = old_ctx / s.high_freq_factor;
    for (float& v : f) {
      const double wl = 2 * M_PI / v;
      if (wl > low_wl) {
        v = float(v / s.factor);
      } else if (wl >= high_wl) {
        const double smooth = (old_ctx / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = float((1 - smooth) * v / s.factor + smooth * v);
      }
    }
  }
  return f;
}

// Rotates x [T, n_heads * hd] in place for positions pos0.. (HF "rotate_half" layout:
// pairs are (i, i + hd/2) within each head).
static void apply_rope(float* x, int64_t T, int64_t n_heads, int64_t hd, int64_t pos0, const std::vector<float>& inv_freq) {
  const int64_t half = hd / 2;
  std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float ang = float(pos0 + t) * inv_freq[size_t(i)];
      cs[size_t(i)] = std::cos(ang);
      sn[size_t(i)] = std::sin(ang);
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * n_heads * hd + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[size_t(i)] - b * sn[size_t(i)];
        v[i + half] = b * cs[size_t(i)] + a * sn[size_t(i)];
      }
    }
  }
}

static inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// Runs one projection, with the activation quantizer and the calibration hook. Returns true
// when the caller asked to stop once this projection's input has been observed.
static bool run_proj(const LlamaModel& m, const DecoderLayer& L, int layer, Proj p, float* x, int64_t T, float* y,
                     const ProjHook* hook, int stop_after) {
  const Linear& lin = L[p];
  if (hook && *hook) (*hook)(layer, p, x, T, lin.in_features());
  if (int(p) == stop_after) return true;
  if (m.rt.quant_act) m.rt.quant_act(x, T, lin.in_features());
  lin.forward(x, T, y);
  return false;
}

// Causal softmax of one score row in place: s[0 .. valid) <- softmax, s[valid .. n) <- 0.
// Max, exp in float, the sum in double, one multiply by the float inverse.
static void softmax_row(float* s, int64_t valid, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, s[j]);
  double sum = 0;
  for (int64_t j = 0; j < valid; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = float(1.0 / sum);
  for (int64_t j = 0; j < valid; ++j) s[j] *= inv;
  for (int64_t j = valid; j < n; ++j) s[j] = 0.0f;
}

// f32 cache. Per query head h (kv head h / (nh/nkv)): S = q_h K^T / sqrt(hd) [T, n_keys] (one
// sgemm), causal softmax per row, out_h = P V (one sgemm).
static void attention_f32(const float* q, const LayerCache& cache, int64_t T, int64_t pos0, int64_t nh, int64_t nkv,
                          int64_t hd, float* out) {
  const int64_t group = nh / nkv, kvdim = nkv * hd, qdim = nh * hd, n_keys = pos0 + T;
  const float* K = cache.K.data<float>();
  const float* Vc = cache.V.data<float>();
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // Heads are independent outputs: one thread per head, single-threaded BLAS inside.
  parallel_for(nh, [&](int64_t h) {
    std::vector<float> S(static_cast<size_t>(T * n_keys));
    const int64_t kvh = h / group;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(n_keys), int(hd), scale, q + h * hd, int(qdim),
                K + kvh * hd, int(kvdim), 0.0f, S.data(), int(n_keys));
    for (int64_t t = 0; t < T; ++t) softmax_row(S.data() + t * n_keys, pos0 + t + 1, n_keys);  // keys 0 .. pos0 + t
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(hd), int(n_keys), 1.0f, S.data(), int(n_keys),
                Vc + kvh * hd, int(kvdim), 0.0f, out + h * hd, int(qdim));
  });
}

// Packed cache. Per (query head h, query t): s = kv4_scores(q_t,h against keys 0 .. pos0 + t),
// causal softmax, out = kv4_weighted_sum(p). Only the causal keys are visited. The (h, t) pairs
// are independent outputs; dynamic scheduling because later queries see more keys.
static void attention_kv4(const float* q, const LayerCache& cache, int64_t T, int64_t pos0, int64_t nh, int64_t nkv,
                          int64_t hd, float* out) {
  const int64_t group = nh / nkv, qdim = nh * hd;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  parallel_for_dynamic(nh * T, [&](int64_t i) {
    const int64_t h = i % nh, t = i / nh, valid = pos0 + t + 1, col0 = (h / group) * hd;
    std::vector<float> s(static_cast<size_t>(valid));
    simd::kv4_scores(cache.K4, col0, hd, q + t * qdim + h * hd, valid, scale, s.data());
    softmax_row(s.data(), valid, valid);
    simd::kv4_weighted_sum(cache.V4, col0, hd, s.data(), valid, out + t * qdim + h * hd);
  });
}

void attention(const float* q, const LayerCache& cache, int64_t T, int64_t pos0, int64_t nh, int64_t nkv, int64_t hd,
               float* out) {
  OBR_CHECK(nkv > 0 && nh % nkv == 0 && pos0 >= 0 && T >= 0 && pos0 + T <= cache.max_len && cache.allocated() &&
                nkv * hd == cache.kvdim,
            "attention: ", T, " queries at position ", pos0, " with ", nh, " heads, ", nkv, " kv heads of ", hd,
            " against a cache of ", cache.max_len, " rows x ", cache.kvdim, cache.allocated() ? "" : " (not allocated)");
  if (cache.packed())
    attention_kv4(q, cache, T, pos0, nh, nkv, hd, out);
  else
    attention_f32(q, cache, T, pos0, nh, nkv, hd, out);
}

void layer_forward(const LlamaModel& m, int li, float* h, int64_t T, LayerCache& cache, int64_t pos0,
                   const ProjHook* hook, int stop_after) {
  const ModelConfig& c = m.cfg;
  const DecoderLayer& L = m.layers[size_t(li)];
  const int64_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_attention_heads, nkv = c.num_key_value_heads,
                hd = c.head_dim, qdim = nh * hd, kvdim = nkv * hd;
  OBR_CHECK(pos0 + T <= cache.max_len, "sequence of ", pos0 + T, " tokens exceeds the KV cache (", cache.max_len,
            " rows)");
  OBR_CHECK(cache.kvdim == kvdim, "KV cache rows of ", cache.kvdim, " values, this model's are ", kvdim);
  ensure_storage(cache, m.rt);
  const std::vector<float> inv_freq = rope_inv_freq(c);  // hd/2 values, cheap next to the layer

  // ---- attention block
  std::vector<float> xn(size_t(T * H)), xin(size_t(T * H)), q(size_t(T * qdim)), k(size_t(T * kvdim)),
      v(size_t(T * kvdim)), att(size_t(T * qdim)), o(size_t(T * H));
  rms_norm(h, L.attn_norm.data<float>(), T, H, c.rms_norm_eps, xn.data());
  // q, k, v share one input; each projection gets its own copy because quant_act works in place.
  xin = xn;
  if (run_proj(m, L, li, Proj::Q, xin.data(), T, q.data(), hook, stop_after)) return;
  xin = xn;
  if (run_proj(m, L, li, Proj::K, xin.data(), T, k.data(), hook, stop_after)) return;
  xin = xn;
  if (run_proj(m, L, li, Proj::V, xin.data(), T, v.data(), hook, stop_after)) return;
  apply_rope(q.data(), T, nh, hd, pos0, inv_freq);
  apply_rope(k.data(), T, nkv, hd, pos0, inv_freq);
  if (m.rt.had_qk) {
    m.rt.had_rows(q.data(), T * nh, hd);
    m.rt.had_rows(k.data(), T * nkv, hd);
  }
  if (cache.packed()) {  // quantized straight into 4-bit codes (the values quant_kv would store)
    simd::kv4_write_rows(cache.K4, pos0, k.data(), T, m.rt.kv4);
    simd::kv4_write_rows(cache.V4, pos0, v.data(), T, m.rt.kv4);
  } else {
    if (m.rt.quant_kv) {
      m.rt.quant_kv(k.data(), T, kvdim, hd);
      m.rt.quant_kv(v.data(), T, kvdim, hd);
    }
    std::copy(k.begin(), k.end(), cache.K.data<float>() + pos0 * kvdim);
    std::copy(v.begin(), v.end(), cache.V.data<float>() + pos0 * kvdim);
  }
  attention(q.data(), cache, T, pos0, nh, nkv, hd, att.data());
  if (m.rt.had_o_input) m.rt.had_heads(att.data(), T, nh, hd);
  if (run_proj(m, L, li, Proj::O, att.data(), T, o.data(), hook, stop_after)) return;
  for (int64_t i = 0; i < T * H; ++i) h[i] += o[size_t(i)];

  // ---- MLP block
  std::vector<float> g(size_t(T * I)), u(size_t(T * I));
  rms_norm(h, L.mlp_norm.data<float>(), T, H, c.rms_norm_eps, xn.data());
  xin = xn;
  if (run_proj(m, L, li, Proj::Gate, xin.data(), T, g.data(), hook, stop_after)) return;
  xin = xn;
  if (run_proj(m, L, li, Proj::Up, xin.data(), T, u.data(), hook, stop_after)) return;
  for (int64_t i = 0; i < T * I; ++i) g[size_t(i)] = silu(g[size_t(i)]) * u[size_t(i)];
  if (m.rt.had_down_input) m.rt.had_rows(g.data(), T, I);
  if (run_proj(m, L, li, Proj::Down, g.data(), T, o.data(), hook, stop_after)) return;
  for (int64_t i = 0; i < T * H; ++i) h[i] += o[size_t(i)];
}

void embed_tokens(const LlamaModel& m, const int32_t* tokens, int64_t T, float* h) {
  const int64_t H = m.cfg.hidden_size, V = m.cfg.vocab_size;
  const float* E = m.embed.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    OBR_CHECK(tokens[t] >= 0 && tokens[t] < V, "token id ", tokens[t], " at position ", t, " is outside the vocabulary [0, ",
              V, ")");
    std::copy(E + int64_t(tokens[t]) * H, E + int64_t(tokens[t] + 1) * H, h + t * H);
  }
}

void final_logits(const LlamaModel& m, const float* h, int64_t T, float* logits) {
  const int64_t H = m.cfg.hidden_size;
  std::vector<float> xn(size_t(T * H));
  rms_norm(h, m.final_norm.data<float>(), T, H, m.cfg.rms_norm_eps, xn.data());
  m.lm_head->forward(xn.data(), T, logits);  // lm_head input stays in full precision
}

Tensor forward(const LlamaModel& m, const int32_t* tokens, int64_t T, KVCache& cache) {
  const int64_t H = m.cfg.hidden_size;
  OBR_CHECK(cache.len + T <= cache.max_len, "KV cache holds ", cache.max_len, " tokens; ", cache.len, " + ", T,
            " do not fit");
  std::vector<float> h(size_t(T * H));
  embed_tokens(m, tokens, T, h.data());
  for (int l = 0; l < int(m.layers.size()); ++l) layer_forward(m, l, h.data(), T, cache.layers[size_t(l)], cache.len);
  Tensor logits = Tensor::zeros({T, m.cfg.vocab_size});
  final_logits(m, h.data(), T, logits.data<float>());
  cache.len += T;
  return logits;
}

}  // namespace obr
