#include "compress/quarot.h"

#include <vector>

#include "compress/hadamard.h"
#include "core/log.h"

namespace obr {

static DenseLinear& dense(Linear& l, const char* what) {
  auto* d = dynamic_cast<DenseLinear*>(&l);
  OBR_CHECK(d != nullptr, "rotation needs the full-precision model, but ", what, " is a ", l.kind(), " layer");
  return *d;
}

// W [rows, n]: W[:, j] *= g[j].
static void scale_columns(Tensor& W, const Tensor& g) {
  const int64_t rows = W.dim(0), n = W.dim(1);
  float* w = W.data<float>();
  const float* s = g.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) w[r * n + j] = float(double(w[r * n + j]) * double(s[j]));
}

static void set_ones(Tensor& g) {
  float* p = g.data<float>();
  for (int64_t i = 0; i < g.numel(); ++i) p[i] = 1.0f;
}

void fuse_norms(LlamaModel& m) {
  for (size_t l = 0; l < m.layers.size(); ++l) {
    DecoderLayer& L = m.layers[l];
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) scale_columns(dense(L[p], proj_name(p)).weight(), L.attn_norm);
    for (Proj p : {Proj::Gate, Proj::Up}) scale_columns(dense(L[p], proj_name(p)).weight(), L.mlp_norm);
    set_ones(L.attn_norm);
    set_ones(L.mlp_norm);
  }
  scale_columns(dense(*m.lm_head, "lm_head").weight(), m.final_norm);
  set_ones(m.final_norm);
}

// Transposed copy of a 2-D f32 tensor.
static Tensor transposed(const Tensor& W) {
  const int64_t r = W.dim(0), c = W.dim(1);
  Tensor T = Tensor::zeros({c, r});
  const float* a = W.data<float>();
  float* b = T.data<float>();
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) b[j * r + i] = a[i * c + j];
  return T;
}

// W <- W Q (each row times Q), Q the seeded random Hadamard of size n = W.dim(1).
static void rotate_input_side(Tensor& W, uint64_t seed) {
  random_hadamard_transform_rows(W.data<float>(), W.dim(0), W.dim(1), seed);
}

// W <- Q^T W (each column times Q^T), i.e. W^T <- W^T Q; bias b <- b Q.
static void rotate_output_side(DenseLinear& lin, uint64_t seed) {
  Tensor Wt = transposed(lin.weight());
  random_hadamard_transform_rows(Wt.data<float>(), Wt.dim(0), Wt.dim(1), seed);
  lin.weight() = transposed(Wt);
  OBR_CHECK(!lin.has_bias(), "rotation of an output-side bias (o_proj / down_proj bias) is not supported");
}

// The online transform A of the o_proj input [rows, nh*hd]. QuaRot uses a Hadamard across
// heads (H_nh applied to each within-head position), which with the per-head H_hd folded into
// v_proj makes H_nh (x) H_hd. When nh has no Hadamard (e.g. 3 or 6 heads), a full Hadamard of
// size nh*hd is used instead: also orthogonal, also spreads outliers, one O(n log n) pass.
static void o_input_transform(float* x, int64_t rows, int64_t nh, int64_t hd) {
  if (hadamard_supported(nh))
    hadamard_across_heads(x, rows, nh, hd);
  else
    hadamard_transform_rows(x, rows, nh * hd);
}

void enable_online_hadamards(Runtime& rt) {
  rt.had_down_input = rt.had_o_input = rt.had_qk = true;
  rt.had_rows = [](float* x, int64_t rows, int64_t n) { hadamard_transform_rows(x, rows, n); };
  rt.had_heads = o_input_transform;
}

// Every size the rotation of a model with config c needs must have a Hadamard: checked before
// any weight is touched.
static void check_rotation_sizes(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_attention_heads, hd = c.head_dim;
  for (int64_t n : {H, I, hd, hadamard_supported(nh) ? nh : nh * hd})
    hadamard_base_order(n);
}

