// Per-target code of the integer kernels, compiled once per SIMD target by simd/kernels.cc
// (Highway foreach_target). The contracts are in kernels_ref.h, the layouts in packed_format.h,
// the overall design in kernels.h. Vocabulary used below:
//   VNNI group  16 rows x 4 columns of int8 weights = 64 bytes, byte 4*r + j; one int32 lane
//               per row accumulates the 4 products of its row.
//   kVB, kNV    bytes per vector (16 SSE, 32 AVX2, 64 AVX-512) and vectors per VNNI group.
//   act         "staged" activations: uint8 rows of lda bytes, act = qa + kActOffset (mod 256),
//               zero-code padded to lda, so every kernel reads whole groups without tail code.
//   dot         raw int32 dot products of staged activations with weight codes, i.e.
//               acc + kActOffset * row_sum[n]; the epilogue removes the offset.

// Include guard that foreach_target toggles, so each target sees this file once.
#if defined(OBR_SIMD_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef OBR_SIMD_KERNELS_INL_H_
#undef OBR_SIMD_KERNELS_INL_H_
#else
#define OBR_SIMD_KERNELS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "core/check.h"
#include "simd/kernels_ref.h"
#include "simd/packed_format.h"

#ifdef _OPENMP
#include <omp.h>
#endif

HWY_BEFORE_NAMESPACE();
// Highway 1.0.3's AVX3_DL attribute string names "avxvnni" (VEX, 256-bit) but not
// "avx512vnni"; add it so _mm512_dpbusd_epi32 compiles here. Run-time dispatch only picks
// AVX3_DL on CPUs with AVX512-VNNI (part of Highway's AVX3_DL feature group).
#if HWY_TARGET == HWY_AVX3_DL && HWY_COMPILER_GCC_ACTUAL
#pragma GCC target("avx512vnni")
#endif
// The f32 epilogue (float(acc) * sa) * sw + bias must round after every operation, exactly as
// the scalar reference does: no fused multiply-add (GCC contracts by default in C++).
#if HWY_COMPILER_GCC_ACTUAL
#pragma GCC optimize("fp-contract=off")
#endif

