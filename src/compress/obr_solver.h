// Optimal Brain Restoration for one linear layer (ALGORITHM.md section 5; reference:
// csguoh/OBR QuaRot/obr_utils.py, OBR_Wrapper.optimal_brain_restoration).
//
// Given W [C_out, C_in] (f32), the UNDAMPED H [C_in, C_in] and the Wanda scaler [C_in]:
//   1. scales = weight_scales(W) from the dense W (clip search); never recomputed.
//   2-3. prepare_hessian: dead columns (H_jj = 1, W[:, j] = 0), H += percdamp*mean(diag)*I
//        (escalated x10 with a warning if H is not positive definite). "H" below is this.
//   4. mask = Wanda(W, scaler) (unstructured or N:M); Wbar = W * mask.
//   5. per row c (independent; OpenMP, dynamic schedule), in double:
//        I = kept columns, Z = pruned ones (row skipped if either is empty);
//        s = floor(alpha * C_in); A = {j in I : j < s} ("evicted", RTN later),
//                                 B = {j in I : j >= s} ("retained", GPTQ later);
//        delta = H_II^-1 (H_IZ W[c, Z])                        (pruning compensation)
//        w'    = Wbar[c, I] + float(delta)                     (float)
//        e_A   = w'_A - Q_c(w'_A)                              (float)
//        delta_B += H_BB^-1 (H_BA e_A)                         (quantization compensation)
//        W'[c, I] = Wbar[c, I] + float(delta)
//      Both updates are "+": delta minimises the quadratic loss with W[c, Z] forced to 0,
//      i.e. H_II (w'_I - W[c,I]) = H_IZ W[c,Z]; the second makes the gradient on B vanish
//      with A fixed at Q(w'_A): H_BB (w''_B - w'_B) = H_BA (w'_A - Q(w'_A)).
//   6-7. final quantization of W' (obr_quantize).
//
// Why double and Cholesky per row: H_II is a principal submatrix of H of size ~C_in/2 whose
// condition number is that of real calibration Hessians (1e4..1e8 after 1% damping); in
// float the solve would lose most of its digits. Cost: one dpotrf of |I| per row.
// The shared factorisation (5.8): the kept set is ordered [B, A], so the leading |B| x |B|
// block of the Cholesky factor L of H_[BA][BA] is chol(H_BB); the second solve reuses it
// (dpotrs on the leading block) and costs O(|B|^2), not another factorisation. H_BA is read
// from the strict upper triangle, which dpotrf('L') leaves untouched.
// Rows whose W[c, Z] and e_A are both zero (e.g. all-zero rows) need no solve: delta = 0.
// If a row's H_II fails to factorise (not expected once H itself factorises, since the
// smallest eigenvalue of a principal submatrix is >= that of H), that row's diagonal
// damping is escalated x10 until it does, and a warning counts such rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace obr {

struct ObrOptions {
  double alpha = 0.5;          // s = floor(alpha * C_in) splits the kept columns into A | B
  int blocksize = 128;         // GPTQ block size of the final quantization
  int bits = 4;
  bool gptq_final = true;      // true: OBR-GPTQ, false: OBR-RTN
  // Reproduce the reference's final quantization for OBR-GPTQ: its GPTQ part runs only on
  // the 128-aligned blocks whose start is >= alpha*C_in, so columns between alpha*C_in and
  // the next multiple of 128 stay 0 (never quantized), and it returns columns from a
  // hard-coded floor(0.5*C_in); with alpha*C_in and 0.5*C_in flooring differently the
  // reference fails on a shape mismatch, and so does this (an obr::Error).
  bool reference_quirks = false;
};

// Step 5-6: W' = Wbar + Delta (f32 [C_out, C_in]).
//   W      dead columns already zeroed (prepare_hessian), f32 [C_out, C_in]
//   mask   U8 [C_out, C_in]; H the damped f32 H; scales f32 [C_out]
//   damp   the value that was added to H's diagonal (base of the per-row escalation)
//   quant_compensation = false stops after the pruning compensation (w' itself; for tests)
Tensor obr_restore(const Tensor& W, const Tensor& mask, const Tensor& H, const Tensor& scales, int bits, double alpha,
                   float damp, bool quant_compensation = true, std::vector<std::string>* warnings = nullptr);

// Step 7, on W' = obr_restore(...):
//   OBR-RTN:  W_hat = Q(W').
//   OBR-GPTQ: columns < s = floor(alpha*C_in): Q(W') (RTN); columns >= s: gptq_sweep of W'
//             with Hinv = gptq_inverse_factor(H) and the mask, its first block starting at s
//             (any alpha), or the reference's block layout under reference_quirks.
// Writes W_hat (f32) and codes (I8) of W's shape (allocated here).
void obr_quantize(const Tensor& W_prime, const Tensor& mask, const Tensor& H, const Tensor& scales,
                  const ObrOptions& opt, Tensor& W_hat, Tensor& codes);

}  // namespace obr
