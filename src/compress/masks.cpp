#include "compress/masks.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/parallel.h"

namespace obr {

static void check_w(const Tensor& W, const char* who) {
  OBR_CHECK(W.defined() && W.ndim() == 2 && W.dtype() == DType::F32 && W.is_contiguous(), who,
            ": W must be a contiguous 2-D F32 tensor, got ", W.defined() ? shape_str(W.shape()) : "nothing", " ",
            dtype_name(W.dtype()));
}

static void check_mask(const Tensor& mask, const char* who) {
  OBR_CHECK(mask.defined() && mask.ndim() == 2 && mask.dtype() == DType::U8 && mask.is_contiguous(), who,
            ": mask must be a contiguous 2-D U8 tensor, got ", mask.defined() ? shape_str(mask.shape()) : "nothing", " ",
            dtype_name(mask.dtype()));
}

void check_mask_spec(const MaskSpec& spec, int64_t C_in) {
  if (spec.nm()) {
    OBR_CHECK(spec.prune_n > 0 && spec.prune_n < spec.prune_m, "N:M sparsity needs 0 < N < M, got ", spec.prune_n,
              ":", spec.prune_m);
    OBR_CHECK(C_in % spec.prune_m == 0, "N:M sparsity ", spec.prune_n, ":", spec.prune_m, " needs C_in (", C_in,
              ") to be a multiple of M = ", spec.prune_m);
  } else {
    OBR_CHECK(spec.prune_n == 0, "prune_n = ", spec.prune_n, " given without prune_m (N:M needs both)");
    OBR_CHECK(spec.sparsity >= 0.0 && spec.sparsity < 1.0, "sparsity must be in [0, 1), got ", spec.sparsity);
  }
}

Tensor wanda_metric(const Tensor& W, const Tensor& scaler) {
  check_w(W, "wanda_metric");
  const int64_t rows = W.dim(0), cols = W.dim(1);
  OBR_CHECK(scaler.defined() && scaler.dtype() == DType::F32 && scaler.numel() == cols,
            "wanda_metric: scaler must be F32 with C_in = ", cols, " values, got ",
            scaler.defined() ? shape_str(scaler.shape()) : "nothing");
  Tensor M = Tensor::zeros({rows, cols});
  const float* w = W.data<float>();
  const float* s = scaler.data<float>();
  std::vector<float> act(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    OBR_CHECK(s[j] >= 0.0f, "wanda_metric: scaler[", j, "] = ", s[j], " is negative");
    act[size_t(j)] = std::sqrt(s[j]);
  }
  float* m = M.data<float>();
  parallel_for(rows, [&](int64_t r) {
    for (int64_t j = 0; j < cols; ++j) m[r * cols + j] = std::fabs(w[r * cols + j]) * act[size_t(j)];
  });
  return M;
}

Tensor magnitude_metric(const Tensor& W) {
  check_w(W, "magnitude_metric");
  Tensor M = W.clone();
  float* m = M.data<float>();
  for (int64_t i = 0; i < M.numel(); ++i) m[i] = std::fabs(m[i]);
  return M;
}

Tensor mask_from_metric(const Tensor& metric, const MaskSpec& spec) {
  check_w(metric, "mask_from_metric");
  const int64_t rows = metric.dim(0), cols = metric.dim(1);
  check_mask_spec(spec, cols);
  Tensor mask = Tensor::zeros({rows, cols}, DType::U8);
  const float* m = metric.data<float>();
  uint8_t* k = mask.data<uint8_t>();
  std::fill(k, k + rows * cols, uint8_t(1));
  if (spec.nm()) {
    const int M = spec.prune_m, N = spec.prune_n;
    parallel_for(rows, [&](int64_t r) {
      std::vector<int> idx(static_cast<size_t>(M));
      for (int64_t g = 0; g < cols; g += M) {
        const float* v = m + r * cols + g;
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] < v[b]; });
        for (int i = 0; i < N; ++i) k[r * cols + g + idx[size_t(i)]] = 0;
      }
    });
  } else {
    const int64_t prune = int64_t(double(cols) * spec.sparsity);
    if (prune == 0) return mask;
    parallel_for(rows, [&](int64_t r) {
      std::vector<int64_t> idx(static_cast<size_t>(cols));
      std::iota(idx.begin(), idx.end(), int64_t(0));
      const float* v = m + r * cols;
      std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
      for (int64_t i = 0; i < prune; ++i) k[r * cols + idx[size_t(i)]] = 0;
    });
  }
  return mask;
}

Tensor dense_mask(int64_t rows, int64_t cols) {
  Tensor mask = Tensor::zeros({rows, cols}, DType::U8);
  uint8_t* k = mask.data<uint8_t>();
  std::fill(k, k + rows * cols, uint8_t(1));
  return mask;
}

double mask_sparsity(const Tensor& mask) {
  check_mask(mask, "mask_sparsity");
  const uint8_t* k = mask.data<uint8_t>();
  int64_t zeros = 0;
  for (int64_t i = 0; i < mask.numel(); ++i) zeros += k[i] == 0;
  return mask.numel() ? double(zeros) / double(mask.numel()) : 0.0;
}

bool mask_is_nm(const Tensor& mask, int prune_n, int prune_m) {
  check_mask(mask, "mask_is_nm");
  const int64_t rows = mask.dim(0), cols = mask.dim(1);
  if (prune_m <= 0 || cols % prune_m != 0) return false;
  const uint8_t* k = mask.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols; g += prune_m) {
      int zeros = 0;
      for (int i = 0; i < prune_m; ++i) zeros += k[r * cols + g + i] == 0;
      if (zeros < prune_n) return false;
    }
  return true;
}

Tensor apply_mask(const Tensor& W, const Tensor& mask) {
  check_w(W, "apply_mask");
  check_mask(mask, "apply_mask");
  OBR_CHECK(mask.shape() == W.shape(), "apply_mask: mask ", shape_str(mask.shape()), " does not match W ",
            shape_str(W.shape()));
  Tensor out = W.clone();
  float* o = out.data<float>();
  const uint8_t* k = mask.data<uint8_t>();
  for (int64_t i = 0; i < out.numel(); ++i)
    if (!k[i]) o[i] = 0.0f;
  return out;
}

}  // namespace obr
