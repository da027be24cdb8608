// Pack / unpack for the INT4 formats; the layouts are written down in packed_format.h.
// Plain scalar code: packing runs once per weight, and decode_row_ref is the readable
// definition of each layout.
#include "simd/packed_format.h"

#include <algorithm>
#include <cmath>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "core/check.h"

namespace obr::simd {

namespace {

inline uint8_t nibble_of(int8_t q) { return uint8_t(q + 8); }      // excess-8
inline int8_t code_of(uint32_t nibble) { return int8_t(int(nibble & 15u) - 8); }

int popcount64(uint64_t x) { return __builtin_popcountll(x); }

void check_args(const int8_t* q, const float* sw, int64_t n_out, int64_t k_in) {
  OBR_CHECK(n_out > 0 && k_in > 0, "pack_int4: shape must be positive, got [", n_out, ", ",
            k_in, "]");
  OBR_CHECK(q != nullptr && sw != nullptr, "pack_int4: null codes or scales for shape [", n_out,
            ", ", k_in, "]");
  for (int64_t i = 0; i < n_out * k_in; ++i) {
    OBR_CHECK(q[i] >= -8 && q[i] <= 7, "pack_int4: code ", int(q[i]), " at [", i / k_in, ", ",
              i % k_in, "] is outside [-8, 7]");
  }
}

// The code at (n, k) that the format stores: 0 when pruned, when (n, k) is padding.
struct Source {
  const int8_t* q;
  const uint8_t* keep;
  int64_t n_out, k_in;
  int8_t code(int64_t n, int64_t k) const {
    if (n >= n_out || k >= k_in) return 0;
    if (keep && !keep[n * k_in + k]) return 0;
    return q[n * k_in + k];
  }
  bool kept(int64_t n, int64_t k) const {
    if (n >= n_out || k >= k_in) return false;
    return keep ? keep[n * k_in + k] != 0 : q[n * k_in + k] != 0;
  }
};

void pack_dense(const Source& src, PackedWeights& w) {
  const int64_t nchunks = w.k_pad / kDenseChunkCols;
  w.data.resize(size_t(w.n_pad * w.k_pad / 2));
  uint8_t* out = w.data.data();
  for (int64_t b = 0; b < w.n_blocks(); ++b) {
    for (int64_t c = 0; c < nchunks; ++c) {
      uint8_t* chunk = out + (b * nchunks + c) * 64;
      for (int r = 0; r < kRowBlock; ++r) {
        for (int j = 0; j < 4; ++j) {
          const int64_t n = b * kRowBlock + r, k = c * 8 + j;
          chunk[4 * r + j] = uint8_t(nibble_of(src.code(n, k)) | nibble_of(src.code(n, k + 4)) << 4);
        }
      }
    }
  }
}

// The two stored indices of group g of row n: the kept positions, then the lowest unused ones.
void sparse24_group(const Source& src, int64_t n, int64_t g, int idx[2]) {
  int count = 0;
  for (int i = 0; i < 4; ++i) {
    if (src.kept(n, 4 * g + i)) {
      OBR_CHECK(count < 2, "pack_int4(2:4): row ", n, " group ", g, " (columns ", 4 * g, "..",
                4 * g + 3, ") has more than 2 kept values");
      idx[count++] = i;
    }
  }
  for (int i = 0; count < 2; ++i) {  // fill with explicit zeros at the lowest unused indices
    if (count == 1 && idx[0] == i) continue;
    idx[count++] = i;
  }
  if (idx[0] > idx[1]) std::swap(idx[0], idx[1]);
}

void pack_sparse24(const Source& src, PackedWeights& w) {
  const int64_t nchunks = w.k_pad / kSparse24ChunkCols;
  const int64_t ngroups = w.k_pad / 4;
  w.data.resize(size_t(w.n_blocks() * nchunks * kSparse24ChunkBytes));
  uint8_t* out = w.data.data();
  std::vector<int> idx(size_t(ngroups * 2));  // the two stored indices of every group of a row
  for (int64_t b = 0; b < w.n_blocks(); ++b) {
    for (int r = 0; r < kRowBlock; ++r) {
      const int64_t n = b * kRowBlock + r;
      for (int64_t g = 0; g < ngroups; ++g) sparse24_group(src, n, g, &idx[size_t(2 * g)]);
      for (int64_t c = 0; c < nchunks; ++c) {
        uint8_t* chunk = out + (b * nchunks + c) * kSparse24ChunkBytes;
        for (int s = 0; s < 4; ++s) {
          for (int e = 0; e < 4; ++e) {
            const int64_t g = c * 8 + 2 * s + e / 2;  // group index in the row
            const int i = idx[size_t(2 * g + e % 2)];
            const uint8_t nib = nibble_of(src.code(n, 4 * g + i));
            uint8_t& vbyte = chunk[64 * (s / 2) + 4 * r + e];
            vbyte = uint8_t(vbyte | (s % 2 == 0 ? nib : nib << 4));
            uint8_t& ibyte = chunk[128 + 16 * s + 4 * (r % 4) + e];
            ibyte = uint8_t(ibyte | i << (2 * (r / 4)));
          }
        }
      }
    }
  }
}

void pack_unstructured(const Source& src, PackedWeights& w) {
  const int64_t nchunks = w.k_pad / kUnstructuredChunkCols;
  w.masks.assign(size_t(w.n_blocks() * nchunks * 2), 0);
  w.block_offset.assign(size_t(w.n_blocks() + 1), 0);
  // Pass 1: masks and sizes.
  int64_t total = 0;
  for (int64_t b = 0; b < w.n_blocks(); ++b) {
    w.block_offset[size_t(b)] = total;
    for (int64_t c = 0; c < nchunks; ++c) {
      uint64_t* m = &w.masks[size_t((b * nchunks + c) * 2)];
      for (int half = 0; half < 2; ++half) {
        for (int p = 0; p < 64; ++p) {
          const int64_t n = b * kRowBlock + p / 4, k = c * 8 + 4 * half + p % 4;
          if (src.kept(n, k)) m[half] |= uint64_t(1) << p;
        }
      }
      total += std::max(popcount64(m[0]), popcount64(m[1]));
    }
  }
  w.block_offset[size_t(w.n_blocks())] = total;
  // Pass 2: values.
  w.data.resize(size_t(total + kUnstructuredTailPad));
  uint8_t* out = w.data.data();
  for (int64_t b = 0; b < w.n_blocks(); ++b) {
    uint8_t* p_out = out + w.block_offset[size_t(b)];
    for (int64_t c = 0; c < nchunks; ++c) {
      const uint64_t* m = &w.masks[size_t((b * nchunks + c) * 2)];
      const int size = std::max(popcount64(m[0]), popcount64(m[1]));
      for (int i = 0; i < size; ++i) p_out[i] = 0x88;  // both sides: code 0 until filled
      for (int half = 0; half < 2; ++half) {
        int i = 0;
        for (int p = 0; p < 64; ++p) {
          if (!((m[half] >> p) & 1)) continue;
          const int64_t n = b * kRowBlock + p / 4, k = c * 8 + 4 * half + p % 4;
          const uint8_t nib = nibble_of(src.code(n, k));
          p_out[i] = half == 0 ? uint8_t((p_out[i] & 0xF0) | nib) : uint8_t((p_out[i] & 0x0F) | nib << 4);
          ++i;
        }
      }
      p_out += size;
    }
  }
}

}  // namespace

const char* format_name(Int4Format f) {
  switch (f) {
    case Int4Format::kDense: return "dense";
    case Int4Format::kSparse24: return "2:4";
    case Int4Format::kUnstructured: return "unstructured";
  }
  return "unknown";
}

namespace {

// 64-byte aligned; buffers of 4 MB or more are 2 MB aligned and asked to live in transparent
// huge pages (Linux), which saves page faults when they are filled and TLB misses when a
// matrix-vector product streams through gigabytes of weights.
uint8_t* allocate(size_t n) {
  constexpr size_t kHuge = size_t(2) << 20;
  const bool huge = n >= 2 * kHuge;
  const size_t align = huge ? kHuge : 64;
  const size_t alloc = (n + align - 1) / align * align;
  void* p = std::aligned_alloc(align, alloc);
  if (!p) throw std::bad_alloc();
#ifdef __linux__
  if (huge) madvise(p, alloc, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  return static_cast<uint8_t*>(p);
}

}  // namespace

void AlignedBytes::resize(size_t n) {
  if (n > capacity_) {
    ptr_.reset();
    size_ = capacity_ = 0;
    ptr_.reset(allocate(n));
    capacity_ = n;
  }
  size_ = n;
  if (n) std::memset(ptr_.get(), 0, n);
}

void AlignedBytes::grow(size_t n) {
  if (n > capacity_) {
    ptr_.reset();
    size_ = capacity_ = 0;
    ptr_.reset(allocate(n));
    capacity_ = n;
  }
  size_ = std::max(size_, n);
}

AlignedBytes& AlignedBytes::operator=(const AlignedBytes& o) {
  if (this == &o) return *this;
  if (o.size_ > capacity_) {
    ptr_.reset();
    size_ = capacity_ = 0;
    ptr_.reset(allocate(o.size_));
    capacity_ = o.size_;
  }
  size_ = o.size_;
  if (size_) std::memcpy(ptr_.get(), o.ptr_.get(), size_);
  return *this;
}

size_t PackedWeights::bytes() const {
  size_t b = data.size() + masks.size() * sizeof(uint64_t) + block_offset.size() * sizeof(int64_t) +
             scale.size() * sizeof(float) + row_sum.size() * sizeof(int32_t);
  if (format == Int4Format::kUnstructured) b -= kUnstructuredTailPad;
  return b;
}

void padded_shape(Int4Format format, int64_t n_out, int64_t k_in, int64_t* n_pad, int64_t* k_pad) {
  const int64_t chunk_cols = format == Int4Format::kDense      ? kDenseChunkCols
                             : format == Int4Format::kSparse24 ? kSparse24ChunkCols
                                                               : kUnstructuredChunkCols;
  *n_pad = round_up(n_out, kRowBlock);
  *k_pad = round_up(k_in, chunk_cols);
}

void validate_packed(const PackedWeights& w, const std::string& what) {
  OBR_CHECK(w.format == Int4Format::kDense || w.format == Int4Format::kSparse24 ||
                w.format == Int4Format::kUnstructured,
            what, ": unknown INT4 format ", int(w.format));
  OBR_CHECK(w.n_out > 0 && w.k_in > 0, what, ": shape [", w.n_out, ", ", w.k_in, "] must be positive");
  int64_t n_pad = 0, k_pad = 0;
  padded_shape(w.format, w.n_out, w.k_in, &n_pad, &k_pad);
  OBR_CHECK(w.n_pad == n_pad && w.k_pad == k_pad, what, ": padded shape [", w.n_pad, ", ", w.k_pad,
            "] does not match [", n_pad, ", ", k_pad, "] for ", format_name(w.format), " [", w.n_out,
            ", ", w.k_in, "]");
  OBR_CHECK(int64_t(w.scale.size()) == w.n_out, what, ": ", w.scale.size(), " scales for ", w.n_out,
            " rows");
  OBR_CHECK(int64_t(w.row_sum.size()) == w.n_pad, what, ": ", w.row_sum.size(), " row sums, expected ",
            w.n_pad);
  for (int64_t n = 0; n < w.n_out; ++n)
    OBR_CHECK(std::isfinite(w.scale[size_t(n)]), what, ": the scale of row ", n, " is ", w.scale[size_t(n)]);
  for (int64_t n = 0; n < w.n_pad; ++n) {
    const int64_t s = w.row_sum[size_t(n)];
    OBR_CHECK(s >= -8 * w.k_in && s <= 7 * w.k_in && (n < w.n_out || s == 0), what, ": row sum ", s,
              " of row ", n, " is impossible for ", w.k_in, " codes in [-8, 7]");
  }
  auto expect_size = [&](size_t got, size_t want, const char* part) {
    OBR_CHECK(got == want, what, ": ", part, " has ", got, " bytes, the ", format_name(w.format), " layout of [",
              w.n_out, ", ", w.k_in, "] needs ", want);
  };
  if (w.format == Int4Format::kDense) {
    expect_size(w.data.size(), size_t(n_pad * k_pad / 2), "code data");
    return;
  }
  if (w.format == Int4Format::kSparse24) {
    expect_size(w.data.size(), size_t(w.n_blocks() * (k_pad / kSparse24ChunkCols) * kSparse24ChunkBytes),
                "code data");
    return;
  }
  const int64_t nchunks = k_pad / kUnstructuredChunkCols;
  expect_size(w.masks.size() * 8, size_t(w.n_blocks() * nchunks * 2) * 8, "mask");
  expect_size(w.block_offset.size() * 8, size_t(w.n_blocks() + 1) * 8, "block offset table");
  int64_t total = 0;
  for (int64_t b = 0; b < w.n_blocks(); ++b) {
    OBR_CHECK(w.block_offset[size_t(b)] == total, what, ": block ", b, " starts at byte ",
              w.block_offset[size_t(b)], ", its masks put it at ", total);
    for (int64_t c = 0; c < nchunks; ++c) {
      const uint64_t* m = &w.masks[size_t((b * nchunks + c) * 2)];
      const bool edge = (b + 1) * kRowBlock > w.n_out || (c + 1) * 8 > w.k_in;  // holds padding
      for (int half = 0; edge && half < 2; ++half) {
        for (int p = 0; p < 64; ++p) {
          if (!(m[half] >> p & 1)) continue;
          const int64_t n = b * kRowBlock + p / 4, k = c * 8 + 4 * half + p % 4;
          OBR_CHECK(n < w.n_out && k < w.k_in, what, ": a mask bit marks the padding position [", n, ", ", k,
                    "] as kept");
        }
      }
      total += std::max(popcount64(m[0]), popcount64(m[1]));
    }
  }
  OBR_CHECK(w.block_offset[size_t(w.n_blocks())] == total, what, ": the block offset table ends at ",
            w.block_offset[size_t(w.n_blocks())], ", the masks sum to ", total);
  expect_size(w.data.size(), size_t(total + kUnstructuredTailPad), "code data (with its 64-byte tail)");
}

PackedWeights pack_int4(Int4Format format, const int8_t* q, const float* sw, int64_t n_out,
                        int64_t k_in, const uint8_t* keep) {
  check_args(q, sw, n_out, k_in);
  PackedWeights w;
  w.format = format;
  w.n_out = n_out;
  w.k_in = k_in;
  padded_shape(format, n_out, k_in, &w.n_pad, &w.k_pad);
  w.scale.assign(sw, sw + n_out);
  const Source src{q, keep, n_out, k_in};
  switch (format) {
    case Int4Format::kDense: pack_dense(src, w); break;
    case Int4Format::kSparse24: pack_sparse24(src, w); break;
    case Int4Format::kUnstructured: pack_unstructured(src, w); break;
    default: obr::fail("pack_int4: unknown format ", int(format));
  }
  w.row_sum.assign(size_t(w.n_pad), 0);
  for (int64_t n = 0; n < n_out; ++n) {
    int32_t s = 0;
    for (int64_t k = 0; k < k_in; ++k) s += src.code(n, k);
    w.row_sum[size_t(n)] = s;
  }
  return w;
}

void decode_row_ref(const PackedWeights& w, int64_t n, int8_t* q_row, uint8_t* keep_row) {
  OBR_CHECK(n >= 0 && n < w.n_out, "decode_row_ref: row ", n, " outside [0, ", w.n_out, ")");
  const int64_t b = n / kRowBlock;
  const int r = int(n % kRowBlock);
  const uint8_t* data = w.data.data();
  for (int64_t k = 0; k < w.k_in; ++k) {
    q_row[k] = 0;
    if (keep_row) keep_row[k] = 0;
  }
  switch (w.format) {
    case Int4Format::kDense: {
      const int64_t nchunks = w.k_pad / kDenseChunkCols;
      for (int64_t k = 0; k < w.k_in; ++k) {
        const int64_t c = k / 8;
        const int j = int(k % 8);
        const uint8_t byte = data[(b * nchunks + c) * 64 + 4 * r + j % 4];
        q_row[k] = code_of(j < 4 ? byte : byte >> 4);
        if (keep_row) keep_row[k] = 1;
      }
      break;
    }
    case Int4Format::kSparse24: {
      const int64_t nchunks = w.k_pad / kSparse24ChunkCols;
      for (int64_t c = 0; c < nchunks; ++c) {
        const uint8_t* chunk = data + (b * nchunks + c) * kSparse24ChunkBytes;
        for (int s = 0; s < 4; ++s) {
          for (int e = 0; e < 4; ++e) {
            const uint8_t vbyte = chunk[64 * (s / 2) + 4 * r + e];
            const int8_t code = code_of(s % 2 == 0 ? vbyte : vbyte >> 4);
            const int i = (chunk[128 + 16 * s + 4 * (r % 4) + e] >> (2 * (r / 4))) & 3;
            const int64_t k = c * 32 + 8 * s + 4 * (e / 2) + i;
            if (k < w.k_in) {
              q_row[k] = code;
              if (keep_row) keep_row[k] = 1;
            }
          }
        }
      }
      break;
    }
    case Int4Format::kUnstructured: {
      const int64_t nchunks = w.k_pad / kUnstructuredChunkCols;
      const uint8_t* p = data + w.block_offset[size_t(b)];
      for (int64_t c = 0; c < nchunks; ++c) {
        const uint64_t* m = &w.masks[size_t((b * nchunks + c) * 2)];
        for (int half = 0; half < 2; ++half) {
          int i = 0;  // kept values before this position
          for (int pos = 0; pos < 64; ++pos) {
            if (!((m[half] >> pos) & 1)) continue;
            if (pos / 4 == r) {
              const int64_t k = c * 8 + 4 * half + pos % 4;
              const int8_t code = code_of(half == 0 ? p[i] : p[i] >> 4);
              if (k < w.k_in) {
                q_row[k] = code;
                if (keep_row) keep_row[k] = 1;
              }
            }
            ++i;
          }
        }
        p += std::max(popcount64(m[0]), popcount64(m[1]));
      }
      break;
    }
  }
}

void unpack_int4(const PackedWeights& w, int8_t* q, uint8_t* keep_out) {
  for (int64_t n = 0; n < w.n_out; ++n) {
    decode_row_ref(w, n, q + n * w.k_in, keep_out ? keep_out + n * w.k_in : nullptr);
  }
}

}  // namespace obr::simd