namespace obr {
namespace simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Whether this target uses vpdpbusd (AVX-512 VNNI) / vpexpandb (AVX-512 VBMI2).
#define OBR_VNNI512 (HWY_TARGET == HWY_AVX3_DL && HWY_COMPILER_GCC_ACTUAL)
#define OBR_X86_BYTE_DOT                                                                     \
  (HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX2 ||         \
   HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_SSSE3)

#if HWY_TARGET == HWY_SCALAR

// One-lane vectors cannot hold a VNNI group: this target runs the reference kernels.
void QuantizeRowsImpl(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                      float* scale) {
  quantize_act_rows_i8_ref(x, T, K, bits, clip, q, scale);
}
void MatmulImpl(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                int32_t* acc_out, const float* bias) {
  int4_matmul_ref(W, qa, sa, T, y, acc_out, bias);
}
uint64_t SumU64Impl(const uint64_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

#else  // vector targets

#if HWY_HAVE_SCALABLE
using DU8 = hn::FixedTag<uint8_t, 16>;  // scalable vectors are used 128 bits at a time
#else
using DU8 = hn::CappedTag<uint8_t, 64>;  // at most one VNNI group per vector
#endif
using DI8 = hn::Repartition<int8_t, DU8>;
using DU16 = hn::Repartition<uint16_t, DU8>;
using DU32 = hn::Repartition<uint32_t, DU8>;
using DI32 = hn::Repartition<int32_t, DU8>;
using DU64 = hn::Repartition<uint64_t, DU8>;
using DF32 = hn::Repartition<float, DU8>;
using VU8 = hn::Vec<DU8>;
using VI8 = hn::Vec<DI8>;
using VI32 = hn::Vec<DI32>;

constexpr size_t kVB = hn::MaxLanes(DU8());   // bytes per vector
constexpr size_t kNV = 64 / kVB;              // vectors per VNNI group
constexpr size_t kRowsPerVec = kVB / 4;       // int32 lanes = rows per vector
static_assert(kVB >= 16 && 64 % kVB == 0, "vectors of 16, 32 or 64 bytes");

#if OBR_X86_BYTE_DOT
constexpr int kActOffset = 128;  // x86 multiplies unsigned activations by signed weights
#else
constexpr int kActOffset = 0;    // portable path multiplies signed by signed
#endif

// Register blocking of the prefill micro-kernels: kNB row blocks (16 rows each) by kTR tokens.
#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3
constexpr size_t kNBDense = 2, kTRDense = 12;  // 32 zmm: 24 accumulators
constexpr size_t kNB24 = 2, kTR24 = 10;        // 20 accumulators (2 x 12: -5%, 1 x 24: 3x slower)
#elif HWY_TARGET == HWY_AVX2
constexpr size_t kNBDense = 1, kTRDense = 4, kNB24 = 1, kTR24 = 3;  // 16 ymm registers
#else
constexpr size_t kNBDense = 1, kTRDense = 2, kNB24 = 1, kTR24 = 1;  // 16 xmm registers
#endif
constexpr size_t kTileMax =  // tokens x row blocks of the larger micro-kernel tile
    kTRDense * kNBDense > kTR24 * kNB24 ? kTRDense * kNBDense : kTR24 * kNB24;

// Below this many multiply-adds a call runs on one thread: a parallel region costs more than
// it saves (and much more on a busy machine, where a descheduled thread stalls the barrier).
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

// Per-thread scratch buffers that live across calls and only grow: the hot path allocates,
// faults in and zero-fills nothing. Slot 0: staged activations (calling thread), slot 1: the
// decoded weight panel (each worker). A thread keeps its largest buffers until it exits.
HWY_INLINE uint8_t* Scratch(int slot, size_t bytes) {
  static thread_local AlignedBytes buffers[2];
  buffers[slot].grow(bytes);
  return buffers[slot].data();
}

// Decode streams its weights once: software prefetch this far ahead keeps more cache-line
// requests in flight than the hardware prefetcher alone (tuned on Zen 5).
constexpr size_t kPrefetchBytes = 2048;

HWY_INLINE uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
HWY_INLINE uint64_t LoadU64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// acc[i] += sum_{j < 4} a[4i + j] * w[4i + j], exactly: a staged activation bytes, w int8 codes.
HWY_INLINE VI32 Dot4(VI32 acc, VU8 a, VI8 w) {
#if OBR_VNNI512
  return VI32{_mm512_dpbusd_epi32(acc.raw, a.raw, w.raw)};
#elif HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // Weights are INT4 codes: a pair sums to at most 2 * 255 * 8 < 2^15, so vpmaddubsw never
  // saturates here.
  const __m512i p16 = _mm512_maddubs_epi16(a.raw, w.raw);
  return hn::Add(acc, VI32{_mm512_madd_epi16(p16, _mm512_set1_epi16(1))});
#elif HWY_TARGET == HWY_AVX2
  const __m256i p16 = _mm256_maddubs_epi16(a.raw, w.raw);
  return hn::Add(acc, VI32{_mm256_madd_epi16(p16, _mm256_set1_epi16(1))});
#elif OBR_X86_BYTE_DOT
  const __m128i p16 = _mm_maddubs_epi16(a.raw, w.raw);
  return hn::Add(acc, VI32{_mm_madd_epi16(p16, _mm_set1_epi16(1))});
#elif HWY_TARGET == HWY_NEON && defined(__ARM_FEATURE_DOTPROD)
  // Armv8.2 dot product (build with -march=armv8.2-a+dotprod or later): signed x signed.
  return VI32{vdotq_s32(acc.raw, vreinterpretq_s8_u8(a.raw), w.raw)};
#else
  // Portable: sign-extend byte b of every 32-bit lane with two shifts, multiply in int32.
  const DI32 d32;
  const VI32 a32 = hn::BitCast(d32, a), w32 = hn::BitCast(d32, w);
  acc = hn::Add(acc, hn::Mul(hn::ShiftRight<24>(hn::ShiftLeft<24>(a32)),
                             hn::ShiftRight<24>(hn::ShiftLeft<24>(w32))));
  acc = hn::Add(acc, hn::Mul(hn::ShiftRight<24>(hn::ShiftLeft<16>(a32)),
                             hn::ShiftRight<24>(hn::ShiftLeft<16>(w32))));
  acc = hn::Add(acc, hn::Mul(hn::ShiftRight<24>(hn::ShiftLeft<8>(a32)),
                             hn::ShiftRight<24>(hn::ShiftLeft<8>(w32))));
  return hn::Add(acc, hn::Mul(hn::ShiftRight<24>(a32), hn::ShiftRight<24>(w32)));
#endif
}

// Broadcast 4 (8) activation bytes to every 32-bit (64-bit) lane.
HWY_INLINE VU8 Bcast4(const uint8_t* p) {
  return hn::BitCast(DU8(), hn::Set(DU32(), LoadU32(p)));
}
HWY_INLINE VU8 Bcast8(const uint8_t* p) {
  return hn::BitCast(DU8(), hn::Set(DU64(), LoadU64(p)));
}

// Nibbles of x -> int8 codes (u4 - 8): low nibbles and high nibbles.
HWY_INLINE VI8 LowCodes(VU8 x) {
  const DU8 du8;
  return hn::BitCast(DI8(), hn::Sub(hn::And(x, hn::Set(du8, 0x0F)), hn::Set(du8, 8)));
}
HWY_INLINE VI8 HighCodes(VU8 x) {
  const DU8 du8;
  const VU8 hi = hn::BitCast(du8, hn::ShiftRight<4>(hn::BitCast(DU16(), x)));
  return hn::BitCast(DI8(), hn::Sub(hn::And(hi, hn::Set(du8, 0x0F)), hn::Set(du8, 8)));
}

// 2:4 indices of sub-chunk part `meta` (16 bytes, packed_format.h) for vector v of the group:
// shuffle indices into the 8 activations of the sub-chunk, (e / 2) * 4 + i.
HWY_INLINE VU8 Sparse24Indices(const uint8_t* meta, size_t v) {
  const DU8 du8;
  const DU64 du64;
  // Row quad L lives in 128-bit block L of the group: shift it right by 2L bits.
  alignas(64) static constexpr uint64_t kShift[8] = {0, 0, 2, 2, 4, 4, 6, 6};
  const auto shift = hn::LoadU(du64, kShift + v * hn::Lanes(du64));
  const VU8 m = hn::BitCast(du8, hn::LoadDup128(du8, meta) /*same 16 bytes in every block*/);
  const VU8 i = hn::BitCast(du8, hn::BitCast(du64, m) >> shift);
  const VU8 base = hn::BitCast(du8, hn::Set(DU32(), 0x04040000u));  // e = 0,1 -> 0; e = 2,3 -> 4
  return hn::Or(hn::And(i, hn::Set(du8, 3)), base);
}

#if OBR_VNNI512
// Unstructured chunk at p: the int8 codes of half A (low nibbles) and half B (high nibbles)
// moved to their 64 positions (vpexpandb), 0 where pruned. The chunk's bytes are loaded as a
// whole (the data is padded, so 64 bytes are always readable): on Zen 5 vpexpandb's memory
// form is slower when streaming from DRAM; either form costs ~3 cycles per vpexpandb.
HWY_INLINE void ExpandChunk(const uint8_t* p, uint64_t mA, uint64_t mB, VI8& wA, VI8& wB) {
  const VU8 x = hn::LoadU(DU8(), p);
  wA = VI8{_mm512_maskz_expand_epi8(mA, LowCodes(x).raw)};
  wB = VI8{_mm512_maskz_expand_epi8(mB, HighCodes(x).raw)};
}
#endif

// Unstructured, targets without vpexpandb: expands 64 positions 8 at a time with a byte
// shuffle. kExpand8[m] holds, for mask byte m, the source index of each of the 8 positions
// (its rank among the set bits), or 0x80 (-> 0) where the bit is clear.
struct Expand8Table {
  uint8_t idx[256][8];
  constexpr Expand8Table() : idx() {
    for (int m = 0; m < 256; ++m) {
      int rank = 0;
      for (int j = 0; j < 8; ++j) idx[m][j] = (m >> j) & 1 ? uint8_t(rank++) : uint8_t(0x80);
    }
  }
};
static constexpr Expand8Table kExpand8{};

// codes: the compacted int8 codes of one half (64 bytes + 8 readable bytes); out: 64 positions.
HWY_INLINE void ExpandHalf(const int8_t* codes, uint64_t mask, int8_t* out) {
  const hn::Full64<int8_t> d8;
  const hn::Full64<uint8_t> du8;
  size_t src = 0;
  HWY_UNROLL(8)
  for (int g = 0; g < 8; ++g) {
    const uint32_t m = uint32_t(mask >> (8 * g)) & 0xFF;
    const auto from = hn::LoadU(du8, kExpand8.idx[m]);
    hn::StoreU(hn::TableLookupBytesOr0(hn::LoadU(d8, codes + src), hn::BitCast(d8, from)), d8,
               out + 8 * g);
    src += size_t(__builtin_popcount(m));
  }
}

// Both halves of the unstructured chunk at p (64 readable bytes) into outA / outB.
HWY_INLINE void ExpandChunkPortable(const uint8_t* p, uint64_t mA, uint64_t mB, int8_t* outA,
                                    int8_t* outB) {
  alignas(64) int8_t codes[2][64 + 16];
  HWY_UNROLL(16)
  for (size_t v = 0; v < kNV; ++v) {
    const VU8 x = hn::LoadU(DU8(), p + v * kVB);
    // codes[1] starts 80 bytes in: not vector-aligned, so unaligned stores.
    hn::StoreU(LowCodes(x), DI8(), codes[0] + v * kVB);
    hn::StoreU(HighCodes(x), DI8(), codes[1] + v * kVB);
  }
  ExpandHalf(codes[0], mA, outA);
  ExpandHalf(codes[1], mB, outB);
}

// ---------------------------------------------------------------------------------------------
// Activations and epilogue

// Stages rows [t0, t1) of qa [T, K] into act (row t at act + (t - t0) * lda): qa + kActOffset,
// columns K..lda-1 and rows >= T get the code 0.
void StageActivations(const int8_t* qa, int64_t T, int64_t K, int64_t t0, int64_t t1, int64_t lda,
                      uint8_t* act) {
  const DU8 du8;
  const size_t N = hn::Lanes(du8);
  const uint8_t zero = uint8_t(kActOffset);
  const auto off = hn::Set(du8, uint8_t(kActOffset));
  for (int64_t t = t0; t < t1; ++t) {
    uint8_t* dst = act + (t - t0) * lda;
    int64_t k = 0;
    if (t < T) {
      const uint8_t* src = reinterpret_cast<const uint8_t*>(qa + t * K);
      for (; k + int64_t(N) <= K; k += int64_t(N)) {
        hn::StoreU(hn::Xor(hn::LoadU(du8, src + k), off), du8, dst + k);
      }
      for (; k < K; ++k) dst[k] = uint8_t(src[k] ^ zero);
    }
    for (; k < lda; ++k) dst[k] = zero;
  }
}

// Turns the raw dots of 16 rows [n0, n0 + 16) of one token into y (and acc_out):
//   acc = dot - kActOffset * row_sum[n];  y = (float(acc) * sa_t) * scale[n] (+ bias[n]).
void Epilogue16(const int32_t* dot, const PackedWeights& W, int64_t n0, float sa_t,
                const float* bias, float* y_row, int32_t* acc_row) {
  const DI32 d32;
  const DF32 df;
  const size_t NL = hn::Lanes(d32);
  const int32_t* rs = W.row_sum.data() + n0;
  const float* sw = W.scale.data() + n0;
  if (n0 + kRowBlock <= W.n_out) {
    for (size_t i = 0; i < size_t(kRowBlock); i += NL) {
      VI32 acc = hn::Load(d32, dot + i);
      if (kActOffset) acc = hn::Sub(acc, hn::ShiftLeft<7>(hn::LoadU(d32, rs + i)));
      auto v = hn::Mul(hn::Mul(hn::ConvertTo(df, acc), hn::Set(df, sa_t)), hn::LoadU(df, sw + i));
      if (bias) v = hn::Add(v, hn::LoadU(df, bias + n0 + int64_t(i)));
      hn::StoreU(v, df, y_row + n0 + int64_t(i));
      if (acc_row) hn::StoreU(acc, d32, acc_row + n0 + int64_t(i));
    }
  } else {  // last, partial block: the same IEEE operations one at a time
    for (int64_t i = 0; n0 + i < W.n_out; ++i) {
      const int32_t acc = dot[i] - kActOffset * rs[i];
      float v = (float(acc) * sa_t) * sw[i];
      if (bias) v = v + bias[n0 + i];
      y_row[n0 + i] = v;
      if (acc_row) acc_row[n0 + i] = acc;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Decode (T <= 4): stream the packed weights once, for NT tokens. NS row blocks are processed
// side by side, each its own stream: for one token on AVX-512, 4 concurrent streams let the
// hardware prefetchers keep enough cache lines in flight (measured on Zen 5, 1 GB of 2:4
// weights: ~22 GB/s per core with 1 stream, ~30 with 4, no gain with 8).
//   blk[s]: start of row block s; act[t]: staged row of token t;
//   dot[s * NT + t][16]: the raw dots of row block s and token t.

template <size_t NT>
constexpr size_t DecodeStreams() {
  return NT == 1 && kNV == 1 ? 4 : 1;
}

template <size_t NT, size_t NS>
HWY_INLINE void DenseRowBlocks(const uint8_t* const* blk, size_t nchunks,
                               const uint8_t* const* act, int32_t (*dot)[kRowBlock]) {
  const DI32 d32;
  VI32 acc[NS][NT][kNV][2];  // [..][0]: columns 0..3 of each chunk, [..][1]: columns 4..7
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) acc[s][t][v][0] = acc[s][t][v][1] = hn::Zero(d32);
  for (size_t c = 0; c < nchunks; ++c) {
    HWY_UNROLL(16)
    for (size_t s = 0; s < NS; ++s) {
      const uint8_t* p = blk[s] + c * 64;
      hwy::Prefetch(p + kPrefetchBytes);
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) {
        const VU8 x = hn::Load(DU8(), p + v * kVB);
        const VI8 lo = LowCodes(x), hi = HighCodes(x);
        HWY_UNROLL(16)
        for (size_t t = 0; t < NT; ++t) {
          const uint8_t* a = act[t] + c * 8;
          acc[s][t][v][0] = Dot4(acc[s][t][v][0], Bcast4(a), lo);
          acc[s][t][v][1] = Dot4(acc[s][t][v][1], Bcast4(a + 4), hi);
        }
      }
    }
  }
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v)
        hn::Store(hn::Add(acc[s][t][v][0], acc[s][t][v][1]), d32, dot[s * NT + t] + v * kRowsPerVec);
}

template <size_t NT, size_t NS>
HWY_INLINE void Sparse24RowBlocks(const uint8_t* const* blk, size_t nchunks,
                                  const uint8_t* const* act, int32_t (*dot)[kRowBlock]) {
  const DI32 d32;
  VI32 acc[NS][NT][kNV][2];  // [..][e2]: the even / odd sub-chunks
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) acc[s][t][v][0] = acc[s][t][v][1] = hn::Zero(d32);
  for (size_t c = 0; c < nchunks; ++c) {
    HWY_UNROLL(16)
    for (size_t s = 0; s < NS; ++s) {
      const uint8_t* p = blk[s] + c * kSparse24ChunkBytes;
      hwy::Prefetch(p + kPrefetchBytes);
      hwy::Prefetch(p + kPrefetchBytes + 64);
      hwy::Prefetch(p + kPrefetchBytes + 128);
      HWY_UNROLL(16)
      for (size_t h = 0; h < 2; ++h) {  // value half h: sub-chunks 2h (low), 2h + 1 (high)
        HWY_UNROLL(16)
        for (size_t v = 0; v < kNV; ++v) {
          const VU8 x = hn::Load(DU8(), p + 64 * h + v * kVB);
          const VI8 w[2] = {LowCodes(x), HighCodes(x)};
          HWY_UNROLL(16)
          for (size_t e2 = 0; e2 < 2; ++e2) {
            const size_t sub = 2 * h + e2;
            const VU8 idx = Sparse24Indices(p + 128 + 16 * sub, v);
            HWY_UNROLL(16)
            for (size_t t = 0; t < NT; ++t) {
              const VU8 window = Bcast8(act[t] + c * 32 + sub * 8);
              acc[s][t][v][e2] = Dot4(acc[s][t][v][e2], hn::TableLookupBytes(window, idx), w[e2]);
            }
          }
        }
      }
    }
  }
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v)
        hn::Store(hn::Add(acc[s][t][v][0], acc[s][t][v][1]), d32, dot[s * NT + t] + v * kRowsPerVec);
}

