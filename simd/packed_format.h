// Packed INT4 weight formats for the CPU integer kernels (simd/kernels.h).
//
// A linear layer's weight W [N_out, K_in] (row-major, one row per output channel) is
// quantized to codes q in [-8, 7] with one f32 scale per row, sw[n]:  W[n, k] ~ q[n, k] * sw[n].
// The three formats below store the codes; all share these rules:
//
//   Code -> nibble:  u4 = q + 8 ("excess-8", 0..15), so nibble 8 is the code 0. The kernels
//                    turn a nibble back into the int8 code with one subtraction (u4 - 8).
//                    (CUDA/CUTLASS s4 is two's complement: s4 = u4 ^ 0x8 nibble-wise, i.e.
//                    XOR every byte with 0x88.)
//   Row blocks:      rows are grouped in blocks of kRowBlock = 16 consecutive rows, one int32
//                    lane per row in a 512-bit register. N_out is padded up to n_pad, a
//                    multiple of 16; pad rows hold the code 0.
//   Columns:         K_in is padded up to k_pad, a multiple of the format's column chunk;
//                    pad columns hold the code 0 (the 2:4 format counts them as pruned).
//   "VNNI order":    inside a block, 16 rows x 4 consecutive columns are stored as 64 bytes,
//                    byte 4*r + j = row r, column j. One x86 vpdpbusd (or vpmaddubsw +
//                    vpmaddwd) then yields the 16 rows' 4-term partial dot products.
//   Side data:       row_sum[n] = sum_k q[n, k] (int32, n < n_pad), which the x86 kernels use
//                    to undo their activation offset (simd/kernels.h), and the scales.
//
// ---- kDense: dense INT4, 0.5 byte/weight (+ 8 bytes/row of scale and row sum) ----------------
//   k_pad = round_up(K_in, 8). Each row block is k_pad / 8 chunks of 64 bytes, each chunk
//   covering 16 rows x 8 columns [8c, 8c + 8):
//     byte 4*r + j (r < 16, j < 4) = u4(q[16b + r][8c + j])            in bits 0..3 (low nibble)
//                                  | u4(q[16b + r][8c + 4 + j]) << 4     in bits 4..7 (high nibble)
//   i.e. the low nibbles of a chunk are columns 0..3 and the high nibbles columns 4..7, both
//   in VNNI order. Byte offset of chunk c of block b: (b * k_pad / 8 + c) * 64.
//
// ---- kSparse24: 2:4 semi-structured INT4, 0.375 byte/weight ------------------------------------
//   For every row and every group of 4 consecutive columns [4g, 4g + 4), exactly 2 values are
//   stored ("kept"), with their 2-bit indices i0 < i1 in the group. Pack rejects a group with
//   more than 2 kept values; a group with fewer keeps explicit zeros at its lowest unused
//   indices. k_pad = round_up(K_in, 32); pad columns are pruned, so K_in needs no alignment.
//   Each row block is k_pad / 32 chunks of 192 bytes (three cache lines), each covering
//   16 rows x 32 columns = 8 groups. Chunk layout:
//     values:  bytes [0, 128)   two halves h = 0, 1 of 64 bytes;
//     indices: bytes [128, 192) four parts s = 0..3 of 16 bytes.
//   Sub-chunk s (s = 0..3) is columns [8s, 8s + 8) = groups 2s and 2s + 1 of the chunk; it keeps
//   4 values per row, numbered e = 0..3: (group 2s: i0, i1), (group 2s + 1: i0, i1).
//     value (r, s, e): nibble of byte 64*(s/2) + 4*r + e, low nibble if s is even, high if odd
//     index (r, s, e): bits [2L, 2L + 2) of byte 128 + 16*s + 4*(r % 4) + e, where L = r / 4
//   So each index byte holds the same (row-in-quad, e) slot for the four row quads L = 0..3.
//   This lets a kernel broadcast one 16-byte part to every 128-bit block of a register and
//   shift block L right by 2L bits: each byte then holds its own index in bits 0..1, ready for
//   a byte shuffle (pshufb) of the 8 activations of sub-chunk s. Bytes: 16 rows * 32 cols *
//   0.375 = 192.
//   Relation to CUTLASS / Sparse-Marlin / PTX mma.sp: the logical metadata is the same per
//   group, the 4-bit code i0 | i1 << 2 with i0 < i1 (valid codes 0x4, 0x8, 0x9, 0xC, 0xD, 0xE;
//   0x0, 0x5, 0xA, 0xF never occur), and the kept values are in index order. What differs is
//   only where the codes sit: PTX wants, per thread, the codes of consecutive groups of one
//   row packed low-to-high into 16/32-bit words with a thread/row interleave that depends on
//   the mma shape (Sparse-Marlin and CUTLASS reorder further for ldmatrix), while here they
//   are bit-planed by row quad as above. The CUDA module re-lays them out from
//   unpack (or from decode_row_ref) rather than from these bytes. Note also that PTX's
//   mma.sp for 4-bit operands (.s4/.u4) defines its sparsity granularity on pairs of
//   elements, not single elements; element-wise 2:4 INT4 maps onto the 8-bit (.s8, widen
//   s4 -> s8) or 16-bit (dequantize, as Sparse-Marlin does) mma.sp paths. Check the PTX ISA
//   "Sparse matrix storage" section before relying on s4 mma.sp.
//
// ---- kUnstructured: any sparsity, 0.125 + 0.5 * density byte/weight (0.375 at 50%) -----------
//   A kept-bit per weight plus the kept nibbles, compacted. k_pad = round_up(K_in, 8). Each
//   row block has k_pad / 8 chunks of 16 rows x 8 columns, seen as two VNNI-order halves:
//   A = columns [8c, 8c + 4) and B = columns [8c + 4, 8c + 8), 64 positions each
//   (position p = 4*r + j).
//     masks[(b * k_pad / 8 + c) * 2 + 0] = bit p set if position p of A is kept (uint64)
//     masks[(b * k_pad / 8 + c) * 2 + 1] = same for B
//     values: chunk c of block b starts at data[block_offset[b] + sum of earlier chunk sizes];
//             size = max(popcount(A), popcount(B)) bytes; byte i holds the i-th kept value
//             of A (in position order) in its low nibble and the i-th kept value of B in its
//             high nibble; a side that has run out holds nibble 8 (code 0).
//   A kernel loads the chunk's bytes, splits the nibbles and expands each side into its 64
//   positions with the mask (AVX-512 VBMI2 vpexpandb). The max() costs about 4.5 nibbles per
//   chunk at 50% random density, ~0.018 byte/weight; a mask coded exactly (log2 C(64, 32)
//   bits per 64 weights) would save only 5% of the mask and cost a decoder.
//   data carries 64 bytes of zero padding at the end so a kernel may load 64 bytes from any
//   chunk start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace obr::simd {

