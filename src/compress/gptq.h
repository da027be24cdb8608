// GPTQ (Frantar et al. 2022) as in IST-DASLab's gptq.py and ALGORITHM.md 5.7, with a fixed
// pruning mask (pruned weights stay 0) and fixed per-row scales.
//
//   H     [C_in, C_in]  damped Hessian (prepare_hessian)
//   Hinv  = chol(chol_inverse(chol(H))), upper: H^-1 = Hinv^T Hinv   (gptq_inverse_factor)
//   for each block [i1, i2) of columns (see gptq_sweep for the block layout):
//     W1 = W[:, i1:i2]
//     for i in [i1, i2):
//       q   = Q(W1[:, i]) * mask[:, i]                (Q with row r's scale)
//       Err1[:, i] = (W1[:, i] - q) / Hinv[i, i]
//       W1[:, i:i2] -= Err1[:, i] * Hinv[i, i:i2]     (outer product)
//     W[:, i2:] -= Err1 * Hinv[i1:i2, i2:]            (one GEMM)
// Every row of W evolves independently (Hinv is shared), so the sweep runs over fixed 64-row
// panels on OpenMP threads, each panel's trailing update a single-threaded SGEMM: results
// are bit-identical for any thread count. All arithmetic on W is float32 like the
// reference; Hinv is computed in double (LAPACK dpotrf/dpotri/dpotrf) and rounded to float.
//
// Why Hinv[k:, k:] is the right factor when the sweep starts at column k > 0 (OBR-GPTQ):
// with U = Hinv and V = U^-1 (both upper), H = V V^T, so H[k:, k:] = V[k:, k:] V[k:, k:]^T
// and its inverse is U[k:, k:]^T U[k:, k:]: the trailing block of Hinv is the GPTQ factor
// of the trailing problem with the columns before k held fixed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace obr {

// Hinv upper (f32 [C, C], zero below the diagonal) with H^-1 = Hinv^T Hinv, for a positive definite
// f32 H (use prepare_hessian first; a failure here is an obr::Error naming the column).
Tensor gptq_inverse_factor(const Tensor& H);

// The GPTQ sweep over columns [first_col, C_in) of W.
//   W        f32 [C_out, C_in], not modified (the sweep works on a copy)
//   Hinv     gptq_inverse_factor(H)
//   scales   f32 [C_out], fixed (never recomputed)
//   mask     U8 [C_out, C_in] (1 = keep) or an undefined Tensor for dense
//   blocks   [first_col, min(C_in, (first_col / blocksize + 1) * blocksize)), then aligned
//            blocks of `blocksize` columns: the first (partial) block starts exactly at
//            first_col; with first_col = 0 these are the reference's blocks.
// Writes columns >= first_col of W_hat (f32 [C_out, C_in], Q values, pruned = +0) and codes
// (I8 [C_out, C_in], W_hat == code * scale[row] exactly); other columns are left as they are.
void gptq_sweep(const Tensor& W, const Tensor& Hinv, const Tensor& scales, int bits, const Tensor& mask,
                int blocksize, int64_t first_col, Tensor& W_hat, Tensor& codes);

// GPTQ of one layer from the UNDAMPED H, every column:
//   prepare_hessian(H, &W, percdamp) (dead columns: H_jj = 1, W[:, j] = 0; damping, escalated
//   x10 with a warning if H is not positive definite), Hinv = gptq_inverse_factor, then
//   gptq_sweep(W * mask, ...) from column 0. mask may be undefined (dense).
struct GptqOutput {
  Tensor W_hat;                        // f32 [C_out, C_in]
  Tensor codes;                        // I8 [C_out, C_in]
  double percdamp = 0.0;               // damping used
  std::vector<std::string> warnings;   // also logged
};
GptqOutput gptq_quantize(const Tensor& W, const Tensor& H, const Tensor& scales, int bits, const Tensor& mask,
                         int blocksize = 128, double percdamp = 0.01);

}  // namespace obr