// vals[s] advances to the end of row block s's values (the caller checks it in debug builds).
template <size_t NT, size_t NS>
HWY_INLINE void UnstructuredRowBlocks(const uint8_t** vals, const uint64_t* const* masks,
                                      size_t nchunks, const uint8_t* const* act,
                                      int32_t (*dot)[kRowBlock]) {
  const DI32 d32;
  VI32 acc[NS][NT][kNV][2];  // [..][0]: half A (columns 0..3), [..][1]: half B (4..7)
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) acc[s][t][v][0] = acc[s][t][v][1] = hn::Zero(d32);
  for (size_t c = 0; c < nchunks; ++c) {
    HWY_UNROLL(16)
    for (size_t s = 0; s < NS; ++s) {
      const uint64_t mA = masks[s][2 * c], mB = masks[s][2 * c + 1];
      hwy::Prefetch(vals[s] + kPrefetchBytes);
      VI8 w[kNV][2];
#if OBR_VNNI512
      ExpandChunk(vals[s], mA, mB, w[0][0], w[0][1]);
#else
      alignas(64) int8_t tmp[2][64];
      ExpandChunkPortable(vals[s], mA, mB, tmp[0], tmp[1]);
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) {
        w[v][0] = hn::Load(DI8(), tmp[0] + v * kVB);
        w[v][1] = hn::Load(DI8(), tmp[1] + v * kVB);
      }
#endif
      vals[s] += std::max(__builtin_popcountll(mA), __builtin_popcountll(mB));
      HWY_UNROLL(16)
      for (size_t t = 0; t < NT; ++t) {
        const uint8_t* a = act[t] + c * 8;
        HWY_UNROLL(16)
        for (size_t v = 0; v < kNV; ++v) {
          acc[s][t][v][0] = Dot4(acc[s][t][v][0], Bcast4(a), w[v][0]);
          acc[s][t][v][1] = Dot4(acc[s][t][v][1], Bcast4(a + 4), w[v][1]);
        }
      }
    }
  }
  HWY_UNROLL(16)
  for (size_t s = 0; s < NS; ++s)
    HWY_UNROLL(16)
    for (size_t t = 0; t < NT; ++t)
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v)
        hn::Store(hn::Add(acc[s][t][v][0], acc[s][t][v][1]), d32, dot[s * NT + t] + v * kRowsPerVec);
}

