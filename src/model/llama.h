// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, TinyLlama, SmolLM) in FP32,
// written to be read top to bottom:
//
//   tokens [T] -> embed [T, H]
//   for each layer:  h += o_proj(attention(rope(q(norm(h))), rope(k(norm(h))), v(norm(h))))
//                    h += down(silu(gate(norm(h))) * up(norm(h)))
//   logits [T, V] = lm_head(norm(h))
//
// H = hidden_size, I = intermediate_size, V = vocab_size, nh = attention heads,
// nkv = key/value heads (GQA: each group of nh/nkv query heads shares one K/V head),
// hd = head_dim. All activations are row-major [T, features].
//
// The same code runs the compressed model: each projection is a `Linear` (dense FP32,
// fake-quantized, or packed INT4), and `Runtime` switches on QuaRot's online Hadamard
// transforms and the activation / KV-cache quantizers.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/linear.h"
#include "simd/kv4_cache.h"

namespace obr {

enum class Proj { Q, K, V, O, Gate, Up, Down };
constexpr int kNumProj = 7;
const char* proj_name(Proj p);  // "q_proj", ..., "down_proj"
const char* proj_module(Proj p);  // "self_attn" or "mlp"
// Weight shapes [out, in] of the seven projections, indexed by Proj:
// q [nh*hd, H], k/v [nkv*hd, H], o [H, nh*hd], gate/up [I, H], down [H, I].
std::array<Shape, kNumProj> proj_shapes(const ModelConfig& c);

struct DecoderLayer {
  Tensor attn_norm;  // f32 [H], input_layernorm
  Tensor mlp_norm;   // f32 [H], post_attention_layernorm
  std::array<std::unique_ptr<Linear>, kNumProj> proj;  // indexed by Proj
  Linear& operator[](Proj p) const { return *proj[size_t(p)]; }
};

// Run-time switches of the forward pass. Quantizers are plain functions set by the
// compression code (src/compress/), so the model stays free of quantizer details.
struct Runtime {
  // QuaRot online transforms (only valid on a rotated model):
  bool had_down_input = false;  // x <- x H_I before down_proj
  bool had_o_input = false;     // across-heads Hadamard before o_proj (per-head part folded into v_proj)
  bool had_qk = false;          // q, k <- q H_hd, k H_hd after RoPE (K cache quantized in this basis)
  // The transforms themselves, set by the rotation code (src/compress/quarot.*):
  // had_rows(x, rows, n): each row of x [rows, n] <- row H_n / sqrt(n);
  // had_heads(x, rows, nh, hd): across-heads transform of x [rows, nh*hd].
  std::function<void(float* x, int64_t rows, int64_t n)> had_rows;
  std::function<void(float* x, int64_t rows, int64_t nh, int64_t hd)> had_heads;
  // Activation quantizer applied in place to the input rows of every projection but lm_head.
  std::function<void(float* x, int64_t rows, int64_t cols)> quant_act;
  // KV quantizer applied in place to new K and V rows [T, nkv*hd] before they enter the cache.
  std::function<void(float* kv, int64_t rows, int64_t cols, int64_t head_dim)> quant_kv;
  // Packed KV cache (integer engine): new K and V rows are quantized straight into 4-bit codes
  // with per (token, group) scale and zero (simd/kv4_cache.h), and attention runs on the codes.
  // The dequantized values are bitwise those quant_kv would store, so only the summation order
  // of the attention dot products differs from the f32 cache. Set by enable_packed_kv; when on,
  // quant_kv is not used. kv4.group is resolved (never 0).
  bool kv_packed = false;
  simd::Kv4Quant kv4;
  // Set when the projections quantize their own inputs (the integer engine's PackedLinear).
  bool act_quant_in_linears = false;
  std::string describe() const;
};

struct LlamaModel {
  ModelConfig cfg;
  Tensor embed;       // f32 [V, H]
  Tensor final_norm;  // f32 [H]
  std::unique_ptr<Linear> lm_head;  // [V, H]
  std::vector<DecoderLayer> layers;
  Runtime rt;
  std::string source;  // where it was loaded from
};

// Loads config.json + safetensors weights (any float dtype -> f32) from a model directory.
LlamaModel load_llama(const std::string& dir);

// Switches the packed 4-bit KV cache on for a model of this shape, with the asymmetric KV
// quantizer q (q.group = 0 means head_dim). Returns false, changing nothing, where the packed
// layout cannot hold it (kv4_supported: bits 2..4, head_dim and group multiples of 16); the
// f32 cache and quant_kv then stay in force.
bool enable_packed_kv(Runtime& rt, const ModelConfig& cfg, simd::Kv4Quant q);

// K and V cache of one layer; rows [0, len) are valid. KVCache::make only records the shape:
// the first layer_forward allocates the storage in the format the model's Runtime asks for:
//   f32     K, V f32 [max_len, nkv * hd]        (FP and simulated engines)
//   packed  K4, V4 (simd/kv4_cache.h): 4-bit codes + f32 scale and zero per (token, group),
//           0.5 + 8 / group bytes per value    (integer engine, Runtime::kv_packed)
struct LayerCache {
  int64_t max_len = 0, kvdim = 0, head_dim = 0;
  Tensor K, V;
  simd::Kv4Matrix K4, V4;
  bool allocated() const { return K.defined() || !K4.empty(); }
  bool packed() const { return !K4.empty(); }
  int64_t bytes() const;  // storage allocated so far
};
struct KVCache {
  std::vector<LayerCache> layers;
  int64_t len = 0;      // tokens already in the cache
  int64_t max_len = 0;
  static KVCache make(const ModelConfig& cfg, int64_t max_len);
  int64_t bytes() const;  // storage allocated so far, all layers
  // Bytes the same cache takes in f32: 2 (K, V) * layers * max_len * nkv * hd * 4.
  int64_t f32_bytes() const;
};

// Observes the input rows of each projection (for calibration): called with the layer index,
// the projection, and x [T, in] exactly as the Linear receives it (after the online Hadamard
// for down/o, before activation quantization).
using ProjHook = std::function<void(int layer, Proj p, const float* x, int64_t T, int64_t in)>;

// Causal softmax attention of T new queries (positions pos0 .. pos0 + T - 1) against cache
// rows [0, pos0 + T): q [T, nh*hd] -> out [T, nh*hd]. Query head h reads kv head h / (nh/nkv).
// f32 cache: scores and P V by sgemm; packed cache: simd::kv4_scores and kv4_weighted_sum. The
// softmax (max, exp, double sum) is the same code for both. Heads run in parallel; every head
// is computed by one thread, so results do not depend on the thread count.
void attention(const float* q, const LayerCache& cache, int64_t T, int64_t pos0, int64_t nh, int64_t nkv, int64_t hd,
               float* out);

// One decoder layer on h [T, H] in place, positions pos0 .. pos0 + T - 1.
// Appends T rows to this layer's cache (the caller advances cache.len once per model step).
// stop_after = int(Proj::X): return as soon as the hook has seen X's input (calibration needs
// only the inputs of the group being compressed; h is then left partly updated).
void layer_forward(const LlamaModel& m, int layer_index, float* h, int64_t T, LayerCache& cache, int64_t pos0,
                   const ProjHook* hook = nullptr, int stop_after = -1);

// Embedding lookup: h [T, H].
void embed_tokens(const LlamaModel& m, const int32_t* tokens, int64_t T, float* h);

// Final norm + lm_head on h [T, H] -> logits [T, V].
void final_logits(const LlamaModel& m, const float* h, int64_t T, float* logits);

// The whole model on T new tokens: logits [T, V]; advances cache.len by T.
Tensor forward(const LlamaModel& m, const int32_t* tokens, int64_t T, KVCache& cache);

// RMSNorm of each row of x [T, n] into y: y = x / sqrt(mean(x^2) + eps) * w (w may be null = 1).
void rms_norm(const float* x, const float* w, int64_t T, int64_t n, double eps, float* y);

}  // namespace obr
