// CUDA kernels of obr_cuda.h: per-token activation quantization, INT4 dense and 2:4 GEMMs on
// tensor cores, Hadamard transforms. Every f32 operation that the CPU contract fixes is written
// with an explicit rounding intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn), so that the compiler
// cannot fuse it into an FMA: results are bitwise those of the CPU references.
#include "obr_cuda.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "core/check.h"
#include "simd/packed_format.h"

#define OBR_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess)                                                          \
      ::obr::fail("CUDA error in ", #call, ": ", cudaGetErrorString(err_), " (", \
                  __FILE__, ":", __LINE__, ")");                                      \
  } while (0)

namespace obr::cuda {

// ============================================================================================
// Device info
// ============================================================================================

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string device_description(int dev) {
  cudaDeviceProp p{};
  OBR_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return detail::concat(p.name, " (sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs)");
}

// ============================================================================================
// Weights: host re-layout and upload
// ============================================================================================

namespace {

constexpr int kTileBytes = 512;  // one 16 x 64 fragment tile: 32 lanes x 16 bytes
constexpr int kMetaTileWords = 32;

// Byte offset of (row r, column kk) of a 16 x 64 tile's A fragments, for the byte that holds
// the column: dense (.s4, two columns a byte) or 2:4 compressed position (.s8, one a byte).
//   lane = (r % 8) * 4 + c, register = (kk >= 32) * 2 + (r >= 8), c = (kk % 32) / 8.
int dense_frag_byte(int r, int kk) {
  const int g = r % 8, hi_row = r / 8, half = kk / 32, c = (kk % 32) / 8, i = kk % 8;
  return (g * 4 + c) * 16 + (half * 2 + hi_row) * 4 + i / 2;
}
// Group gl (0..15) of a tile, kept value e (0, 1) of row r.
int sparse_frag_byte(int r, int gl, int e) {
  const int g = r % 8, hi_row = r / 8, half = gl / 8, c = (gl % 8) / 2;
  return (g * 4 + c) * 16 + (half * 2 + hi_row) * 4 + (gl % 2) * 2 + e;
}
// Metadata word (lane) and bit of group gl of row r: lane 4g + c holds the 8 groups
// [8 (c / 2), 8 (c / 2) + 8) of row g + 8 (c % 2), group j of them in bits [4j, 4j + 4).
void sparse_meta_pos(int r, int gl, int& lane, int& bit) {
  lane = (r % 8) * 4 + (gl / 8) * 2 + r / 8;
  bit = (gl % 8) * 4;
}

}  // namespace

void layout_weights_host(WeightFormat format, const int8_t* q, int64_t n_out, int64_t k_in,
                         const uint8_t* keep, std::vector<uint8_t>& codes,
                         std::vector<uint32_t>& meta) {
  OBR_CHECK(n_out > 0 && k_in > 0, "layout_weights_host: bad shape [", n_out, ", ", k_in, "]");
  const int64_t n_pad = round_up(n_out, kTileN), k_pad = round_up(k_in, kTileK);
  const int64_t KT = k_pad / 64;
  auto code_at = [&](int64_t n, int64_t k) -> int {
    const int8_t v = q[n * k_in + k];
    OBR_CHECK(v >= -8 && v <= 7, "layout_weights_host: code q[", n, ", ", k, "] = ", int(v),
              " is outside [-8, 7]");
    return (keep && !keep[n * k_in + k]) ? 0 : v;
  };
  codes.assign(size_t(n_pad / 16 * KT) * kTileBytes, 0);
  meta.clear();
  if (format == WeightFormat::kDense) {
    for (int64_t n = 0; n < n_out; ++n)
      for (int64_t k = 0; k < k_in; ++k) {
        const int v = code_at(n, k);
        const int64_t tile = (n / 16) * KT + k / 64;
        uint8_t& b = codes[size_t(tile * kTileBytes + dense_frag_byte(int(n % 16), int(k % 64)))];
        b = uint8_t(b | ((uint32_t(v) & 0xF) << (4 * (k % 2))));  // two's complement nibble
      }
    return;
  }
  meta.assign(size_t(n_pad / 16 * KT) * kMetaTileWords, 0);
  for (int64_t n = 0; n < n_pad; ++n)
    for (int64_t grp = 0; grp < k_pad / 4; ++grp) {
      int idx[2] = {0, 1}, val[2] = {0, 0}, kept = 0;
      if (n < n_out) {
        bool used[4] = {false, false, false, false};
        for (int j = 0; j < 4; ++j) {
          const int64_t k = grp * 4 + j;
          if (k >= k_in) continue;  // pad columns are pruned
          const bool is_kept = keep ? keep[n * k_in + k] != 0 : q[n * k_in + k] != 0;
          if (!is_kept) continue;
          OBR_CHECK(kept < 2, "layout_weights_host: 2:4 weights keep more than 2 of the 4 columns [",
                    grp * 4, ", ", grp * 4 + 4, ") in row ", n);
          idx[kept] = j;
          val[kept] = code_at(n, k);
          used[j] = true;
          ++kept;
        }
        // Fewer than 2 kept: explicit zeros at the lowest free indices (as pack_int4).
        for (int j = 0; j < 4 && kept < 2; ++j)
          if (!used[j]) {
            used[j] = true;
            idx[kept] = j;
            val[kept] = 0;
            ++kept;
          }
        if (idx[0] > idx[1]) {
          std::swap(idx[0], idx[1]);
          std::swap(val[0], val[1]);
        }
      }
      const int r = int(n % 16), gl = int(grp % 16);
      const int64_t tile = (n / 16) * KT + grp / 16;
      for (int e = 0; e < 2; ++e)
        codes[size_t(tile * kTileBytes + sparse_frag_byte(r, gl, e))] = uint8_t(int8_t(val[e]));
      int lane, bit;
      sparse_meta_pos(r, gl, lane, bit);
      meta[size_t(tile * kMetaTileWords + lane)] |= uint32_t(idx[0] | (idx[1] << 2)) << bit;
    }
}

CudaWeights& CudaWeights::operator=(CudaWeights&& o) noexcept {
  std::swap(format, o.format);
  std::swap(n_out, o.n_out);
  std::swap(k_in, o.k_in);
  std::swap(n_pad, o.n_pad);
  std::swap(k_pad, o.k_pad);
  std::swap(d_codes, o.d_codes);
  std::swap(d_meta, o.d_meta);
  std::swap(d_scale, o.d_scale);
  return *this;
}

CudaWeights::~CudaWeights() {
  cudaFree(d_codes);
  cudaFree(d_meta);
  cudaFree(d_scale);
}

size_t CudaWeights::code_bytes() const {
  const size_t tiles = size_t(n_pad / 16) * size_t(k_pad / 64);
  return tiles * kTileBytes + (format == WeightFormat::kSparse24 ? tiles * kMetaTileWords * 4 : 0);
}

CudaWeights upload_weights(WeightFormat format, const int8_t* q, const float* sw, int64_t n_out,
                           int64_t k_in, const uint8_t* keep) {
  std::vector<uint8_t> codes;
  std::vector<uint32_t> meta;
  layout_weights_host(format, q, n_out, k_in, keep, codes, meta);
  CudaWeights W;
  W.format = format;
  W.n_out = n_out;
  W.k_in = k_in;
  W.n_pad = round_up(n_out, kTileN);
  W.k_pad = round_up(k_in, kTileK);
  OBR_CUDA_CHECK(cudaMalloc(&W.d_codes, codes.size()));
  OBR_CUDA_CHECK(cudaMemcpy(W.d_codes, codes.data(), codes.size(), cudaMemcpyHostToDevice));
  if (!meta.empty()) {
    OBR_CUDA_CHECK(cudaMalloc(&W.d_meta, meta.size() * 4));
    OBR_CUDA_CHECK(cudaMemcpy(W.d_meta, meta.data(), meta.size() * 4, cudaMemcpyHostToDevice));
  }
  OBR_CUDA_CHECK(cudaMalloc(&W.d_scale, size_t(n_out) * 4));
  OBR_CUDA_CHECK(cudaMemcpy(W.d_scale, sw, size_t(n_out) * 4, cudaMemcpyHostToDevice));
  return W;
}

CudaWeights upload_weights(const obr::simd::PackedWeights& w) {
  using obr::simd::Int4Format;
  OBR_CHECK(w.format == Int4Format::kDense || w.format == Int4Format::kSparse24,
            "upload_weights: the GPU kernels take dense or 2:4 weights, not ",
            obr::simd::format_name(w.format));
  std::vector<int8_t> q(size_t(w.n_out * w.k_in));
  std::vector<uint8_t> keep(q.size());
  obr::simd::unpack_int4(w, q.data(), keep.data());
  return upload_weights(w.format == Int4Format::kDense ? WeightFormat::kDense : WeightFormat::kSparse24,
                        q.data(), w.scale.data(), w.n_out, w.k_in, keep.data());
}

// ============================================================================================
// Activations
// ============================================================================================

CudaActs::~CudaActs() {
  cudaFree(d_codes);
  cudaFree(d_scale);
}

void CudaActs::resize(WeightFormat f, int64_t T_, int64_t K_, cudaStream_t stream) {
  OBR_CHECK(T_ >= 1 && K_ >= 1, "CudaActs::resize: bad shape [", T_, ", ", K_, "]");
  format = f;
  T = T_;
  K = K_;
  t_pad = round_up(T, kTileT);
  k_pad = round_up(K, kTileK);
  const size_t bytes = size_t(t_pad) * row_bytes();
  if (bytes > capacity) {
    cudaFree(d_codes);
    d_codes = nullptr;
    OBR_CUDA_CHECK(cudaMalloc(&d_codes, bytes));
    capacity = bytes;
  }
  if (T > scale_capacity) {
    cudaFree(d_scale);
    d_scale = nullptr;
    OBR_CUDA_CHECK(cudaMalloc(&d_scale, size_t(T) * 4));
    scale_capacity = T;
  }
  // Pad rows hold the code 0 (the kernels read them; their outputs are not stored).
  if (t_pad > T)
    OBR_CUDA_CHECK(cudaMemsetAsync(d_codes + size_t(T) * row_bytes(), 0,
                                   size_t(t_pad - T) * row_bytes(), stream));
}

namespace {

constexpr int kQuantThreads = 256;

// One block per token row t:
//   pass 1: xmin = min(x, 0), xmax = max(x, 0) and a finiteness check (min / max are exact,
//           so the order of the reduction does not matter);
//   pass 2: codes of 8 columns per thread and step, written as one 32-bit word of nibbles
//           (kS4) or two of int8, pad columns [K, k_pad) as 0.
template <bool kS4>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_rows_kernel(const float* __restrict__ x, int K, int k_pad, float lo, float hi,
                         float clip, uint8_t* __restrict__ codes, size_t row_bytes,
                         float* __restrict__ scale, int8_t* __restrict__ q_out, int* bad_row) {
  __shared__ float s_min[kQuantThreads / 32], s_max[kQuantThreads / 32];
  __shared__ float s_scale;
  const int t = blockIdx.x;
  const float* xt = x + size_t(t) * K;
  float mn = 0.0f, mx = 0.0f;
  bool finite = true;
  for (int k = threadIdx.x; k < K; k += kQuantThreads) {
    const float v = xt[k];
    finite = finite && isfinite(v);
    mn = fminf(mn, v);
    mx = fmaxf(mx, v);
  }
  if (__syncthreads_or(!finite) && threadIdx.x == 0) atomicMin(bad_row, t);
  for (int o = 16; o > 0; o /= 2) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s_min[warp] = mn;
    s_max[warp] = mx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kQuantThreads / 32; ++w) {
      mn = fminf(mn, s_min[w]);
      mx = fmaxf(mx, s_max[w]);
    }
    // scale = max(-xmin, xmax) * clip / hi, in that order (kernels_ref.cc).
    float s = __fdiv_rn(__fmul_rn(fmaxf(-mn, mx), clip), hi);
    if (s == 0.0f) s = 1.0f;
    s_scale = s;
    scale[t] = s;
  }
  __syncthreads();
  const float s = s_scale;
  uint8_t* row = codes + size_t(t) * row_bytes;
  for (int u = threadIdx.x; u < k_pad / 8; u += kQuantThreads) {
    uint32_t w[2] = {0, 0};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int k = u * 8 + e;
      int code = 0;
      if (k < K) {
        const float v = rintf(__fdiv_rn(xt[k], s));  // round half to even, as nearbyint
        code = int(fminf(fmaxf(v, lo), hi));
        if (q_out) q_out[size_t(t) * K + k] = int8_t(code);
      }
      if (kS4)
        w[0] |= (uint32_t(code) & 0xFu) << (4 * e);
      else
        w[e / 4] |= (uint32_t(code) & 0xFFu) << (8 * (e % 4));
    }
    if (kS4)
      reinterpret_cast<uint32_t*>(row)[u] = w[0];
    else
      reinterpret_cast<uint2*>(row)[u] = make_uint2(w[0], w[1]);
  }
}

}  // namespace

