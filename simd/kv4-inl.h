// Per-target code of the packed KV4 attention kernels, compiled once per SIMD target by
// simd/kv4.cc (Highway foreach_target). Contracts and summation orders: kv4_cache.h and the
// scalar twins in kv4_ref.h. Vocabulary:
//   chunk  16 consecutive columns of one row = 8 bytes of codes; never straddles a head or a
//          quantization group, so it has one (scale, zero).
//   kN     f32 lanes per vector (4 SSE4/NEON, 8 AVX2, 16 AVX-512), capped at 16;
//   kV     = 16 / kN vectors per chunk. Vector k of a chunk holds columns k*kN .. k*kN + kN-1,
//          which are exactly the lanes k*kN.. of dot16's 16 partial sums.

// Include guard that foreach_target toggles, so each target sees this file once.
#if defined(OBR_SIMD_KV4_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef OBR_SIMD_KV4_INL_H_
#undef OBR_SIMD_KV4_INL_H_
#else
#define OBR_SIMD_KV4_INL_H_
#endif

#include <algorithm>
#include <cstdint>

#include <hwy/highway.h>

#include "simd/kv4_cache.h"
#include "simd/kv4_ref.h"

HWY_BEFORE_NAMESPACE();
// Every product and sum rounds on its own, exactly as the scalar reference: no fused
// multiply-add (GCC contracts a * b + c by default in C++, also in Highway's Mul + Add).
#if HWY_COMPILER_GCC_ACTUAL
#pragma GCC optimize("fp-contract=off")
#endif

namespace obr {
namespace simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR

// One-lane vectors: this target runs the reference kernels.
void Kv4ScoresImpl(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n, float scale,
                   float* s) {
  kv4_scores_ref(K, col0, hd, q, n, scale, s);
}
void Kv4WeightedSumImpl(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n, float* out) {
  kv4_weighted_sum_ref(V, col0, hd, p, n, out);
}

#else  // vector targets

using DF = hn::CappedTag<float, 16>;
using DI32 = hn::RebindToSigned<DF>;
using DU8N = hn::Rebind<uint8_t, DF>;  // kN bytes
using VF = hn::Vec<DF>;
constexpr size_t kN = hn::MaxLanes(DF());
constexpr size_t kV = 16 / kN;
static_assert(kN >= 4 && 16 % kN == 0, "f32 vectors of 4, 8 or 16 lanes");
static_assert(kKv4Chunk == 16, "one chunk = 16 columns = dot16's 16 partial sums");

// The 16 codes of the chunk at p (8 bytes, any alignment), in column order, as f32 in kV
// vectors. Byte i holds column 2i (low nibble) and 2i + 1 (high nibble): interleaving the
// low and high nibble vectors restores column order.
// (A template on the int32 tag so that the branch for the other widths is never instantiated.)
template <class DI = DI32>
HWY_INLINE void DecodeChunk(const uint8_t* HWY_RESTRICT p, VF* HWY_RESTRICT c, DI di = DI()) {
  const hn::Full64<uint8_t> d8;
  const hn::Full128<uint8_t> d16;
  const auto bytes = hn::ZeroExtendVector(d16, hn::LoadU(d8, p));
  const auto lo = hn::And(bytes, hn::Set(d16, uint8_t{0x0F}));
  const auto hi = hn::ShiftRight<4>(bytes);
  const auto codes = hn::InterleaveLower(d16, lo, hi);  // columns 0..15
  if constexpr (kV == 1) {
    c[0] = hn::ConvertTo(DF(), hn::PromoteTo(di, codes));
  } else {
    HWY_ALIGN uint8_t buf[16];
    hn::Store(codes, d16, buf);
    for (size_t k = 0; k < kV; ++k) c[k] = hn::ConvertTo(DF(), hn::PromoteTo(di, hn::Load(DU8N(), buf + k * kN)));
  }
}

void Kv4ScoresImpl(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n, float scale,
                   float* s) {
  const DF df;
  const int64_t n_chunks = hd / kKv4Chunk, rb = K.row_bytes(), gpr = K.groups_per_row();
  const uint8_t* codes = K.codes.data() + col0 / 2;
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = codes + j * rb;
    const float* sc = K.scale.data() + j * gpr;
    const float* zr = K.zero.data() + j * gpr;
    VF acc[kV];
    for (size_t k = 0; k < kV; ++k) acc[k] = hn::Zero(df);
    for (int64_t ch = 0; ch < n_chunks; ++ch) {
      const int64_t g = (col0 + ch * kKv4Chunk) / K.group;
      const VF vs = hn::Set(df, sc[g]), vz = hn::Set(df, zr[g]);
      VF c[kV];
      DecodeChunk(row + ch * (kKv4Chunk / 2), c);
      for (size_t k = 0; k < kV; ++k) {
        const VF deq = hn::Mul(vs, hn::Sub(c[k], vz));
        acc[k] = hn::Add(acc[k], hn::Mul(hn::LoadU(df, q + ch * kKv4Chunk + int64_t(k * kN)), deq));
      }
    }
    // The fixed tree over the 16 partial sums (same code as the reference).
    HWY_ALIGN float lanes[16];
    for (size_t k = 0; k < kV; ++k) hn::Store(acc[k], df, lanes + k * kN);
    for (int w = 8; w >= 1; w /= 2)
      for (int l = 0; l < w; ++l) lanes[l] = lanes[l] + lanes[l + w];
    s[j] = lanes[0] * scale;
  }
}