enum class Int4Format : uint8_t { kDense = 0, kSparse24 = 1, kUnstructured = 2 };
const char* format_name(Int4Format f);  // "dense", "2:4", "unstructured"

constexpr int kRowBlock = 16;             // rows per block (int32 lanes of a 512-bit vector)
constexpr int kDenseChunkCols = 8;        // dense: a 64-byte chunk is 16 rows x 8 columns
constexpr int kSparse24ChunkCols = 32;    // 2:4: a 192-byte chunk is 16 rows x 32 columns
constexpr int kSparse24ChunkBytes = 192;  // 128 bytes of values + 64 bytes of indices
constexpr int kUnstructuredChunkCols = 8; // unstructured: two 64-position halves (A, B)
constexpr int kUnstructuredTailPad = 64;  // zero bytes after the last chunk's values

static_assert(kRowBlock * kDenseChunkCols / 2 == 64, "a dense chunk is one 64-byte line");
static_assert(kRowBlock * kSparse24ChunkCols / 2 / 2 + kRowBlock * kSparse24ChunkCols / 2 / 4 ==
                  kSparse24ChunkBytes,
              "2:4 chunk = kept nibbles (K/2 per row, 4 bits) + 2-bit indices");
static_assert(kRowBlock * 4 == 64, "a VNNI group (16 rows x 4 columns) is 64 bytes");

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// 64-byte aligned byte buffer with value semantics (copies are deep). Buffers of 4 MB or more
// are 2 MB aligned and advised into transparent huge pages. Capacity is kept when a buffer
// shrinks, so reassigning or resizing a buffer to a size it has held allocates nothing.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(size_t n) { resize(n); }
  AlignedBytes(const AlignedBytes& o) { *this = o; }
  AlignedBytes& operator=(const AlignedBytes& o);
  AlignedBytes(AlignedBytes&& o) noexcept { *this = std::move(o); }
  AlignedBytes& operator=(AlignedBytes&& o) noexcept {
    ptr_ = std::move(o.ptr_);
    size_ = o.size_;
    capacity_ = o.capacity_;
    o.size_ = o.capacity_ = 0;
    return *this;
  }

  void resize(size_t n);  // size n, contents zero
  // Scratch use: makes size() >= n, keeping the buffer if it is big enough; after a growth the
  // contents are unspecified (no zero fill, so reusing a buffer costs nothing).
  void grow(size_t n);
  uint8_t* data() { return ptr_.get(); }
  const uint8_t* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t[], Free> ptr_;
  size_t size_ = 0, capacity_ = 0;
};