// Raw dots of row blocks [b0, b0 + NS) for NT tokens: dot[s * NT + t].
template <size_t NT, size_t NS>
HWY_INLINE void DecodeRowBlocks(const PackedWeights& W, int64_t b0, const uint8_t* const* act,
                                int32_t (*dot)[kRowBlock]) {
  const uint8_t* blk[NS];
  switch (W.format) {
    case Int4Format::kDense: {
      const size_t nchunks = size_t(W.k_pad / kDenseChunkCols);
      for (size_t s = 0; s < NS; ++s) blk[s] = W.data.data() + (b0 + int64_t(s)) * int64_t(nchunks) * 64;
      DenseRowBlocks<NT, NS>(blk, nchunks, act, dot);
      break;
    }
    case Int4Format::kSparse24: {
      const size_t nchunks = size_t(W.k_pad / kSparse24ChunkCols);
      for (size_t s = 0; s < NS; ++s) {
        blk[s] = W.data.data() + (b0 + int64_t(s)) * int64_t(nchunks) * kSparse24ChunkBytes;
      }
      Sparse24RowBlocks<NT, NS>(blk, nchunks, act, dot);
      break;
    }
    case Int4Format::kUnstructured: {
      const size_t nchunks = size_t(W.k_pad / kUnstructuredChunkCols);
      const uint64_t* masks[NS];
      for (size_t s = 0; s < NS; ++s) {
        blk[s] = W.data.data() + W.block_offset[size_t(b0) + s];
        masks[s] = W.masks.data() + (b0 + int64_t(s)) * int64_t(nchunks) * 2;
      }
      UnstructuredRowBlocks<NT, NS>(blk, masks, nchunks, act, dot);
      for (size_t s = 0; s < NS; ++s) {
        OBR_DCHECK(blk[s] == W.data.data() + W.block_offset[size_t(b0) + s + 1], "row block ",
                   b0 + int64_t(s));
      }
      break;
    }
  }
}

