// Entry points of the packed KV4 attention kernels: argument checks, then Highway dynamic
// dispatch to the per-target code in simd/kv4-inl.h (or, built without Highway, the scalar
// references in kv4_ref.cc).
#include "simd/kv4_cache.h"

#include "core/check.h"
#include "simd/kv4_ref.h"

#ifdef OBR_WITH_HWY
#include "simd/hwy_config.h"  // which targets are compiled (before any Highway header)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "simd/kv4.cc"
#include <hwy/foreach_target.h>  // re-includes this file once per target
#include <hwy/highway.h>

#include "simd/kv4-inl.h"
#endif  // OBR_WITH_HWY

#if !defined(OBR_WITH_HWY) || HWY_ONCE

namespace obr::simd {

#ifdef OBR_WITH_HWY
HWY_EXPORT(Kv4ScoresImpl);
HWY_EXPORT(Kv4WeightedSumImpl);
#endif

namespace {

void check_head(const char* what, const Kv4Matrix& m, int64_t col0, int64_t hd, int64_t n) {
  OBR_CHECK(!m.empty() && m.group > 0 && m.group % kKv4Chunk == 0, what, ": the cache is not allocated (",
            m.rows, " rows, group ", m.group, ")");
  OBR_CHECK(hd > 0 && hd % kKv4Chunk == 0 && col0 >= 0 && col0 % kKv4Chunk == 0 && col0 + hd <= m.cols, what,
            ": head columns [", col0, ", ", col0 + hd, ") must be 16-aligned, a multiple of 16 long and inside the ",
            m.cols, " columns");
  OBR_CHECK(n >= 0 && n <= m.rows, what, ": ", n, " rows requested from a cache of ", m.rows);
}

}  // namespace

void kv4_scores(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n, float scale,
                float* s) {
  check_head("kv4_scores", K, col0, hd, n);
  OBR_CHECK(n == 0 || (q && s), "kv4_scores: null query or output");
#ifdef OBR_WITH_HWY
  HWY_DYNAMIC_DISPATCH(Kv4ScoresImpl)(K, col0, hd, q, n, scale, s);
#else
  kv4_scores_ref(K, col0, hd, q, n, scale, s);
#endif
}

void kv4_weighted_sum(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n, float* out) {
  check_head("kv4_weighted_sum", V, col0, hd, n);
  OBR_CHECK(out && (n == 0 || p), "kv4_weighted_sum: null weights or output");
#ifdef OBR_WITH_HWY
  HWY_DYNAMIC_DISPATCH(Kv4WeightedSumImpl)(V, col0, hd, p, n, out);
#else
  kv4_weighted_sum_ref(V, col0, hd, p, n, out);
#endif
}

}  // namespace obr::simd

#endif  // HWY_ONCE
