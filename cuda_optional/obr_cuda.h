// Optional CUDA kernels for W4A4 inference: the GPU twins of simd/kernels_ref.h and of the
// Hadamard transforms in src/compress/hadamard.h, with the same contracts, bit for bit
// (int32 accumulators exactly, every f32 result bitwise). cuda_optional/README.md has the
// design; cuda_optional/oracle_test.cu checks the bit-exactness against the CPU.
//
// What runs where:
//   quantize_act_rows_cuda   per-token symmetric quantization (quantize_act_rows_i8_ref)
//   int4_matmul_cuda         y [T, N] = (float(qa x W^T) * sa) * sw (+ bias), W dense or 2:4:
//                              dense: mma.sync m16n8k64 .s4.s4.s32 (INT4 x INT4 tensor cores;
//                                     on sm_90 widened to .s8 in registers, see DenseMma)
//                              2:4:   mma.sp::ordered_metadata m16n8k64 .s8.s8.s32 with the
//                                     INT4 codes widened to int8 (see "Why s8 for 2:4" below)
//   hadamard_transform_rows_cuda, hadamard_across_heads_cuda   QuaRot's online transforms
//
// Why s8 for 2:4. PTX defines mma.sp for 4-bit operands (.s4/.u4, m16n8k64 / m16n8k128) with
// its sparsity granularity on PAIRS of consecutive elements: in every 8 elements, 2 of the 4
// aligned pairs are kept ("Sparse matrix storage", PTX ISA 9.7.14.6.1). OBR's 2:4 mask is per
// element (any 2 of every 4 columns), which the 4-bit form cannot express. The 8-bit form
// (m16n8k64 .s8) is element-wise 2:4, so the kept INT4 codes are stored sign-extended to int8
// (still 2:4 compressed: half the columns, one 2-bit index per kept value) and the A4
// activation codes are fed as int8. The result is the same exact integer dot product.
//
// Memory: every pointer argument named d_* is device memory. Functions are asynchronous on
// `stream` unless they say otherwise; errors (bad arguments, CUDA errors) throw obr::Error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime.h>

namespace obr::simd {
struct PackedWeights;
}

namespace obr::cuda {

// Tile sizes of the GEMM kernels. Buffers are padded to them so that the kernels need no
// bounds checks in the main loop.
constexpr int kTileN = 128;  // weight rows (output channels) per thread block
constexpr int kTileT = 128;  // tokens per thread block
constexpr int kTileK = 128;  // reduction columns per pipeline stage

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Number of CUDA devices (0 when there is no driver or no GPU; never throws).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for device `dev`.
std::string device_description(int dev = 0);

// ---- Weights ------------------------------------------------------------------------------
// A weight matrix W [n_out, k_in] of INT4 codes q in [-8, 7] with per-row scales sw, in the
// GPU layout (device memory; the CPU packed format of simd/packed_format.h is re-laid out).
//
// Layout, both formats. Rows are padded to n_pad = round_up(n_out, kTileN), columns to
// k_pad = round_up(k_in, kTileK), pad codes 0. The matrix is cut into tiles of 16 rows x 64
// columns, tile (mt, kt) at byte offset (mt * (k_pad / 64) + kt) * 512, and inside a tile
// lane L of a warp finds its 16-byte mma A fragment at L * 16: registers r0..r3 with
//   g = L / 4, c = L % 4:   r0 = row g, r1 = row g + 8, r2 = row g (+32 cols), r3 = row g + 8 (+32)
//   dense (.s4):  register = 8 columns [8c, 8c + 8) (+32 for r2, r3), two's complement nibbles,
//                 column 8c + i in bits [4i, 4i + 4)  (PTX "m16n8k64 fragment layout for A").
//   2:4 (.s8):    register = the 4 kept int8 values of the 2 groups of 4 columns [8c, 8c + 8)
//                 (+32 for r2, r3), group order, then index order (PTX sparse m16n8k64 .s8).
// 2:4 metadata: per tile 32 lanes x uint32 at (mt * (k_pad / 64) + kt) * 128 + L * 4; lane L
// (g = L / 4, c = L % 4) holds the 8 groups [8 (c / 2), 8 (c / 2) + 8) of row g + 8 (c % 2):
// group 8 (c / 2) + j in bits [4j, 4j + 4) as the code i0 | i1 << 2 (i0 < i1, the kept
// indices; groups of 4 columns numbered 0..15 inside the tile). So every lane supplies
// metadata (sparsity selector 0), one row per lane. (Measured with the probe in
// oracle_test.cu on an H100; PTX ISA documents it only as a figure.) The codes are the
// CPU format's codes (packed_format.h: 0x4, 0x8, 0x9, 0xC, 0xD, 0xE), placed for the PTX
// thread/row interleave; pad groups use 0x4 (indices 0, 1, values 0).
enum class WeightFormat { kDense, kSparse24 };

struct CudaWeights {
  WeightFormat format = WeightFormat::kDense;
  int64_t n_out = 0, k_in = 0, n_pad = 0, k_pad = 0;
  void* d_codes = nullptr;    // fragments (layout above)
  uint32_t* d_meta = nullptr; // 2:4 only
  float* d_scale = nullptr;   // [n_out]