template <size_t NT>
void DecodeMatmul(const PackedWeights& W, const int8_t* qa, const float* sa, float* y,
                  int32_t* acc_out, const float* bias) {
  constexpr size_t NS = DecodeStreams<NT>();
  const int64_t K = W.k_in, N = W.n_out;
  const int64_t lda = round_up(W.k_pad, 64);
  uint8_t* staged = Scratch(0, size_t(int64_t(NT) * lda));
  StageActivations(qa, int64_t(NT), K, 0, int64_t(NT), lda, staged);
  const uint8_t* act[NT];
  HWY_UNROLL(16)
  for (size_t t = 0; t < NT; ++t) act[t] = staged + int64_t(t) * lda;
  const int64_t nb = W.n_blocks();
  const int64_t ngroups = (nb + int64_t(NS) - 1) / int64_t(NS);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (int64_t(NT) * W.n_pad * W.k_pad >= kMinParallelMacs)
#endif
  for (int64_t g = 0; g < ngroups; ++g) {
    const int64_t b0 = g * int64_t(NS);
    const int64_t ns = std::min<int64_t>(int64_t(NS), nb - b0);
    alignas(64) int32_t dot[NS * NT][kRowBlock];
    if (ns == int64_t(NS)) {
      DecodeRowBlocks<NT, NS>(W, b0, act, dot);
    } else {
      for (int64_t s = 0; s < ns; ++s) DecodeRowBlocks<NT, 1>(W, b0 + s, act, dot + s * int64_t(NT));
    }
    for (int64_t s = 0; s < ns; ++s) {
      for (size_t t = 0; t < NT; ++t) {
        Epilogue16(dot[s * int64_t(NT) + int64_t(t)], W, (b0 + s) * kRowBlock, sa[t], bias,
                   y + int64_t(t) * N, acc_out ? acc_out + int64_t(t) * N : nullptr);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill (T > 4): decode a panel of nb <= kNB row blocks into a per-thread buffer, then run a
// kNB x kTR register-blocked micro-kernel over the tokens.
//   Dense / unstructured panel: int8 [k_pad / 4][nb][64]   (VNNI groups of all nb blocks)
//   2:4 panel: [k_pad / 8][nb][2][64]: int8 kept codes, then uint8 shuffle indices, for each
//   sub-chunk S of 8 columns (the kept values of groups 2S, 2S + 1 of every row).

void DecodePanelDense(const PackedWeights& W, int64_t b0, size_t nb, int8_t* pw) {
  const size_t nchunks = size_t(W.k_pad / kDenseChunkCols);
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = W.data.data() + (b0 + int64_t(b)) * int64_t(nchunks) * 64;
    for (size_t c = 0; c < nchunks; ++c) {
      HWY_UNROLL(16)
      for (size_t v = 0; v < kNV; ++v) {
        const VU8 x = hn::Load(DU8(), blk + c * 64 + v * kVB);
        hn::Store(LowCodes(x), DI8(), pw + ((2 * c) * nb + b) * 64 + v * kVB);
        hn::Store(HighCodes(x), DI8(), pw + ((2 * c + 1) * nb + b) * 64 + v * kVB);
      }
    }
  }
}

void DecodePanelUnstructured(const PackedWeights& W, int64_t b0, size_t nb, int8_t* pw) {
  const size_t nchunks = size_t(W.k_pad / kUnstructuredChunkCols);
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* vals = W.data.data() + W.block_offset[size_t(b0) + b];
    const uint64_t* masks = W.masks.data() + (b0 + int64_t(b)) * int64_t(nchunks) * 2;
    for (size_t c = 0; c < nchunks; ++c) {
      const uint64_t mA = masks[2 * c], mB = masks[2 * c + 1];
      int8_t* outA = pw + ((2 * c) * nb + b) * 64;
      int8_t* outB = pw + ((2 * c + 1) * nb + b) * 64;
#if OBR_VNNI512
      VI8 wA, wB;
      ExpandChunk(vals, mA, mB, wA, wB);
      hn::Store(wA, DI8(), outA);
      hn::Store(wB, DI8(), outB);
#else
      ExpandChunkPortable(vals, mA, mB, outA, outB);
#endif
      vals += std::max(__builtin_popcountll(mA), __builtin_popcountll(mB));
    }
    OBR_DCHECK(vals == W.data.data() + W.block_offset[size_t(b0) + b + 1], "row block ", b0 + int64_t(b));
  }
}

void DecodePanelSparse24(const PackedWeights& W, int64_t b0, size_t nb, uint8_t* pw) {
  const size_t nchunks = size_t(W.k_pad / kSparse24ChunkCols);
  for (size_t b = 0; b < nb; ++b) {
    const uint8_t* blk = W.data.data() + (b0 + int64_t(b)) * int64_t(nchunks) * kSparse24ChunkBytes;
    for (size_t c = 0; c < nchunks; ++c) {
      const uint8_t* p = blk + c * kSparse24ChunkBytes;
      HWY_UNROLL(16)
      for (size_t h = 0; h < 2; ++h) {
        HWY_UNROLL(16)
        for (size_t v = 0; v < kNV; ++v) {
          const VU8 x = hn::Load(DU8(), p + 64 * h + v * kVB);
          const VI8 w[2] = {LowCodes(x), HighCodes(x)};
          HWY_UNROLL(16)
          for (size_t e2 = 0; e2 < 2; ++e2) {
            const size_t s = 2 * h + e2, S = 4 * c + s;
            uint8_t* out = pw + ((S * nb + b) * 2) * 64 + v * kVB;
            hn::Store(hn::BitCast(DU8(), w[e2]), DU8(), out);
            hn::Store(Sparse24Indices(p + 128 + 16 * s, v), DU8(), out + 64);
          }
        }
      }
    }
  }
}

// out [TR][NB * 16] = raw dots of TR staged token rows (act, stride lda) with the panel.
template <size_t NB, size_t TR>
HWY_NOINLINE void MicroDense(const int8_t* pw, size_t ngroups, const uint8_t* act, size_t lda,
                             int32_t* out) {
  constexpr size_t kW = NB * kNV;
  const DI32 d32;
  VI32 acc[TR][kW];
  HWY_UNROLL(16)
  for (size_t t = 0; t < TR; ++t)
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) acc[t][i] = hn::Zero(d32);
  for (size_t g = 0; g < ngroups; ++g) {
    VI8 w[kW];
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) w[i] = hn::Load(DI8(), pw + g * NB * 64 + i * kVB);
    HWY_UNROLL(16)
    for (size_t t = 0; t < TR; ++t) {
      const VU8 a = Bcast4(act + t * lda + 4 * g);
      HWY_UNROLL(16)
      for (size_t i = 0; i < kW; ++i) acc[t][i] = Dot4(acc[t][i], a, w[i]);
    }
  }
  HWY_UNROLL(16)
  for (size_t t = 0; t < TR; ++t)
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) hn::Store(acc[t][i], d32, out + t * NB * 16 + i * kRowsPerVec);
}

