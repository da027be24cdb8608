// SparseGPT + GPTQ in one sweep: the reference's baseline_with_sparsegpt_gptq_obs
// (ALGORITHM.md section 6). Same sweep as gptq.h, but the mask is chosen during it from the
// current (already error-compensated) weights:
//
//   H: prepare_hessian(H, &W, percdamp, first retry 0.1): dead columns, damping; if the
//      damped H is not positive definite, retry with percdamp 0.1 (the reference's retry,
//      with a warning), then x10 steps.
//   Hinv = gptq_inverse_factor(H); blocks [i1, i2) of `blocksize` columns from column 0.
//   Unstructured, per block, over ALL rows at once (the block is [C_out, i2 - i1]):
//      tmp = W1^2 / diag(Hinv)[i1:i2]^2                 (float: (w*w) / (d*d))
//      thresh = the k-th smallest of tmp, k = int64_t(double(numel) * sparsity)
//      pruned = tmp <= thresh                        (ties prune more; sparsity 0 prunes
//                                                    nothing here, where the reference
//                                                    would still prune each block's minimum)
//   N:M, per row, at each column i with (i - i1) % M == 0:
//      tmp = W1[:, i:i+M]^2 / diag(Hinv)[i:i+M]^2 from the current W1; prune the N smallest
//      (stable: the lower index first on ties). blocksize and C_in must be multiples of M.
//   per column i: q = Q(w with pruned set to 0); err = (w - q) / Hinv_ii; same updates as GPTQ.
// Because the unstructured threshold couples all rows of a block, the rows of one block are
// swept in parallel (fixed 64-row panels) with a barrier between blocks; bit-identical for
// any thread count.
#pragma once

#include <string>
#include <vector>

#include "compress/masks.h"
#include "core/tensor.h"

namespace obr {

struct SparseGptOptions {
  MaskSpec mask;          // sparsity or N:M
  int bits = 4;
  int blocksize = 128;
  double percdamp = 0.01;
};

struct SparseGptOutput {
  Tensor W_hat;   // f32 [C_out, C_in], pruned = +0
  Tensor codes;   // I8 [C_out, C_in]
  Tensor mask;    // U8 [C_out, C_in], 1 = keep
  double percdamp = 0.0;
  std::vector<std::string> warnings;
};

// W f32 [C_out, C_in]; H the UNDAMPED f32 [C_in, C_in]; scales f32 [C_out] (from the dense W).
SparseGptOutput sparsegpt_gptq(const Tensor& W, const Tensor& H, const Tensor& scales, const SparseGptOptions& opt);

}  // namespace obr
