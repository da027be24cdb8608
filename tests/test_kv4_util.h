// Shared helpers of the KV4 tests (test_kv4_kernels.cpp: layout, quantization and kernels,
// simd-only so that they also run on aarch64 under qemu; test_kv4.cpp: attention and models).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "compress/quantizer.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "simd/cpu_info.h"
#include "simd/kv4_cache.h"
#include "simd/kv4_ref.h"

namespace obr::testing {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Buffers at deliberately odd addresses (4 bytes past a 64-byte boundary + offset).
template <class T>
struct Misaligned {
  std::vector<uint8_t> storage;
  T* p;
  Misaligned(size_t n, size_t byte_offset) : storage(n * sizeof(T) + 128) {
    const uintptr_t base = (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63);
    p = reinterpret_cast<T*>(base + byte_offset);
  }
};

// Rows x [T, cols] like real K/V rows: N(0, 1) with per-column spread, a few outliers, and
// special groups: group 1 of row 0 all zero, group 2 of row 1 constant.
inline void fill_rows(float* x, int64_t T, int64_t cols, int64_t group, uint64_t seed) {
  Rng rng(seed);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      float v = float(rng.normal()) * (0.5f + float(c % 7) * 0.3f);
      if (rng.below(61) == 0) v *= 12.0f;
      x[t * cols + c] = v;
    }
  const int64_t gpr = cols / group;
  if (gpr > 1) std::fill(x + group, x + 2 * group, 0.0f);
  if (T > 1 && gpr > 2) std::fill(x + cols + 2 * group, x + cols + 3 * group, 0.37f);
  if (T > 1 && gpr == 1) std::fill(x + cols, x + 2 * cols, 0.0f);
}

inline KVQuantSpec sim_spec(const simd::Kv4Quant& q) {
  KVQuantSpec s;
  s.bits = q.bits;
  s.clip = q.clip;
  s.sym = false;
  s.group = int(q.group);
  s.include_zero = q.include_zero;
  return s;
}

// A cache of `rows` rows, the first n written from random data.
inline simd::Kv4Matrix random_cache(int64_t rows, int64_t n, int64_t cols, int64_t hd, int64_t group, uint64_t seed) {
  simd::Kv4Matrix m = simd::kv4_allocate(rows, cols, hd, group);
  std::vector<float> x(size_t(n * cols));
  fill_rows(x.data(), n, cols, group, seed);
  simd::Kv4Quant q;
  q.group = group;
  simd::kv4_write_rows(m, 0, x.data(), n, q);
  return m;
}

inline std::string targets_list() {
  std::string s;
  for (const simd::SimdTarget& t : simd::runnable_targets()) s += (s.empty() ? "" : ", ") + t.name;
  return s;
}

struct RestoreThreads {
  int n = num_threads();
  ~RestoreThreads() { set_num_threads(n); }
};


}  // namespace obr::testing