void rotate_embeddings(LlamaModel& m, const RotateOptions& opt) {
  const ModelConfig& c = m.cfg;
  const int64_t H = c.hidden_size;
  check_rotation_sizes(c);
  if (opt.center_embeddings) {
    float* e = m.embed.data<float>();
    for (int64_t v = 0; v < c.vocab_size; ++v) {
      double mean = 0;
      for (int64_t j = 0; j < H; ++j) mean += e[v * H + j];
      mean /= double(H);
      for (int64_t j = 0; j < H; ++j) e[v * H + j] = float(e[v * H + j] - mean);
    }
  }
  // 1. the final norm into lm_head; 2. the residual stream: E <- E Q, W_head <- W_head Q
  scale_columns(dense(*m.lm_head, "lm_head").weight(), m.final_norm);
  set_ones(m.final_norm);
  rotate_input_side(m.embed, opt.seed);
  rotate_input_side(dense(*m.lm_head, "lm_head").weight(), opt.seed);
}

void rotate_layer(DecoderLayer& L, const ModelConfig& c, const RotateOptions& opt) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, nh = c.num_attention_heads, nkv = c.num_key_value_heads,
                hd = c.head_dim;
  check_rotation_sizes(c);
  // 1. this layer's norms into the linears that read them
  for (Proj p : {Proj::Q, Proj::K, Proj::V}) scale_columns(dense(L[p], proj_name(p)).weight(), L.attn_norm);
  for (Proj p : {Proj::Gate, Proj::Up}) scale_columns(dense(L[p], proj_name(p)).weight(), L.mlp_norm);
  set_ones(L.attn_norm);
  set_ones(L.mlp_norm);
  // 2. the residual stream: W <- W Q on the input side, W <- Q^T W on the output side
  for (Proj p : {Proj::Q, Proj::K, Proj::V, Proj::Gate, Proj::Up}) rotate_input_side(dense(L[p], proj_name(p)).weight(), opt.seed);
  rotate_output_side(dense(L[Proj::O], "o_proj"), opt.seed);
  rotate_output_side(dense(L[Proj::Down], "down_proj"), opt.seed);

  // 3. down_proj input: W_down <- W_down H_I
  Tensor& Wd = dense(L[Proj::Down], "down_proj").weight();
  hadamard_transform_rows(Wd.data<float>(), Wd.dim(0), I);

  // 4. v_proj output per head: W_v <- B^T W_v with B = blockdiag(H_hd), done as W_v^T <- W_v^T B.
  DenseLinear& v = dense(L[Proj::V], "v_proj");
  Tensor Wvt = transposed(v.weight());  // [H, nkv*hd]
  hadamard_transform_rows(Wvt.data<float>(), H * nkv, hd);
  v.weight() = transposed(Wvt);
  if (v.has_bias()) {
    Tensor b = v.bias().clone();
    hadamard_transform_rows(b.data<float>(), nkv, hd);
    v = DenseLinear(v.weight(), b);
  }
  //    o_proj input: W_o <- W_o B A, A = the online across-heads transform.
  Tensor& Wo = dense(L[Proj::O], "o_proj").weight();  // [H, nh*hd]
  hadamard_transform_rows(Wo.data<float>(), H * nh, hd);
  o_input_transform(Wo.data<float>(), H, nh, hd);
}

void rotate_model(LlamaModel& m, const RotateOptions& opt) {
  const ModelConfig& c = m.cfg;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  check_rotation_sizes(c);
  rotate_embeddings(m, opt);
  for (DecoderLayer& L : m.layers) rotate_layer(L, c, opt);
  enable_online_hadamards(m.rt);
  log_info("rotate: QuaRot rotation done (seed ", opt.seed, ", hidden ", H, " = ", hadamard_base_order(H), " x 2^m, intermediate ",
           I, " = ", hadamard_base_order(I), " x 2^m", opt.center_embeddings ? ", embeddings centred (reference quirk)" : "",
           ")");
}

}  // namespace obr
