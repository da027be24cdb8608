// Fast integer kernels: same contracts as the scalar twins in kernels_ref.h, bit-identical
// results (int32 exactly, f32 bitwise) on every SIMD target and for every thread count.
//
// One binary carries every x86 target (AVX3_DL = AVX-512 + VNNI/VBMI2, AVX3, AVX2, SSE4, SSSE3,
// SCALAR) and picks the best one at run time (Highway dynamic dispatch; simd/cpu_info.h names
// it). The SCALAR target runs the reference kernels.
//
// How int4_matmul computes (per target, in simd/kernels-inl.h):
//   * x86 has an unsigned x signed byte dot product (vpdpbusd with VNNI, else vpmaddubsw +
//     vpmaddwd, both exact for these ranges). Activations become unsigned by adding 128
//     (qa ^ 0x80) and the weights stay signed, so the raw dot is acc + 128 * row_sum[n]; the
//     kernel subtracts the precomputed 128 * row_sum[n] (exact int32). Other targets multiply
//     signed x signed and need no correction.
//   * T <= 4 (decode): one pass over the packed weights, streaming (memory bound): the nibbles
//     are unpacked in registers; 2:4 gathers the kept activations with a byte shuffle of an
//     8-byte activation window; unstructured expands the compacted nibbles with vpexpandb
//     (AVX-512 VBMI2) or a table-driven byte shuffle.
//   * T > 4 (prefill): weights are decoded once per 32-row panel into int8 (2:4: kept values +
//     shuffle indices) in a per-thread buffer, then a register-blocked micro-kernel runs over
//     tokens: dense and unstructured do every MAC; 2:4 does half of them (shuffle + dot on the
//     kept positions only).
//   * Threads (OpenMP) split output row blocks (and token blocks for T > 4); each output is
//     computed by one thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "simd/packed_format.h"

namespace obr::simd {

// See quantize_act_rows_i8_ref. Rows in parallel.
void quantize_act_rows_i8(const float* x, int64_t T, int64_t K, int bits, float clip, int8_t* q,
                          float* scale);

// See int4_matmul_ref. qa [T, W.k_in] row-major (any alignment), sa [T], y [T, W.n_out],
// acc_out [T, W.n_out] optional, bias [W.n_out] optional.
void int4_matmul(const PackedWeights& W, const int8_t* qa, const float* sa, int64_t T, float* y,
                 int32_t* acc_out = nullptr, const float* bias = nullptr);

// Sum of a byte buffer as uint64 words (n_bytes a multiple of 8), OpenMP over chunks: a plain
// streaming read for measuring memory bandwidth in the benchmarks.
uint64_t sum_u64_parallel(const void* data, size_t n_bytes);

}  // namespace obr::simd