template <size_t NB, size_t TR>
HWY_NOINLINE void Micro24(const uint8_t* pw, size_t nsub, const uint8_t* act, size_t lda,
                          int32_t* out) {
  constexpr size_t kW = NB * kNV;
  const DI32 d32;
  VI32 acc[TR][kW];
  HWY_UNROLL(16)
  for (size_t t = 0; t < TR; ++t)
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) acc[t][i] = hn::Zero(d32);
  for (size_t S = 0; S < nsub; ++S) {
    VI8 w[kW];
    VU8 idx[kW];
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) {
      const uint8_t* p = pw + (S * NB + i / kNV) * 128 + (i % kNV) * kVB;
      w[i] = hn::Load(DI8(), reinterpret_cast<const int8_t*>(p));
      idx[i] = hn::Load(DU8(), p + 64);
    }
    HWY_UNROLL(16)
    for (size_t t = 0; t < TR; ++t) {
      const VU8 window = Bcast8(act + t * lda + 8 * S);
      HWY_UNROLL(16)
      for (size_t i = 0; i < kW; ++i) {
        acc[t][i] = Dot4(acc[t][i], hn::TableLookupBytes(window, idx[i]), w[i]);
      }
    }
  }
  HWY_UNROLL(16)
  for (size_t t = 0; t < TR; ++t)
    HWY_UNROLL(16)
    for (size_t i = 0; i < kW; ++i) hn::Store(acc[t][i], d32, out + t * NB * 16 + i * kRowsPerVec);
}

