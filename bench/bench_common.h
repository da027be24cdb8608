// Shared pieces of the benchmark programs in bench/: clock, median, interleaved runs, the run
// header (threads, where they are pinned, SIMD target, OpenBLAS core), and the machine's compute
// peaks measured by the program itself (one instruction in a loop, per thread).
//
// Peaks. Each probe runs, on every thread, 12 independent accumulator chains of one 512-bit
// instruction (12 chains hide a 4-cycle latency at 2 instructions per cycle) and counts
//   vpdpbusd zmm   64 u8 x s8 multiply-adds = 128 int8 ops per instruction (AVX-512 VNNI)
//   vfmadd231ps    16 f32 multiply-adds     =  32 flops per instruction
//   vdpbf16ps zmm  32 bf16 multiply-adds    =  64 flops per instruction (AVX-512 BF16)
// A probe whose instruction the CPU lacks reports 0. The probes are x86 only (elsewhere 0).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <sched.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/parallel.h"

namespace obr::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

inline double min_of(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

inline const char* env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v ? v : dflt;
}

// "2 threads, OMP_PLACES=cores OMP_PROC_BIND=close, thread->cpu 0->0 1->1": the CPU each
// OpenMP thread runs on, read inside a parallel region (pinned threads stay there).
std::string thread_placement();

// One timed probe: fn() is one repetition; returns seconds of each of `reps` repetitions
// after one warm-up.
std::vector<double> time_reps(const std::function<void()>& fn, int reps);

struct Peaks {
  double vnni_gops = 0;   // int8 ops/s (2 per multiply-add) / 1e9, all threads, median of reps
  double fma_gflops = 0;  // f32
  double bf16_gflops = 0;
};

// Runs the three probes on `threads` threads (about 0.1 s each per repetition).
Peaks measure_peaks(int threads, int reps);

// ---- inline implementations (one translation unit per benchmark program) -----------------

inline std::string thread_placement() {
  std::vector<int> cpu(size_t(num_threads()), -1);
#ifdef _OPENMP
#pragma omp parallel
  { cpu[size_t(omp_get_thread_num())] = sched_getcpu(); }
#endif
  std::string s = "thread->cpu";
  for (size_t t = 0; t < cpu.size(); ++t) s += " " + std::to_string(t) + "->" + std::to_string(cpu[t]);
  return s;
}

inline std::vector<double> time_reps(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> ts;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    fn();
    ts.push_back(now_s() - t0);
  }
  return ts;
}

namespace detail {
constexpr int kChains = 12;
constexpr int64_t kIters = 4'000'000;  // x 12 instructions: ~25 ms per thread at 2 per cycle

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512vnni"))) inline int64_t vnni_loop(int seed) {
  __m512i a = _mm512_set1_epi32(0x01010101 * (seed & 0x7f)), b = _mm512_set1_epi32(0x01020304);
  __m512i acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_epi32(j);
  for (int64_t i = 0; i < kIters; ++i) {
    asm volatile("" : "+v"(a));  // keeps the loop from being folded
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  for (int j = 1; j < kChains; ++j) acc[0] = _mm512_add_epi32(acc[0], acc[j]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, acc[0]);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx512f"))) inline int64_t fma_loop(int seed) {
  __m512 a = _mm512_set1_ps(1.0f + 1e-7f * float(seed)), b = _mm512_set1_ps(1e-9f);
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(float(j));
  for (int64_t i = 0; i < kIters; ++i) {
    asm volatile("" : "+v"(a));
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  for (int j = 1; j < kChains; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  return int64_t(lanes[0] + lanes[15]);
}

__attribute__((target("avx512f,avx512bf16"))) inline int64_t bf16_loop(int seed) {
  __m512bh a = (__m512bh)_mm512_set1_epi16(short(0x3f80 + (seed & 1))), b = (__m512bh)_mm512_set1_epi16(0x3000);
  __m512 acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = _mm512_set1_ps(float(j));
  for (int64_t i = 0; i < kIters; ++i) {
    asm volatile("" : "+v"(a));
    for (int j = 0; j < kChains; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  for (int j = 1; j < kChains; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  return int64_t(lanes[0] + lanes[15]);
}
#endif

}  // namespace detail

// The three probes, for running them one repetition at a time (interleaved with other work).
enum class Probe { kVnni, kFma, kBf16 };

inline bool probe_supported(Probe p) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  switch (p) {
    case Probe::kVnni: return __builtin_cpu_supports("avx512vnni");
    case Probe::kFma: return __builtin_cpu_supports("avx512f");
    case Probe::kBf16: return __builtin_cpu_supports("avx512bf16");
  }
#endif
  return false;
}

// Operations one run_probe performs (int8 ops or flops: 2 per multiply-add).
inline double probe_ops(Probe p, int threads) {
  const double per_instr = p == Probe::kVnni ? 128 : p == Probe::kFma ? 32 : 64;
  return double(threads) * double(detail::kIters) * detail::kChains * per_instr;
}

// One run of the probe on `threads` threads at once; returns a value to keep.
inline int64_t run_probe(Probe p, int threads) {
  int64_t sink = 0;
#if defined(__x86_64__)
  int64_t (*loop)(int) = p == Probe::kVnni ? detail::vnni_loop : p == Probe::kFma ? detail::fma_loop : detail::bf16_loop;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += loop(omp_get_thread_num());
#else
  sink += loop(0);
#endif
#endif
  return sink;
}

inline Peaks measure_peaks(int threads, int reps) {
  Peaks p;
  int64_t sink = 0;
  auto rate = [&](Probe pr) {
    if (!probe_supported(pr)) return 0.0;
    const auto ts = time_reps([&] { sink += run_probe(pr, threads); }, reps);
    return probe_ops(pr, threads) / median(ts) * 1e-9;
  };
  p.vnni_gops = rate(Probe::kVnni);
  p.fma_gflops = rate(Probe::kFma);
  p.bf16_gflops = rate(Probe::kBf16);
  if (sink == 42) std::printf(" ");  // uses the results
  return p;
}

}  // namespace obr::bench
