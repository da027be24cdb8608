// Packed 4-bit KV cache (the "KV4" of W4A4KV4) and attention over it, for the integer engine.
//
// The simulated engine stores K and V in f32 after fake-quantizing each new row
// (compress/quantizer.h, fake_quant_kv). This cache stores the quantizer's codes instead, and
// its dequantized values are bitwise equal to the simulated ones:
//   per row t (one token) and group g (`group` consecutive columns, normally one head),
//   with maxq = 2^bits - 1 (15 for 4 bits) and clip, include_zero as in KVQuantSpec:
//     xmin = clip * min(x_g[, 0]),  xmax = clip * max(x_g[, 0])   (-1, +1 when both are 0)
//     scale = (xmax - xmin) / maxq;  zero = nearbyint(-xmin / scale)
//     code  = clamp(round(x / scale) + zero, 0, maxq)               (an integer in 0..15)
//     deq   = scale * (float(code) - zero)                          (f32, in that order)
//   round = round half to even. zero is stored as f32 (an integer, possibly negative when
//   include_zero is false), so deq is exactly the simulated x~ = scale * (code - zero).
//   (Degenerate groups whose scale is 0, e.g. a constant nonzero group with include_zero
//   false, give NaN in both engines; the packed code is then 0.)
//
// Layout of one Kv4Matrix (K or V of one layer), rows = max_len tokens, cols = nkv * head_dim:
//   codes  uint8 [rows, cols / 2]    byte i of row t holds column 2i in bits 0-3 (low nibble)
//                                    and column 2i + 1 in bits 4-7 (high nibble)
//   scale  f32   [rows, cols / group] per (token, group)
//   zero   f32   [rows, cols / group]
//   column c of row t belongs to group c / group; head h owns columns [h*hd, (h+1)*hd).
// Shape rules (kv4_supported): bits in 2..4, head_dim and group multiples of 16 (a 16-column
// chunk, 8 bytes, never straddles a head or a group), cols a multiple of group. Bytes per
// cached value: 0.5 + 8 / group (0.5625 at group 128, 0.625 at 64) against 4 for f32.
//
// Attention kernels (contracts; the scalar twins in simd/kv4_ref.h are the definitions):
//   kv4_scores:       s[j] = dot16(q, deq(K[j, col0 : col0 + hd])) * scale    for j in [0, n)
//   kv4_weighted_sum: out[d] = sum_{j = 0..n-1} p[j] * deq(V[j, col0 + d])  for d in [0, hd)
// Summation orders are fixed, so every SIMD target and the reference agree to the bit:
//   dot16(a, b): 16 partial sums acc[l] = 0 (l = 0..15); for d = 0, 1, .., hd-1 in order:
//                acc[d % 16] = acc[d % 16] + a[d] * b[d]   (product rounded, then the sum);
//                then a fixed pairwise tree: for w = 8, 4, 2, 1: acc[l] = acc[l] + acc[l + w]
//                for l < w; the result is acc[0]. (A 16-lane vector holds acc directly; 8-lane
//                targets hold lanes 0-7 and 8-15 in two vectors, 4-lane targets in four.)
//   weighted sum: each out[d] is a plain sequential sum over j = 0, 1, .., n-1 starting from
//                +0 (the targets vectorize over d, not over j).
// No fused multiply-add anywhere (the files are compiled with fp-contract=off).
#pragma once

#include <cstdint>
#include <vector>

namespace obr::simd {

// Quantizer settings of the packed cache (a subset of compress/quantizer.h's KVQuantSpec:
// asymmetric only).
struct Kv4Quant {
  int bits = 4;               // 2..4 (codes 0..2^bits-1 in a nibble)
  float clip = 0.95f;         // in (0, 1]; multiplies both xmin and xmax
  bool include_zero = true;   // min/max over the group and 0 (QuaRot's per-token K path)
  int64_t group = 0;          // columns per (scale, zero): the cache's group, or 0 = the cache's
};

// K or V of one layer. Storage is allocated by kv4_allocate; rows [0, len) of the owner's
// cache are valid.
struct Kv4Matrix {
  int64_t rows = 0;   // capacity in tokens (max_len)
  int64_t cols = 0;   // nkv * head_dim
  int64_t group = 0;  // columns per scale/zero
  std::vector<uint8_t> codes;  // [rows, cols / 2], nibble order above
  std::vector<float> scale;    // [rows, cols / group]
  std::vector<float> zero;     // [rows, cols / group]

  int64_t row_bytes() const { return cols / 2; }
  int64_t groups_per_row() const { return group > 0 ? cols / group : 0; }
  bool empty() const { return rows == 0; }
  // Bytes of storage: codes + scales + zeros.
  int64_t bytes() const { return int64_t(codes.size() + 4 * scale.size() + 4 * zero.size()); }
};

// Columns per chunk (8 bytes of codes): the unit of the SIMD loops and of dot16's lanes.
constexpr int64_t kKv4Chunk = 16;

// Whether the packed cache can hold rows of `cols` = nkv * head_dim columns with this head_dim,
// group and bits (see "Shape rules" above).
bool kv4_supported(int64_t head_dim, int64_t cols, int64_t group, int bits);

// A zero-filled matrix of `rows` x `cols` with `group` columns per scale/zero; throws
// obr::Error naming the values unless head_dim and group are multiples of 16 and cols a
// multiple of both.
Kv4Matrix kv4_allocate(int64_t rows, int64_t cols, int64_t head_dim, int64_t group);

// Quantizes x [T, cols] (row-major f32, any alignment) into rows row0 .. row0 + T - 1 of m with
// the formula above (groups of m.group; q.group must be m.group or 0). Every (row, group) is
// independent; OpenMP splits them, so the result does not depend on the thread count.
void kv4_write_rows(Kv4Matrix& m, int64_t row0, const float* x, int64_t T, const Kv4Quant& q);

// deq of rows [row0, row0 + T) into out [T, cols] (for tests and debugging).
void kv4_dequant_rows(const Kv4Matrix& m, int64_t row0, int64_t T, float* out);

// One query head against keys [0, n): s[j] = dot16(q, deq(K[j, col0 : col0 + hd])) * scale.
// col0 = kv_head * hd, a multiple of 16; hd a multiple of 16; q [hd] and s [n] any alignment.
// Single-threaded (attention runs heads in parallel).
void kv4_scores(const Kv4Matrix& K, int64_t col0, int64_t hd, const float* q, int64_t n,
                float scale, float* s);

// out[d] = sum_{j < n} p[j] * deq(V[j, col0 + d]) for d in [0, hd), sequential in j.
// p [n], out [hd] any alignment. Single-threaded.
void kv4_weighted_sum(const Kv4Matrix& V, int64_t col0, int64_t hd, const float* p, int64_t n,
                      float* out);

}  // namespace obr::simd