// Tokens per macro-block: their staged activations (and one decoded panel, 32 rows x k_pad)
// stay in the 1 MB L2 while every panel passes over them; the packed weights are read once
// per macro-block.
constexpr int64_t kActBlockBytes = 640 * 1024;

void PrefillMatmul(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                   int32_t* acc_out, const float* bias) {
  const int64_t K = W.k_in, N = W.n_out;
  const bool is24 = W.format == Int4Format::kSparse24;
  const int64_t TR = int64_t(is24 ? kTR24 : kTRDense);
  const int64_t lda = round_up(W.k_pad, 64);
  const int64_t t_pad = round_up(T, TR);
  const int64_t MC = std::max<int64_t>(TR, kActBlockBytes / lda / TR * TR);  // tokens per macro-block
  const int64_t n_mb = (t_pad + MC - 1) / MC;
  const int64_t n_blocks = W.n_blocks();
  const int64_t NB = int64_t(is24 ? kNB24 : kNBDense);
  const int64_t n_panels = (n_blocks + NB - 1) / NB;

  uint8_t* staged = Scratch(0, size_t(t_pad * lda));
  const int64_t n_tb = t_pad / TR;
  const bool parallel = t_pad * W.n_pad * W.k_pad >= kMinParallelMacs;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (parallel)
#endif
  for (int64_t tb = 0; tb < n_tb; ++tb) {
    StageActivations(qa, T, K, tb * TR, (tb + 1) * TR, lda, staged + tb * TR * lda);
  }

#ifdef _OPENMP
#pragma omp parallel if (parallel)
#endif
  {
    uint8_t* panel = Scratch(1, size_t(NB * kRowBlock * W.k_pad));
    alignas(64) int32_t out[kTileMax * kRowBlock];
    int64_t decoded = -1;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t item = 0; item < n_mb * n_panels; ++item) {
      const int64_t mb = item / n_panels, p = item % n_panels;
      const int64_t b0 = p * NB;
      const size_t nb = size_t(std::min<int64_t>(NB, n_blocks - b0));
      if (decoded != p) {
        switch (W.format) {
          case Int4Format::kDense:
            DecodePanelDense(W, b0, nb, reinterpret_cast<int8_t*>(panel));
            break;
          case Int4Format::kUnstructured:
            DecodePanelUnstructured(W, b0, nb, reinterpret_cast<int8_t*>(panel));
            break;
          case Int4Format::kSparse24:
            DecodePanelSparse24(W, b0, nb, panel);
            break;
        }
        decoded = p;
      }
      const int64_t t_end = std::min(t_pad, (mb + 1) * MC);
      for (int64_t t0 = mb * MC; t0 < t_end; t0 += TR) {
        const uint8_t* act = staged + t0 * lda;
        if (is24) {
          const size_t nsub = size_t(W.k_pad / 8);
          if (nb == kNB24) Micro24<kNB24, kTR24>(panel, nsub, act, size_t(lda), out);
          else Micro24<1, kTR24>(panel, nsub, act, size_t(lda), out);
        } else {
          const size_t ngroups = size_t(W.k_pad / 4);
          const int8_t* pw = reinterpret_cast<const int8_t*>(panel);
          if (nb == kNBDense) MicroDense<kNBDense, kTRDense>(pw, ngroups, act, size_t(lda), out);
          else MicroDense<1, kTRDense>(pw, ngroups, act, size_t(lda), out);
        }
        for (int64_t t = t0; t < std::min(T, t0 + TR); ++t) {
          for (size_t b = 0; b < nb; ++b) {
            Epilogue16(out + (t - t0) * int64_t(nb) * kRowBlock + int64_t(b) * kRowBlock, W,
                       (b0 + int64_t(b)) * kRowBlock, sa[t], bias, y + t * N,
                       acc_out ? acc_out + t * N : nullptr);
          }
        }
      }
    }
  }
}

