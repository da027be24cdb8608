// One entry point for compressing one linear layer with any of the paper's methods
// (ALGORITHM.md sections 5 and 6). Every method:
//   - takes W f32 [C_out, C_in], the UNDAMPED H f32 [C_in, C_in] and the Wanda scaler
//     f32 [C_in] (may be an undefined Tensor: then scaler = diag(H) / 2, which equals the
//     correct-mean statistic since H = (2/N) sum X^T X);
//   - computes the per-row weight scales once, from the dense W (clip search per wq), and
//     quantizes with them (never recomputed), so W_hat == codes * scales[row] exactly;
//   - returns the mask it used (1 = keep) and W_hat with pruned weights = +0.
//
//   RTN             Q(W * mask); mask = magnitude when sparsity > 0 or N:M, else dense
//                   (dense RTN: quantization only). No H is used (no dead-column step).
//   GPTQ            GPTQ (gptq_quantize) on W * mask with the same magnitude-or-dense mask,
//                   the mask taken after the dead-column step.
//   WandaRTN        Q(W * wanda_mask)
//   WandaGPTQ       GPTQ with the Wanda mask (pruned weights stay 0, their error is
//                   propagated like any quantization error)
//   SparseGPTGPTQ   sparsegpt_gptq (mask chosen during the sweep)
//   OBR_RTN         obr_restore then Q(W')
//   OBR_GPTQ        obr_restore then RTN below floor(alpha*C_in), GPTQ from there
// loss = tr((W - W_hat) H (W - W_hat)^T) with the undamped H and the original W (dead
// columns have zero rows/columns in H, so they do not count), in double.
#pragma once

#include <string>
#include <vector>

#include "compress/quantizer.h"
#include "core/tensor.h"

namespace obr {

enum class Method { RTN, GPTQ, WandaRTN, WandaGPTQ, SparseGPTGPTQ, OBR_RTN, OBR_GPTQ };

// "rtn", "gptq", "wanda-rtn", "wanda-gptq", "sparsegpt-gptq", "obr-rtn", "obr-gptq";
// anything else is an obr::Error listing the valid names.
Method parse_method(const std::string& name);
const char* method_name(Method m);  // the same spellings

struct SolveOptions {
  Method method = Method::OBR_GPTQ;
  double sparsity = 0.5;       // unstructured fraction pruned per row
  int prune_n = 0, prune_m = 0;  // N:M when prune_m > 0 (then sparsity is ignored)
  double alpha = 0.5;          // OBR: columns < floor(alpha*C_in) are RTN, the rest GPTQ
  int blocksize = 128;
  double percdamp = 0.01;
  WeightQuantSpec wq;
  // OBR-GPTQ's reference column layout (ObrOptions::reference_quirks). The reference's Wanda
  // scaler quirk lives where the scaler is made (HessianAccumulator's wanda_quirk).
  bool reference_quirks = false;
};

struct SolveResult {
  Tensor W_hat;    // f32 dequantized [C_out, C_in], pruned = 0
  Tensor codes;    // I8 [C_out, C_in]
  Tensor scales;   // F32 [C_out]
  Tensor mask;     // U8 [C_out, C_in], 1 = keep
  double loss = 0.0;     // tr((W-W_hat) H (W-W_hat)^T), undamped H
  double seconds = 0.0;  // wall time of the solve (scales .. W_hat), without the loss
  double percdamp = 0.0; // damping actually used (> requested if H needed escalation; 0 for RTN)
  std::vector<std::string> warnings;  // also logged with obr::log_warn
};

SolveResult solve_linear(const Tensor& W, const Tensor& H, const Tensor& scaler, const SolveOptions& opt);

// tr((W - W_hat) H (W - W_hat)^T) = sum_r d_r^T H d_r, d = W - W_hat, in double (fixed
// 64-row panels, single-threaded DGEMM each, rows summed in order: thread-count independent).
double layer_loss(const Tensor& W, const Tensor& W_hat, const Tensor& H);

}  // namespace obr
