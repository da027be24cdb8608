// Threading policy: OpenMP, static schedule, and threads only ever split independent
// outputs (rows, column blocks). No reduction crosses threads, so every result is
// bit-identical for any thread count.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace obr {

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Calls f(i) for i in [0, n), split across threads in contiguous static chunks.
template <class F>
void parallel_for(int64_t n, F&& f) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n > 1)
  for (int64_t i = 0; i < n; ++i) f(i);
#else
  for (int64_t i = 0; i < n; ++i) f(i);
#endif
}

// Same, with dynamic scheduling for uneven work (each i still writes its own outputs).
template <class F>
void parallel_for_dynamic(int64_t n, F&& f) {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int64_t i = 0; i < n; ++i) f(i);
#else
  for (int64_t i = 0; i < n; ++i) f(i);
#endif
}

}  // namespace obr
