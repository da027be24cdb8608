// Pruning masks (ALGORITHM.md section 4). A mask is U8 [C_out, C_in], 1 = keep, 0 = pruned.
//
// Metrics (f32, computed in float like the reference):
//   Wanda:     M_ij = |W_ij| * sqrt(scaler_j)     (sqrt in float)
//   magnitude: M_ij = |W_ij|
// Selection from a metric, per row (rows are independent):
//   unstructured: prune the k = floor(C_in * sparsity) smallest (k computed as
//                 int64_t(double(C_in) * sparsity), like Python's int()); ties are broken
//                 by a stable ascending sort, so the lower column index is pruned first.
//   N:M (prune_m > 0): in each group of M consecutive columns [g*M, g*M + M) prune the N
//                 smallest ("2:4" = N 2, M 4: two of every four are zero); ties prune the
//                 lower index first. C_in must be a multiple of M; sparsity is ignored.
// The reference picks N:M with torch.topk, whose order among equal values is unspecified;
// ours is the stable one above.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace obr {

struct MaskSpec {
  double sparsity = 0.5;  // unstructured fraction pruned per row, in [0, 1)
  int prune_n = 0;        // N:M when prune_m > 0
  int prune_m = 0;
  bool nm() const { return prune_m > 0; }
};

// Checks the spec against C_in (0 <= sparsity < 1; 0 < N < M; C_in % M == 0), naming values.
void check_mask_spec(const MaskSpec& spec, int64_t C_in);

Tensor wanda_metric(const Tensor& W, const Tensor& scaler);  // f32 [C_out, C_in]
Tensor magnitude_metric(const Tensor& W);                    // f32 [C_out, C_in]

// U8 [C_out, C_in] mask from a metric, as described above.
Tensor mask_from_metric(const Tensor& metric, const MaskSpec& spec);

inline Tensor wanda_mask(const Tensor& W, const Tensor& scaler, const MaskSpec& spec) {
  return mask_from_metric(wanda_metric(W, scaler), spec);
}
inline Tensor magnitude_mask(const Tensor& W, const MaskSpec& spec) {
  return mask_from_metric(magnitude_metric(W), spec);
}

// An all-ones mask (dense).
Tensor dense_mask(int64_t rows, int64_t cols);

// Fraction of zeros in a mask.
double mask_sparsity(const Tensor& mask);

// True if every group of M consecutive columns of every row has at least N zeros.
bool mask_is_nm(const Tensor& mask, int prune_n, int prune_m);

// W * mask (f32 [C_out, C_in]).
Tensor apply_mask(const Tensor& W, const Tensor& mask);

}  // namespace obr
