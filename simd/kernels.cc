// Entry points of the fast integer kernels: argument checks, then Highway dynamic dispatch to
// the per-target code in simd/kernels-inl.h (or, built without Highway, the scalar references).
#include "simd/kernels.h"

#include <cstring>

#include "core/check.h"
#include "simd/kernels_ref.h"

#ifdef OBR_WITH_HWY
#include "simd/hwy_config.h"  // which targets are compiled (before any Highway header)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/kernels.cc"
#include <hwy/foreach_target.h>  // re-includes this file once per target
#include <hwy/highway.h>

#include "simd/kernels-inl.h"
#endif  // OBR_WITH_HWY

#if !defined(OBR_WITH_HWY) || HWY_ONCE

#ifdef OBR_WITH_HWY
#ifdef _OPENMP
#include <omp.h>
#endif
#endif

namespace obr::simd {

#ifdef OBR_WITH_HWY
HWY_EXPORT(QuantizeRowsImpl);
HWY_EXPORT(MatmulImpl);
HWY_EXPORT(SumU64Impl);
#endif

namespace {

void check_matmul_args(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T,
                       const float* y) {
  OBR_CHECK(T >= 0, "int4_matmul: T must be >= 0, got ", T);
  OBR_CHECK(W.n_out > 0 && W.k_in > 0, "int4_matmul: weights are empty (shape [", W.n_out, ", ",
            W.k_in, "]); pack them with pack_int4");
  OBR_CHECK(W.k_in <= (int64_t(1) << 20), "int4_matmul: K = ", W.k_in,
            " is above 2^20, where int32 accumulation could overflow");
  OBR_CHECK(W.n_pad == round_up(W.n_out, kRowBlock) && W.k_pad >= W.k_in &&
                W.scale.size() == size_t(W.n_out) && W.row_sum.size() == size_t(W.n_pad),
            "int4_matmul: inconsistent PackedWeights: shape [", W.n_out, ", ", W.k_in, "], pad [",
            W.n_pad, ", ", W.k_pad, "], ", W.scale.size(), " scales, ", W.row_sum.size(),
            " row sums");
  if (W.format == Int4Format::kUnstructured) {
    OBR_CHECK(W.block_offset.size() == size_t(W.n_blocks() + 1) &&
                  W.masks.size() == size_t(W.n_blocks() * (W.k_pad / 8) * 2),
              "int4_matmul: unstructured weights [", W.n_out, ", ", W.k_in, "] have ",
              W.block_offset.size(), " block offsets and ", W.masks.size(), " masks");
  }
  OBR_CHECK(T == 0 || (qa && sa && y), "int4_matmul: null activations, scales or output for T = ",
            T);
}

}  // namespace

void quantize_act_rows_i8(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                          float* scale) {
  OBR_CHECK(T >= 0 && K > 0, "quantize_act_rows_i8: bad shape [", T, ", ", K, "]");
  OBR_CHECK(bits >= 2 && bits <= 8, "quantize_act_rows_i8: bits must be in [2, 8], got ", bits);
  OBR_CHECK(clip > 0.0f && clip <= 1.0f, "quantize_act_rows_i8: clip must be in (0, 1], got ", clip);
#ifdef OBR_WITH_HWY
  HWY_DYNAMIC_DISPATCH(QuantizeRowsImpl)(x, T, K, bits, clip, q, scale);
#else
  quantize_act_rows_i8_ref(x, T, K, bits, clip, q, scale);
#endif
}

void int4_matmul(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                 int32_t* acc_out, const float* bias) {
  check_matmul_args(W, qa, sa, T, y);
#ifdef OBR_WITH_HWY
  HWY_DYNAMIC_DISPATCH(MatmulImpl)(W, qa, sa, T, y, acc_out, bias);
#else
  int4_matmul_ref(W, qa, sa, T, y, acc_out, bias);
#endif
}

uint64_t sum_u64_parallel(const void* data, size_t n_bytes) {
  OBR_CHECK(n_bytes % 8 == 0, "sum_u64_parallel: ", n_bytes, " bytes is not a multiple of 8");
  const uint64_t* p = static_cast<const uint64_t*>(data);
  const int64_t n = int64_t(n_bytes / 8);
  const int64_t chunk = 1 << 20;  // 8 MB per task
  const int64_t nchunks = (n + chunk - 1) / chunk;
  uint64_t total = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(+ : total)
#endif
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * chunk, len = std::min(chunk, n - i0);
#ifdef OBR_WITH_HWY
    total += HWY_DYNAMIC_DISPATCH(SumU64Impl)(p + i0, size_t(len));
#else
    for (int64_t i = 0; i < len; ++i) total += p[i0 + i];
#endif
  }
  return total;
}

}  // namespace obr::simd

#endif  // HWY_ONCE