void quantize_act_rows_cuda(const float* d_x, int64_t T, int64_t K, int bits, float clip,
                            CudaActs& acts, int8_t* d_q_out, cudaStream_t stream) {
  OBR_CHECK(T >= 1 && K >= 1 && K <= (int64_t(1) << 20),
            "quantize_act_rows_cuda: bad shape [", T, ", ", K, "]");
  OBR_CHECK(bits >= 2 && bits <= 8, "quantize_act_rows_cuda: bits must be in [2, 8], got ", bits);
  OBR_CHECK(clip > 0.0f && clip <= 1.0f, "quantize_act_rows_cuda: clip must be in (0, 1], got ", clip);
  OBR_CHECK(acts.format != WeightFormat::kDense || bits <= 4,
            "quantize_act_rows_cuda: the dense INT4 GEMM takes 4-bit activation codes, got bits = ", bits);
  OBR_CHECK(T <= 0x7fffffff, "quantize_act_rows_cuda: T = ", T, " is too large");
  acts.resize(acts.format, T, K, stream);
  const float hi = float((1 << (bits - 1)) - 1), lo = -hi - 1.0f;
  int* d_bad = nullptr;
  OBR_CUDA_CHECK(cudaMalloc(&d_bad, sizeof(int)));
  const int none = 0x7fffffff;
  OBR_CUDA_CHECK(cudaMemcpyAsync(d_bad, &none, sizeof(int), cudaMemcpyHostToDevice, stream));
  if (acts.format == WeightFormat::kDense)
    quantize_rows_kernel<true><<<unsigned(T), kQuantThreads, 0, stream>>>(
        d_x, int(K), int(acts.k_pad), lo, hi, clip, acts.d_codes, acts.row_bytes(), acts.d_scale,
        d_q_out, d_bad);
  else
    quantize_rows_kernel<false><<<unsigned(T), kQuantThreads, 0, stream>>>(
        d_x, int(K), int(acts.k_pad), lo, hi, clip, acts.d_codes, acts.row_bytes(), acts.d_scale,
        d_q_out, d_bad);
  OBR_CUDA_CHECK(cudaGetLastError());
  int bad = none;
  OBR_CUDA_CHECK(cudaMemcpyAsync(&bad, d_bad, sizeof(int), cudaMemcpyDeviceToHost, stream));
  OBR_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaFree(d_bad);
  OBR_CHECK(bad == none, "quantize_act_rows_cuda: row ", bad, " of x holds a NaN or an infinity");
}

