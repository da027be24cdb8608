// Which SIMD targets this binary carries and this CPU runs, and a way to force one (tests and
// benchmarks run every kernel on every target).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace obr::simd {

// Name of the best SIMD target this binary carries and this CPU supports, e.g. "AVX3_DL".
std::string best_target_name();

struct SimdTarget {
  int64_t id = 0;    // Highway's target bit (HWY_AVX3_DL, ...); 0 when built without Highway
  std::string name;  // "AVX3_DL", "AVX3", "AVX2", "SSE4", "SSSE3", "SCALAR"
};

// Every target compiled into obr_simd that this CPU can run, best first; never empty.
std::vector<SimdTarget> runnable_targets();

// While alive, the kernels dispatch to `target` only (Highway's SetSupportedTargetsForTest).
// For tests and benchmarks; not thread-safe, one at a time.
class ScopedTarget {
 public:
  explicit ScopedTarget(const SimdTarget& target);
  ~ScopedTarget();
  ScopedTarget(const ScopedTarget&) = delete;
  ScopedTarget& operator=(const ScopedTarget&) = delete;
};

}  // namespace obr::simd
