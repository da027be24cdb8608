// The compression driver: the stages in the order the data flows.
//
//   load (FP model) -> rotate (QuaRot) -> for each decoder layer, in order:
//       capture the inputs of the next group of linears on the calibration samples
//       -> H = (2/N) sum X^T X and the Wanda statistic
//       -> solve each linear of the group (mask, compensate, quantize: src/compress/solve_linear.h)
//       -> the group's compressed weights replace the FP ones before the next group is captured
//     groups: [k, v, q], [o], [up, gate], [down]  (ALGORITHM.md section 3)
//   -> push the samples through the compressed layer to get the next layer's inputs
//   -> checkpoint the layer (optional; src/compress/checkpoint.h: kill, then resume bit-identically)
//   -> save (src/compress/compressed_model.h) -> evaluate with activation/KV quantization on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/quantizer.h"
#include "compress/quarot.h"
#include "compress/solve_linear.h"
#include "model/llama.h"

namespace obr {

class Checkpoint;  // src/compress/checkpoint.h

struct CompressOptions {
  SolveOptions solve;        // method, sparsity / N:M, alpha, percdamp, weight quantizer
  bool rotate = true;        // QuaRot rotation before calibration
  RotateOptions rotation;
  int64_t nsamples = 32;     // calibration windows
  int64_t seqlen = 512;      // tokens per window
  uint64_t calib_seed = 0;   // window offsets
  bool wanda_quirk = false;  // reference's Wanda statistic (no running-mean rescale)
  int abits = 4;             // activation bits at evaluation (16 = off)
  ActQuantSpec act;
  int kvbits = 4;            // KV cache bits at evaluation (16 = off)
  KVQuantSpec kv;
};

struct LinearRecord {
  int layer = 0;
  Proj proj = Proj::Q;
  Tensor codes;   // I8 [out, in], W4 codes (pruned weights are code 0)
  Tensor scales;  // F32 [out]
  Tensor mask;    // U8 [out, in], 1 = kept
  double loss = 0, seconds = 0;
};

struct CompressReport {
  std::vector<LinearRecord> linears;
  double seconds = 0, calib_seconds = 0, solve_seconds = 0;
};

// Calibration windows: nsamples windows of seqlen tokens at offsets drawn from Rng(seed)
// uniformly in [0, ids.size() - seqlen) (the reference draws them the same way with Python's random).
std::vector<std::vector<int32_t>> calibration_windows(const std::vector<int32_t>& ids, int64_t nsamples, int64_t seqlen,
                                                      uint64_t seed);

// Compresses m in place (its projections become fake-quantized DenseLinear weights) and
// returns the codes, scales, masks and layer losses. `on_layer(layer, seconds)` after each layer.
// With a checkpoint, the run starts where it left off (checkpoint->restore) and each finished
// layer is saved (checkpoint->save_layer) before on_layer is called; the result is bit-identical
// to a run without one. The model must be rotated (or not) as for the original run.
CompressReport compress_model(LlamaModel& m, const std::vector<std::vector<int32_t>>& calib, const CompressOptions& opt,
                              const std::function<void(int, double)>& on_layer = {}, Checkpoint* checkpoint = nullptr);

// Installs the activation and KV quantizers of `opt` into the model's runtime.
void enable_quantized_runtime(Runtime& rt, const CompressOptions& opt);

}  // namespace obr