void upload_acts(WeightFormat f, const int8_t* qa, const float* sa, int64_t T, int64_t K, CudaActs& acts) {
  acts.resize(f, T, K);
  std::vector<uint8_t> buf(size_t(acts.t_pad) * acts.row_bytes(), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int8_t v = qa[t * K + k];
      uint8_t* row = buf.data() + size_t(t) * acts.row_bytes();
      if (f == WeightFormat::kDense) {
        OBR_CHECK(v >= -8 && v <= 7, "upload_acts: the dense INT4 GEMM takes codes in [-8, 7], qa[",
                  t, ", ", k, "] = ", int(v));
        row[k / 2] = uint8_t(row[k / 2] | ((uint32_t(v) & 0xF) << (4 * (k % 2))));
      } else {
        row[k] = uint8_t(v);
      }
    }
  OBR_CUDA_CHECK(cudaMemcpy(acts.d_codes, buf.data(), buf.size(), cudaMemcpyHostToDevice));
  OBR_CUDA_CHECK(cudaMemcpy(acts.d_scale, sa, size_t(T) * 4, cudaMemcpyHostToDevice));
}

// ============================================================================================
// GEMM
// ============================================================================================
//
// Block tile: 128 weight rows (M of the mma, the sparse operand A = W) x 128 tokens (N of the
// mma, B = activations), 8 warps as 2 (rows) x 4 (tokens), each warp 64 rows x 32 tokens =
// 4 x 4 mma tiles of 16 x 8. The reduction runs in stages of 128 columns (2 mma k-steps of
// 64), kStages deep through cp.async. Shared memory per stage:
//   A: the 8 row tiles x 2 k-tiles of 512-byte fragment tiles, copied as they are in global
//      memory (each lane then reads its 16 bytes with one conflict-free 128-bit load);
//   meta (2:4): 8 x 2 x 128 bytes;
//   B: 128 token rows of 64 bytes (.s4) or 128 bytes (.s8), 16-byte chunks XOR-swizzled by
//      row so that ldmatrix (8 rows x 16 bytes per matrix) hits 8 distinct bank groups.
namespace {

constexpr int kThreads = 256;
constexpr int kStages = 3;

template <bool kSparse>
struct Cfg {
  static constexpr int kABytes = 8 * 2 * kTileBytes;                   // 8192
  static constexpr int kMBytes = kSparse ? 8 * 2 * kMetaTileWords * 4 : 0;  // 2048
  static constexpr int kBRow = kSparse ? kTileK : kTileK / 2;           // bytes per token
  static constexpr int kBBytes = kTileT * kBRow;
  static constexpr int kStageBytes = kABytes + kMBytes + kBBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  // 16-byte chunk c of token row r in shared memory.
  __device__ static int b_offset(int r, int c) {
    return r * kBRow + 16 * (kSparse ? (c ^ (r & 7)) : (c ^ ((r >> 1) & 3)));
  }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// D += A (16 x 64, .s4) x B (64 x 8, .s4)
__device__ __forceinline__ void mma_s4(int (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}
// D += A (16 x 32, .s8) x B (32 x 8, .s8)
__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// 8 two's complement nibbles (element i in bits [4i, 4i + 4)) -> 8 int8: elements 0..3 in lo,
// 4..7 in hi. With u = n ^ 8 (0..15), the byte (u + 0x78) ^ 0x80 is u - 8 = the signed value
// (no carry leaves a byte: u + 0x78 <= 0x87).
__device__ __forceinline__ void widen_s4(uint32_t x, uint32_t& lo, uint32_t& hi) {
  x ^= 0x88888888u;
  const uint32_t ev = x & 0x0F0F0F0Fu, od = (x >> 4) & 0x0F0F0F0Fu;  // elements 0,2,4,6 / 1,3,5,7
  lo = (__byte_perm(ev, od, 0x5140) + 0x78787878u) ^ 0x80808080u;
  hi = (__byte_perm(ev, od, 0x7362) + 0x78787878u) ^ 0x80808080u;
}
// D += A (16 x 64, .s4) x B (64 x 8, .s4) as two .s8 m16n8k32 mmas, on the same fragments as
// mma_s4. Lane (g, c) holds A[g][K_c], A[g + 8][K_c] and B[K_c][g] for the same 16 columns
// K_c = [8c, 8c + 8) u [32 + 8c, 32 + 8c + 8); the .s8 mmas consume them in another order of
// k, the same for A and B, so the sum is the same exact integer.
__device__ __forceinline__ void mma_s4_as_s8(int (&d)[4], const uint32_t (&aw)[8], const uint32_t (&bw)[4]) {
  mma_s8(d, aw[0], aw[2], aw[1], aw[3], bw[0], bw[1]);
  mma_s8(d, aw[4], aw[6], aw[5], aw[7], bw[2], bw[3]);
}
// D += A (16 x 64 at 2:4, 16 x 32 stored, .s8) x B (64 x 8, .s8), metadata e, selector 0.
__device__ __forceinline__ void mma_sp_s8(int (&d)[4], const uint4& a, const uint32_t (&b)[4],
                                          uint32_t e) {
  asm volatile(
      "mma.sp::ordered_metadata.sync.aligned.m16n8k64.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
        "r"(e));
}

struct GemmArgs {
  const uint8_t* A;     // weight fragments
  const uint8_t* meta;  // 2:4 metadata (bytes)
  const uint8_t* B;     // activation codes [t_pad, row bytes]
  const float* sa;      // [T]
  const float* sw;      // [N]
  const float* bias;    // [N] or null
  float* y;             // [T, N]
  int32_t* acc_out;     // [T, N] or null
  int T, N, KT;         // KT = k_pad / 64
  int b_row_bytes;
};

template <bool kSparse>
__device__ __forceinline__ void load_stage(const GemmArgs& p, uint8_t* stage, int n_tile0, int t0,
                                           int ks) {
  using C = Cfg<kSparse>;
  const int tid = threadIdx.x;
  // A: 8 row tiles x 1024 contiguous bytes (2 k-tiles): 512 chunks of 16 bytes.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int id = tid + i * kThreads, mt = id / 64, rem = id % 64;
    cp_async16(stage + mt * 1024 + rem * 16,
               p.A + (size_t(n_tile0 + mt) * p.KT + 2 * ks) * kTileBytes + rem * 16);
  }
  if (kSparse && tid < 128) {
    const int mt = tid / 16, rem = tid % 16;
    cp_async16(stage + C::kABytes + mt * 256 + rem * 16,
               p.meta + (size_t(n_tile0 + mt) * p.KT + 2 * ks) * (kMetaTileWords * 4) + rem * 16);
  }
  constexpr int kChunksPerRow = C::kBRow / 16;
  uint8_t* sB = stage + C::kABytes + C::kMBytes;
#pragma unroll
  for (int i = 0; i < kTileT * kChunksPerRow / kThreads; ++i) {
    const int id = tid + i * kThreads, r = id / kChunksPerRow, c = id % kChunksPerRow;
    cp_async16(sB + C::b_offset(r, c),
               p.B + size_t(t0 + r) * p.b_row_bytes + size_t(ks) * C::kBRow + c * 16);
  }
}

// kWiden (dense only): the .s4 fragments are widened to .s8 in registers and multiplied with
// .s8 mmas (Hopper has no native INT4 tensor-core path; see README.md).
template <bool kSparse, bool kWiden>
__global__ void __launch_bounds__(kThreads, 2) gemm_kernel(GemmArgs p) {
  using C = Cfg<kSparse>;
  extern __shared__ __align__(128) uint8_t smem[];
  const int n_tile0 = blockIdx.x * (kTileN / 16);  // first 16-row tile of this block
  const int t0 = blockIdx.y * kTileT;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % 2, wn = warp / 2;  // warp's 64-row and 32-token slice
  const int nk = p.KT / 2;                 // stages of 128 columns

  int acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) load_stage<kSparse>(p, smem + s * C::kStageBytes, n_tile0, t0, s);
    cp_async_commit();
  }

