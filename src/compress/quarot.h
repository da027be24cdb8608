// QuaRot rotation of a full-precision Llama model (ALGORITHM.md section 1), done once
// before calibration. After `rotate_model` the model computes the same function (to fp32
// round-off) but its residual stream, down_proj input, o_proj input and K cache live in
// rotated bases where outliers are spread out, so 4-bit quantization works:
//
//   1. fuse RMSNorm weights into the next linears' input columns (norms become weightless)
//   2. residual stream: Q = random Hadamard (hidden), embed/lm_head/q/k/v/up/gate: W <- W Q,
//      o_proj/down_proj: W <- Q^T W
//   3. down_proj input: exact Hadamard H_I folded into W_down, applied online to x
//   4. v_proj output: per-head H_hd folded into W_v; o_proj input: per-head H_hd plus an
//      online Hadamard across heads, both folded into W_o
//   5. q and k after RoPE: online H_hd (scores unchanged; the K cache is quantized there)
#pragma once

#include <cstdint>
#include <string>

#include "model/llama.h"

namespace obr {

struct RotateOptions {
  uint64_t seed = 0;            // random signs of the residual Hadamard Q
  bool center_embeddings = false;  // reference quirk: E -= mean(E, dim=-1) (changes an RMSNorm model's output)
};

// Fuses the RMSNorm weights into the following linears; norms become all ones.
void fuse_norms(LlamaModel& m);

// Full rotation (fuse_norms included); switches on the online transforms in m.rt.
// Every projection must be a DenseLinear (the full-precision model).
void rotate_model(LlamaModel& m, const RotateOptions& opt);

// The same rotation in pieces, for a model processed one layer at a time (what rotate_model
// does, in this order): rotate_embeddings on the embeddings, final norm and lm_head, then
// rotate_layer on each decoder layer (its norms fused, its weights rotated). Neither touches m.rt.
void rotate_embeddings(LlamaModel& m, const RotateOptions& opt);
void rotate_layer(DecoderLayer& L, const ModelConfig& c, const RotateOptions& opt);

// Sets the online Hadamard transforms of a rotated model's runtime (after loading one).
void enable_online_hadamards(Runtime& rt);

}  // namespace obr