// One packed weight matrix. Built by pack_int4, read by the kernels; plain data otherwise.
struct PackedWeights {
  Int4Format format = Int4Format::kDense;
  int64_t n_out = 0, k_in = 0;  // logical shape of W
  int64_t n_pad = 0, k_pad = 0;  // padded shape (see the layout notes above)
  std::vector<float> scale;      // [n_out] per-row scale sw
  std::vector<int32_t> row_sum;  // [n_pad] sum_k q[n, k]
  AlignedBytes data;             // the codes (and the 2:4 indices), layout per format
  std::vector<uint64_t> masks;   // kUnstructured: [n_pad / 16][k_pad / 8][2] kept bits
  std::vector<int64_t> block_offset;  // kUnstructured: [n_pad / 16 + 1] value offsets in data

  int64_t n_blocks() const { return n_pad / kRowBlock; }
  // Bytes a matrix-vector product reads: codes, indices, masks, offsets, scales, row sums
  // (the unstructured tail padding is not counted: it is never used).
  size_t bytes() const;
  double bytes_per_weight() const { return double(bytes()) / double(n_out * k_in); }
};

// Packs int8 codes q [n_out, k_in] (row-major, each in [-8, 7]) with per-row scales sw [n_out].
// keep [n_out, k_in] (optional, 0 = pruned): pruned positions are stored as the code 0
// (dense) or left out (sparse formats). Without keep, the sparse formats keep exactly the
// non-zero codes. kSparse24 throws obr::Error if a group of 4 has more than 2 kept positions.
PackedWeights pack_int4(Int4Format format, const int8_t* q, const float* sw, int64_t n_out,
                        int64_t k_in, const uint8_t* keep = nullptr);

// Padded shape of a format: n_pad = round_up(n_out, 16), k_pad = round_up(k_in, the format's
// column chunk). pack_int4 uses it; a reader of stored parts (below) too.
void padded_shape(Int4Format format, int64_t n_out, int64_t k_in, int64_t* n_pad, int64_t* k_pad);

// Checks a PackedWeights assembled from stored parts (a packed model file) before any kernel
// reads it: the format and shapes agree, every array has the size the layout implies, and for
// kUnstructured the block offsets equal the running sum of the chunk sizes given by the masks
// (so no kernel can read outside data), no mask bit marks a padding position, and data has its
// tail padding. Throws obr::Error naming `what` (e.g. the tensor) and the first mismatch.
void validate_packed(const PackedWeights& w, const std::string& what);

// Inverse of pack_int4: q [n_out, k_in] gets the codes (0 where pruned); keep_out
// [n_out, k_in] (optional) gets 1 at every stored position (for 2:4 this includes the explicit
// zeros that fill groups with fewer than 2 kept values).
void unpack_int4(const PackedWeights& w, int8_t* q, uint8_t* keep_out = nullptr);

// Row n of the codes, [k_in] int8, read straight from the packed bytes by plain scalar code:
// the definition of each layout that the reference kernels and unpack_int4 use.
void decode_row_ref(const PackedWeights& w, int64_t n, int8_t* q_row, uint8_t* keep_row = nullptr);

}  // namespace obr::simd