  for (int ks = 0; ks < nk; ++ks) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int next = ks + kStages - 1;
    if (next < nk) load_stage<kSparse>(p, smem + (next % kStages) * C::kStageBytes, n_tile0, t0, next);
    cp_async_commit();

    const uint8_t* sA = smem + (ks % kStages) * C::kStageBytes;
    const uint8_t* sM = sA + C::kABytes;
    const uint8_t* sB = sM + C::kMBytes;
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      uint4 a[4];
      uint32_t e[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int mt = wm * 4 + i;
        a[i] = *reinterpret_cast<const uint4*>(sA + mt * 1024 + kk * kTileBytes + lane * 16);
        if (kSparse) e[i] = *reinterpret_cast<const uint32_t*>(sM + mt * 256 + kk * 128 + lane * 4);
      }
      uint32_t b[4][4];
      if (kSparse) {
        // Matrix m of ldmatrix = 16-byte chunk 4kk + m (k = 16m .. 16m + 15 of the k-step).
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int r = wn * 32 + j * 8 + (lane & 7), c = kk * 4 + (lane >> 3);
          ldmatrix_x4(b[j], sB + C::b_offset(r, c));
        }
      } else {
        // Matrices: (n-tile 2jp, chunk 2kk), (2jp, 2kk+1), (2jp+1, 2kk), (2jp+1, 2kk+1).
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {
          const int m = lane >> 3;
          const int r = wn * 32 + (2 * jp + (m >> 1)) * 8 + (lane & 7), c = kk * 2 + (m & 1);
          uint32_t t[4];
          ldmatrix_x4(t, sB + C::b_offset(r, c));
          b[2 * jp][0] = t[0];
          b[2 * jp][1] = t[1];
          b[2 * jp + 1][0] = t[2];
          b[2 * jp + 1][1] = t[3];
        }
      }
      if (!kSparse && kWiden) {
        uint32_t bw[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          widen_s4(b[j][0], bw[j][0], bw[j][1]);
          widen_s4(b[j][1], bw[j][2], bw[j][3]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint32_t aw[8];
          widen_s4(a[i].x, aw[0], aw[1]);
          widen_s4(a[i].y, aw[2], aw[3]);
          widen_s4(a[i].z, aw[4], aw[5]);
          widen_s4(a[i].w, aw[6], aw[7]);
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_s4_as_s8(acc[i][j], aw, bw[j]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if (kSparse)
              mma_sp_s8(acc[i][j], a[i], b[j], e[i]);
            else
              mma_s4(acc[i][j], a[i], b[j][0], b[j][1]);
          }
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue: y = (float(acc) * sa[t]) * sw[n] (+ bias[n]), each product rounded on its own.
  // Accumulator register r of tile (i, j): row g (+8 for r >= 2), token 2c + (r & 1).
  const int g = lane / 4, c = lane % 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int n = n_tile0 * 16 + wm * 64 + i * 16 + g + (r >= 2 ? 8 : 0);
        const int t = t0 + wn * 32 + j * 8 + 2 * c + (r & 1);
        if (n >= p.N || t >= p.T) continue;
        const size_t o = size_t(t) * p.N + n;
        const int a = acc[i][j][r];
        if (p.acc_out) p.acc_out[o] = a;
        float v = __fmul_rn(__fmul_rn(__int2float_rn(a), p.sa[t]), p.sw[n]);
        if (p.bias) v = __fadd_rn(v, p.bias[n]);
        p.y[o] = v;
      }
}

template <bool kSparse, bool kWiden>
void launch_gemm(const GemmArgs& p, int n_blocks, int t_blocks, cudaStream_t stream) {
  using C = Cfg<kSparse>;
  static bool attr_set = false;  // per device in a multi-GPU program; one device here
  if (!attr_set) {
    OBR_CUDA_CHECK(cudaFuncSetAttribute(gemm_kernel<kSparse, kWiden>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes));
    attr_set = true;
  }
  gemm_kernel<kSparse, kWiden><<<dim3(n_blocks, t_blocks), kThreads, C::kSmemBytes, stream>>>(p);
  OBR_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

DenseMma resolve_dense_mma(DenseMma m) {
  if (m != DenseMma::kAuto) return m;
  int dev = 0, major = 0;
  OBR_CUDA_CHECK(cudaGetDevice(&dev));
  OBR_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 9 ? DenseMma::kS8Widened : DenseMma::kS4;
}

void int4_matmul_cuda(const CudaWeights& W, const CudaActs& acts, float* d_y, int32_t* d_acc,
                      const float* d_bias, cudaStream_t stream, DenseMma dense_mma) {
  OBR_CHECK(W.d_codes && W.n_out > 0, "int4_matmul_cuda: weights are empty");
  OBR_CHECK(acts.format == W.format, "int4_matmul_cuda: activations were laid out for the ",
            acts.format == WeightFormat::kDense ? "dense" : "2:4", " GEMM, weights are ",
            W.format == WeightFormat::kDense ? "dense" : "2:4");
  OBR_CHECK(acts.K == W.k_in && acts.k_pad == W.k_pad, "int4_matmul_cuda: activations have K = ",
            acts.K, ", weights K = ", W.k_in);
  OBR_CHECK(W.k_in <= (int64_t(1) << 20), "int4_matmul_cuda: K = ", W.k_in,
            " is above 2^20, where int32 accumulation could overflow");
  OBR_CHECK(acts.T >= 1 && acts.t_pad / kTileT <= 65535 && W.n_pad / kTileN <= 0x7fffffff,
            "int4_matmul_cuda: T = ", acts.T, " is out of range");
  OBR_CHECK(d_y != nullptr, "int4_matmul_cuda: null output");
  GemmArgs p;
  p.A = static_cast<const uint8_t*>(W.d_codes);
  p.meta = reinterpret_cast<const uint8_t*>(W.d_meta);
  p.B = acts.d_codes;
  p.sa = acts.d_scale;
  p.sw = W.d_scale;
  p.bias = d_bias;
  p.y = d_y;
  p.acc_out = d_acc;
  p.T = int(acts.T);
  p.N = int(W.n_out);
  p.KT = int(W.k_pad / 64);
  p.b_row_bytes = int(acts.row_bytes());
  const int n_blocks = int(W.n_pad / kTileN), t_blocks = int(acts.t_pad / kTileT);
  if (W.format == WeightFormat::kSparse24)
    launch_gemm<true, false>(p, n_blocks, t_blocks, stream);
  else if (resolve_dense_mma(dense_mma) == DenseMma::kS4)
    launch_gemm<false, false>(p, n_blocks, t_blocks, stream);
  else
    launch_gemm<false, true>(p, n_blocks, t_blocks, stream);
}

// ============================================================================================
// Hadamard transforms
// ============================================================================================
//
// One block per vector of n elements of w floats each (w = 1 for a row; head_dim across
// heads), held in shared memory. With P = n / K and Lb = P * w floats per block b < K:
//   step 1: Sylvester butterflies on each block, pair distance half = w, 2w, ..., Lb / 2 (the
//           CPU's order), (u, v) -> (u + v, u - v);
//   step 2: out[a*Lb + i] = sum_{b = 0..K-1, in order} H_K[b, a] * x[b*Lb + i], from 0.0f
//           (H_K = +-1: the product is exact, the sum rounds at every step as on the CPU);
//   then times scale (K = 1: the butterfly result times scale).
namespace {

constexpr int kHadThreads = 512;

__global__ void __launch_bounds__(kHadThreads)
    hadamard_kernel(float* __restrict__ X, int L, int Lb, int w, int K, const int8_t* __restrict__ hkt,
                    float scale) {
  extern __shared__ float sx[];
  float* x = X + size_t(blockIdx.x) * L;
  for (int i = threadIdx.x; i < L; i += kHadThreads) sx[i] = x[i];
  __syncthreads();
  const int pairs_per_block = Lb / 2;
  for (int half = w; half < Lb; half *= 2) {
    for (int p = threadIdx.x; p < L / 2; p += kHadThreads) {
      const int b = p / pairs_per_block, pin = p % pairs_per_block;
      const int q = b * Lb + (pin / half) * 2 * half + pin % half;
      const float u = sx[q], v = sx[q + half];
      sx[q] = __fadd_rn(u, v);
      sx[q + half] = __fsub_rn(u, v);
    }
    __syncthreads();
  }
  if (K == 1) {
    for (int i = threadIdx.x; i < L; i += kHadThreads) x[i] = __fmul_rn(sx[i], scale);
    return;
  }
  for (int o = threadIdx.x; o < L; o += kHadThreads) {
    const int a = o / Lb, i = o % Lb;
    const int8_t* col = hkt + a * K;
    float acc = 0.0f;
    for (int b = 0; b < K; ++b) {
      const float v = sx[b * Lb + i];
      acc = __fadd_rn(acc, col[b] > 0 ? v : -v);
    }
    x[o] = __fmul_rn(acc, scale);
  }
}

void launch_hadamard(float* d_X, int64_t rows, int64_t n, int64_t w, const CudaHadamard& H,
                     cudaStream_t stream) {
  OBR_CHECK(H.n >= 1, "hadamard: the CudaHadamard is empty (make_hadamard)");
  OBR_CHECK(rows >= 0 && w >= 1, "hadamard: bad shape, rows = ", rows, ", lanes = ", w);
  if (rows == 0) return;
  const int64_t L = n * w;
  int dev = 0, max_smem = 0;
  OBR_CUDA_CHECK(cudaGetDevice(&dev));
  OBR_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  OBR_CHECK(L * 4 <= max_smem, "hadamard: a vector of ", L, " floats does not fit in ", max_smem,
            " bytes of shared memory");
  OBR_CHECK(rows <= 0x7fffffff, "hadamard: too many rows: ", rows);
  OBR_CUDA_CHECK(cudaFuncSetAttribute(hadamard_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(L * 4)));
  hadamard_kernel<<<unsigned(rows), kHadThreads, size_t(L) * 4, stream>>>(
      d_X, int(L), int(L / H.K), int(w), H.K, H.d_hk, H.scale);
  OBR_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

CudaHadamard::~CudaHadamard() { cudaFree(d_hk); }

void make_hadamard(int64_t n, int K, const float* h_base, CudaHadamard& out) {
  OBR_CHECK(n >= 1 && K >= 1 && n % K == 0 && ((n / K) & (n / K - 1)) == 0,
            "make_hadamard: n = ", n, " is not K * 2^m with K = ", K);
  OBR_CHECK(K == 1 || h_base != nullptr, "make_hadamard: no base matrix for K = ", K);
  cudaFree(out.d_hk);
  out.d_hk = nullptr;
  out.n = n;
  out.K = K;
  out.scale = float(1.0 / std::sqrt(double(n)));  // as hadamard.cpp
  if (K == 1) return;
  std::vector<int8_t> hkt(size_t(K) * K);
  for (int b = 0; b < K; ++b)
    for (int a = 0; a < K; ++a) {
      const float v = h_base[size_t(b) * K + a];
      OBR_CHECK(v == 1.0f || v == -1.0f, "make_hadamard: H_", K, "[", b, ", ", a, "] = ", v);
      hkt[size_t(a) * K + b] = v > 0 ? 1 : -1;
    }
  OBR_CUDA_CHECK(cudaMalloc(&out.d_hk, hkt.size()));
  OBR_CUDA_CHECK(cudaMemcpy(out.d_hk, hkt.data(), hkt.size(), cudaMemcpyHostToDevice));
}

void hadamard_transform_rows_cuda(float* d_X, int64_t rows, const CudaHadamard& H, cudaStream_t stream) {
  launch_hadamard(d_X, rows, H.n, 1, H, stream);
}

void hadamard_across_heads_cuda(float* d_X, int64_t rows, int64_t head_dim, const CudaHadamard& H,
                                cudaStream_t stream) {
  launch_hadamard(d_X, rows, H.n, head_dim, H, stream);
}

}  // namespace obr::cuda
