// `obr explain`: OBR on one real linear layer, stage by stage, with the numbers of each stage
// (docs/walkthrough.md explains the math; this computes what it shows).
//
//   stage 1  rotation      activation / weight outliers before and after QuaRot's rotation
//   stage 2  hessian       H = (2/N) sum X^T X: size, dead columns, damping, eigenvalues
//   stage 3  mask          the Wanda mask: exact sparsity, agreement with a magnitude mask
//   stage 4  prune-comp    delta = H_II^-1 H_IZ W_Z: norm, layer loss before and after
//   stage 5  quantize      per-row W4 scales (clip search), e = w' - Q(w'), loss of Q(w')
//   stage 6  partition     A | B split at floor(alpha C_in), second compensation on B
//   stage 7  final         OBR-GPTQ (RTN on A, GPTQ on B) and OBR-RTN: the final losses
//   stage 8  compare       RTN, GPTQ, Wanda+RTN, Wanda+GPTQ, SparseGPT+GPTQ, OBR-RTN, OBR-GPTQ
//                          through solve_linear on the same H (OBR-GPTQ must equal stage 7)
//   optional all_layers    every method on every linear of the model (per-linear losses)
//
// Every stage calls the project's own functions in the order solve_linear does (so the
// numbers are the ones `obr compress` and `obr layer` get), and records which source file
// and function did the work. The calibration inputs of the chosen layer are captured with
// the layers before it in full precision (in `obr compress` they would already be
// compressed; for layer 0's first group the two agree exactly).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/solve_linear.h"
#include "core/tensor.h"
#include "model/llama.h"

namespace obr {

constexpr int kExplainStages = 8;

struct ExplainOptions {
  // Either a full-precision model directory ...
  std::string model;
  std::string calib = "data/text/calib.txt";
  int64_t calib_chars = 0;   // tokenize only the first N characters of the text (0: all)
  int64_t nsamples = 16;     // calibration windows
  int64_t seqlen = 256;      // tokens per window
  uint64_t calib_seed = 0;
  int layer = 1;
  Proj proj = Proj::Down;
  bool rotate = true;
  uint64_t rotation_seed = 0;
  // ... or one layer from .npy files: W [C_out, C_in], X [T, C_in] or [S, T, C_in].
  std::string weight_npy, inputs_npy;

  SolveOptions solve;         // sparsity or N:M, alpha, percdamp, blocksize, weight quantizer
  int stop_after = kExplainStages;  // last stage to run (1..8)
  bool all_layers = false;    // also run every method on every linear (model input only)
};

// Arrays behind the figures (not part of the JSON).
struct ExplainData {
  int64_t C_out = 0, C_in = 0;
  // stage 1: per input channel max |x| and RMS; a sample of activation values; weights
  std::vector<float> chan_max_before, chan_max_after, chan_rms_before, chan_rms_after;
  std::vector<float> x_before, x_after, w_before, w_after;
  bool have_rotation = false;
  // stages 3-7 (f32 [C_out, C_in]): the mask and the weight at each step
  Tensor mask, W, W_bar, W_prime, W_2, W_hat;
  // all_layers: one entry per (layer, linear, method)
  struct LayerLoss {
    int layer;
    std::string linear, method;
    double loss, relative;
  };
  std::vector<LayerLoss> layer_losses;
};

struct ExplainResult {
  nlohmann::json json;  // {"input": ..., "options": ..., "stages": [...], "all_layers": [...]}
  ExplainData data;
};

ExplainResult run_explain(const ExplainOptions& opt);

// The narration printed by `obr explain` (plain text, one block per stage).
std::string narrate_explain(const ExplainResult& r);

// Writes the figures that the stages run so far allow into dir (created if missing);
// returns the paths written.
std::vector<std::string> write_explain_plots(const ExplainResult& r, const std::string& dir);

// The quality-vs-compression chart of bench/results/quality-*.csv (columns model, method,
// sparsity, rotation, perplexity, ...): one panel per file. Returns false (and writes
// nothing) when no file could be read.
bool write_quality_chart(const std::vector<std::string>& csv_files, const std::string& path);

// "q_proj" or "q" (also "k", "v", "o", "gate", "up", "down") -> Proj; an obr::Error otherwise.
Proj parse_proj(const std::string& name);

}  // namespace obr