// NB chunks (16 * NB columns starting at chunk ch0) over all n rows: the accumulators stay in
// registers while the rows stream by; each lane is a sequential sum over j.
template <int NB>
HWY_INLINE void WeightedSumBlock(const Kv4Matrix& V, int64_t col0, int64_t ch0, const float* p, int64_t n,
                                 float* out) {
  const DF df;
  const int64_t rb = V.row_bytes(), gpr = V.groups_per_row();
  const uint8_t* codes = V.codes.data() + col0 / 2 + ch0 * (kKv4Chunk / 2);
  int64_t g[NB];
  for (int b = 0; b < NB; ++b) g[b] = (col0 + (ch0 + b) * kKv4Chunk) / V.group;
  VF acc[NB * kV];
  for (int i = 0; i < NB * int(kV); ++i) acc[i] = hn::Zero(df);
  for (int64_t j = 0; j < n; ++j) {
    const uint8_t* row = codes + j * rb;
    const float* sc = V.scale.data() + j * gpr;
    const float* zr = V.zero.data() + j * gpr;
    const VF vp = hn::Set(df, p[j]);
    for (int b = 0; b < NB; ++b) {
      const VF vs = hn::Set(df, sc[g[b]]), vz = hn::Set(df, zr[g[b]]);
      VF c[kV];
      DecodeChunk(row + b * (kKv4Chunk / 2), c);
      for (size_t k = 0; k < kV; ++k) {
        const VF deq = hn::Mul(vs, hn::Sub(c[k], vz));
        acc[b * kV + k] = hn::Add(acc[b * kV + k], hn::Mul(vp, deq));
      }
    }
  }
  for (int b = 0; b < NB; ++b)
    for (size_t k = 0; k < kV; ++k) hn::StoreU(acc[b * kV + k], df, out + b * kKv4Chunk + int64_t(k * kN));
}

void Kv4WeightedSumImpl(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n, float* out) {
  // Chunks per pass: 4 (64 columns) on AVX-512 and AVX2 (4 and 8 accumulators), 2 on 128-bit
  // targets (8 accumulators of their 16 registers).
  constexpr int kBlock = kV >= 4 ? 2 : 4;
  const int64_t n_chunks = hd / kKv4Chunk;
  int64_t ch = 0;
  for (; ch + kBlock <= n_chunks; ch += kBlock) WeightedSumBlock<kBlock>(V, col0, ch, p, n, out + ch * kKv4Chunk);
  for (; ch < n_chunks; ++ch) WeightedSumBlock<1>(V, col0, ch, p, n, out + ch * kKv4Chunk);
}

#endif  // vector targets

}  // namespace HWY_NAMESPACE
}  // namespace simd
}  // namespace obr
HWY_AFTER_NAMESPACE();

#endif  // include guard