void MatmulImpl(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                int32_t* acc_out, const float* bias) {
  switch (T) {
    case 0: return;
    case 1: return DecodeMatmul<1>(W, qa, sa, y, acc_out, bias);
    case 2: return DecodeMatmul<2>(W, qa, sa, y, acc_out, bias);
    case 3: return DecodeMatmul<3>(W, qa, sa, y, acc_out, bias);
    case 4: return DecodeMatmul<4>(W, qa, sa, y, acc_out, bias);
    default: return PrefillMatmul(W, qa, sa, T, y, acc_out, bias);
  }
}

// ---------------------------------------------------------------------------------------------
// Activation quantization (see quantize_act_rows_i8_ref; arguments checked by the caller).

// Quantizes one row; returns false if it holds a NaN or an infinity.
bool QuantizeRow(const float* x, int64_t K, float clip, float lo, float hi, int8_t* q,
                 float* scale) {
  const DF32 df;
  const hn::Rebind<int32_t, DF32> d32;
  const hn::Rebind<int8_t, DF32> d8;
  const int64_t N = int64_t(hn::Lanes(df));
  auto vmax = hn::Zero(df);
  auto vnan = hn::Zero(df);  // x * 0 is NaN exactly for non-finite x
  int64_t k = 0;
  for (; k + N <= K; k += N) {
    const auto v = hn::LoadU(df, x + k);
    vmax = hn::Max(vmax, hn::Abs(v));
    vnan = hn::Add(vnan, hn::Mul(v, hn::Zero(df)));
  }
  float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
  bool finite = !std::isnan(hn::GetLane(hn::SumOfLanes(df, vnan)));
  for (; k < K; ++k) {
    finite = finite && std::isfinite(x[k]);
    amax = std::max(amax, std::fabs(x[k]));
  }
  if (!finite) return false;
  float s = amax * clip / hi;  // = max(|min(x, 0)|, max(x, 0)) * clip / hi
  if (s == 0.0f) s = 1.0f;
  *scale = s;
  const auto vs = hn::Set(df, s), vlo = hn::Set(df, lo), vhi = hn::Set(df, hi);
  for (k = 0; k + N <= K; k += N) {
    const auto v = hn::Min(hn::Max(hn::Round(hn::Div(hn::LoadU(df, x + k), vs)), vlo), vhi);
    hn::StoreU(hn::DemoteTo(d8, hn::ConvertTo(d32, v)), d8, q + k);
  }
  for (; k < K; ++k) q[k] = int8_t(std::min(std::max(std::nearbyint(x[k] / s), lo), hi));
  return true;
}

void QuantizeRowsImpl(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                      float* scale) {
  const float hi = float((1 << (bits - 1)) - 1);
  const float lo = -hi - 1.0f;
  std::vector<uint8_t> bad(size_t(T), 0);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (T * K >= kMinParallelMacs)
#endif
  for (int64_t t = 0; t < T; ++t) {
    if (!QuantizeRow(x + t * K, K, clip, lo, hi, q + t * K, scale + t)) bad[size_t(t)] = 1;
  }
  for (int64_t t = 0; t < T; ++t) {
    if (!bad[size_t(t)]) continue;
    for (int64_t k = 0; k < K; ++k) {
      OBR_CHECK(std::isfinite(x[t * K + k]), "quantize_act_rows_i8: x[", t, ", ", k, "] = ",
                x[t * K + k], " is not finite");
    }
  }
}

uint64_t SumU64Impl(const uint64_t* p, size_t n) {
  const DU64 d;
  const size_t N = hn::Lanes(d);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d), s2 = hn::Zero(d), s3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::Add(s0, hn::LoadU(d, p + i));
    s1 = hn::Add(s1, hn::LoadU(d, p + i + N));
    s2 = hn::Add(s2, hn::LoadU(d, p + i + 2 * N));
    s3 = hn::Add(s3, hn::LoadU(d, p + i + 3 * N));
  }
  uint64_t s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
  for (; i < n; ++i) s += p[i];
  return s;
}

#endif  // vector targets

#undef OBR_VNNI512
#undef OBR_X86_BYTE_DOT

}  // namespace HWY_NAMESPACE
}  // namespace simd
}  // namespace obr
HWY_AFTER_NAMESPACE();

#endif  // include guard