  CudaWeights() = default;
  CudaWeights(const CudaWeights&) = delete;
  CudaWeights& operator=(const CudaWeights&) = delete;
  CudaWeights(CudaWeights&& o) noexcept { *this = std::move(o); }
  CudaWeights& operator=(CudaWeights&& o) noexcept;
  ~CudaWeights();
  size_t code_bytes() const;  // bytes of d_codes + d_meta
};

// Host-side re-layout (plain C++, no GPU needed): the fragment bytes and metadata that
// upload_weights copies to the device. q [n_out, k_in] int8 codes in [-8, 7]; keep
// (optional, 0 = pruned) as in pack_int4. 2:4: every group of 4 columns may keep at most 2
// positions (keep, or non-zero codes without keep); groups with fewer are filled with zeros
// at their lowest free indices, as pack_int4 does. Throws obr::Error naming the row and group.
void layout_weights_host(WeightFormat format, const int8_t* q, int64_t n_out, int64_t k_in,
                         const uint8_t* keep, std::vector<uint8_t>& codes,
                         std::vector<uint32_t>& meta);

// Lays out and uploads (synchronous).
CudaWeights upload_weights(WeightFormat format, const int8_t* q, const float* sw, int64_t n_out,
                           int64_t k_in, const uint8_t* keep = nullptr);
// From the CPU packed format (dense or 2:4; unstructured is not supported on the GPU).
CudaWeights upload_weights(const obr::simd::PackedWeights& w);

// ---- Activations --------------------------------------------------------------------------
// Activation codes of T tokens in the GEMM's layout: row-major [t_pad, k_pad] with
// t_pad = round_up(T, kTileT), k_pad = round_up(K, kTileK), pad codes 0; as two's
// complement nibbles (dense, .s4: 2 codes a byte, column 2i in the low nibble of byte i) or
// as int8 (2:4, .s8). Codes must be in [-8, 7] for the .s4 layout.
struct CudaActs {
  WeightFormat format = WeightFormat::kDense;  // which GEMM the layout is for
  int64_t T = 0, K = 0, t_pad = 0, k_pad = 0;
  uint8_t* d_codes = nullptr;
  float* d_scale = nullptr;  // [T] per-token scales sa
  size_t capacity = 0;       // bytes allocated at d_codes
  int64_t scale_capacity = 0;

  CudaActs() = default;
  CudaActs(const CudaActs&) = delete;
  CudaActs& operator=(const CudaActs&) = delete;
  ~CudaActs();
  // Shapes the buffers for T x K (reusing them when large enough) and zeroes the pad rows.
  void resize(WeightFormat f, int64_t T, int64_t K, cudaStream_t stream = nullptr);
  size_t row_bytes() const { return format == WeightFormat::kDense ? size_t(k_pad / 2) : size_t(k_pad); }
};

// Per-token quantization of d_x [T, K] (f32, row-major), exactly quantize_act_rows_i8_ref:
//   s = max(|min(x, 0)|, max(x, 0)) * clip / hi (1 if 0), q = clamp(rint(x / s), lo, hi)
// into acts (resized for its format; bits must be <= 4 for the dense .s4 layout).
// d_q_out [T, K] int8 (optional) also receives the codes in the CPU's plain layout.
// Throws obr::Error if x holds a NaN or infinity (checked after the kernel: synchronous).
void quantize_act_rows_cuda(const float* d_x, int64_t T, int64_t K, int bits, float clip,
                            CudaActs& acts, int8_t* d_q_out = nullptr, cudaStream_t stream = nullptr);

// Uploads CPU-made codes qa [T, K] and scales sa [T] into acts (for tests; synchronous).
void upload_acts(WeightFormat f, const int8_t* qa, const float* sa, int64_t T, int64_t K, CudaActs& acts);

// ---- GEMM ---------------------------------------------------------------------------------
// Which tensor-core instruction the dense GEMM uses (same packed .s4 bytes, same exact result):
//   kS4         mma.sync m16n8k64 .s4.s4.s32: native INT4 on sm_80 (A100); on sm_90 (H100)
//               ptxas accepts it but there is no INT4 tensor-core path (measured 9x slower
//               than kS8Widened on an H100, README.md);
//   kS8Widened  the .s4 fragments sign-extended to .s8 in registers, mma.sync m16n8k32 .s8;
//   kAuto       kS8Widened on compute capability >= 9.0, else kS4.
enum class DenseMma { kAuto, kS4, kS8Widened };
DenseMma resolve_dense_mma(DenseMma m);  // kAuto -> the choice for the current device

// d_y [T, n_out] = (float(acc) * sa[t]) * sw[n] (+ d_bias[n]), acc = sum_k qa[t, k] q[n, k],
// every f32 operation rounded on its own (no FMA), as int4_matmul_ref. d_acc [T, n_out]
// (optional) receives acc. acts must have been made for W's format and K = W.k_in.
void int4_matmul_cuda(const CudaWeights& W, const CudaActs& acts, float* d_y,
                      int32_t* d_acc = nullptr, const float* d_bias = nullptr,
                      cudaStream_t stream = nullptr, DenseMma dense_mma = DenseMma::kAuto);

// ---- Hadamard transforms ------------------------------------------------------------------
// The K x K base matrix H_K (+1/-1, row-major) of a transform length, on the device. Made once
// per K from the host copy the caller passes (obr::hadamard_base(K) on the CPU side).
struct CudaHadamard {
  int64_t n = 0;  // transform length, n = K * 2^m
  int K = 1;
  float scale = 1.0f;      // float(1 / sqrt(double(n))), as the CPU computes it
  int8_t* d_hk = nullptr;  // H_K transposed (row a = column a of H_K), K*K signs; null for K = 1

  CudaHadamard() = default;
  CudaHadamard(const CudaHadamard&) = delete;
  CudaHadamard& operator=(const CudaHadamard&) = delete;
  ~CudaHadamard();
};
// h_base: H_K as K*K floats (+1/-1, row-major), nullptr when K == 1. n / K must be a power of two.
void make_hadamard(int64_t n, int K, const float* h_base, CudaHadamard& out);

// In place, each of `rows` rows of d_X [rows, n]: x <- x H_n / sqrt(n) (hadamard_transform_rows),
// in the CPU's exact order of float operations.
void hadamard_transform_rows_cuda(float* d_X, int64_t rows, const CudaHadamard& H,
                                  cudaStream_t stream = nullptr);
// d_X [rows, n_heads * head_dim]: the transform across heads (hadamard_across_heads), H.n = n_heads.
void hadamard_across_heads_cuda(float* d_X, int64_t rows, int64_t head_dim, const CudaHadamard& H,
                                cudaStream_t stream = nullptr);

}  // namespace obr::cuda
