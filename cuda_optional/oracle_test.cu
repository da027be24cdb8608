// Oracle test of the CUDA kernels: identical inputs go to the CPU scalar reference
// (simd/kernels_ref.h, src/compress/hadamard.h), to every CPU SIMD target compiled into this
// binary that this CPU runs, and to the GPU; every int32 accumulator and every f32 output must
// be bit-identical. One verdict line per kernel and shape:
//
//   PASS gemm 2:4    T=17    N=4096  K=11008  bits=4 bias  acc+y bitwise: ref AVX3_DL ... GPU
//
// Without a CUDA device it prints "SKIPPED: no CUDA device" and exits 0.
//
//   obr_cuda_oracle [--real DIR] [--quick]
//     --real DIR  also run the real layers exported by obr_cuda_export_layer into DIR
//     --quick     skip the Llama-sized shapes
// Exit code: 0 when every check passed (or no GPU), 1 otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <vector>

#include "compress/hadamard.h"
#include "core/check.h"
#include "core/rng.h"
#include "io/npy.h"
#include "obr_cuda.h"
#include "simd/cpu_info.h"
#include "simd/kernels.h"
#include "simd/kernels_ref.h"
#include "simd/packed_format.h"

namespace {

using namespace obr;
using obr::cuda::WeightFormat;

#define CK(call)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) obr::fail("CUDA error: ", cudaGetErrorString(e_), " in " #call); \
  } while (0)

int g_checks = 0, g_failed = 0;

void verdict(bool ok, const std::string& what, const std::string& detail) {
  ++g_checks;
  if (!ok) ++g_failed;
  std::printf("%s %s  %s\n", ok ? "PASS" : "FAIL", what.c_str(), detail.c_str());
  std::fflush(stdout);
}

template <class T>
struct DeviceBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t count) : n(count) { CK(cudaMalloc(&p, count * sizeof(T) + 16)); }
  ~DeviceBuf() { cudaFree(p); }
  void upload(const T* h) { CK(cudaMemcpy(p, h, n * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

// First index where two arrays differ bitwise, or -1.
template <class T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return int64_t(i);
  return -1;
}

std::string fmt_val(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return detail::concat(v, " (0x", std::hex, bits, std::dec, ")");
}
std::string fmt_val(int32_t v) { return std::to_string(v); }
std::string fmt_val(int8_t v) { return std::to_string(int(v)); }

// Compares `got` with `want` bitwise; on a mismatch appends a description to `why`.
template <class T>
bool same(const std::vector<T>& want, const std::vector<T>& got, const std::string& name,
          const std::string& who, int64_t cols, std::string& why) {
  const int64_t i = first_diff(want, got);
  if (i < 0) return true;
  if (why.empty())
    why = detail::concat(name, " of ", who, " differs at [", i / cols, ", ", i % cols, "]: ref ",
                         fmt_val(want[size_t(i)]), ", got ", fmt_val(got[size_t(i)]));
  return false;
}

std::string targets_str() {
  std::string s;
  for (const simd::SimdTarget& t : simd::runnable_targets()) s += " " + t.name;
  return s;
}

// ---- Inputs ---------------------------------------------------------------------------------

// Activations [T, K] with the cases a quantizer must get right: ordinary rows of varied
// magnitude with outliers, an all-zero row, a row of subnormal-sized values, and a row on
// exact half steps (x / s = j / 2, so round-half-to-even decides).
std::vector<float> make_x(int64_t T, int64_t K, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    float* r = x.data() + t * K;
    const int kind = int(t % 7);
    const double mag = std::pow(10.0, rng.uniform() * 4 - 2);
    for (int64_t k = 0; k < K; ++k) {
      if (kind == 3 && T > 1)
        r[k] = 0.0f;
      else if (kind == 5 && T > 1)
        r[k] = float(rng.normal() * 1e-42);
      else if (kind == 6 && T > 1)
        r[k] = float(int(rng.below(29)) - 14) * 0.25f;  // max |x| = 3.5: s = 0.5 at clip 1
      else
        r[k] = float(rng.normal() * mag * (rng.below(50) == 0 ? 20.0 : 1.0));
    }
    if (kind == 6 && T > 1) r[0] = 3.5f;
  }
  return x;
}

// INT4 codes [N, K] with a keep mask: dense (10% zeros) or 2:4 (exactly 2 of every 4 kept,
// except 5% of groups keeping fewer and the tail group); scales positive, varied.
void make_w(bool sparse, int64_t N, int64_t K, uint64_t seed, std::vector<int8_t>& q,
            std::vector<uint8_t>& keep, std::vector<float>& sw) {
  Rng rng(seed);
  q.assign(size_t(N * K), 0);
  keep.assign(size_t(N * K), 0);
  sw.resize(size_t(N));
  for (int64_t n = 0; n < N; ++n) {
    sw[size_t(n)] = float(std::exp(rng.normal()) * 1e-2);
    for (int64_t g = 0; g < K; g += 4) {
      int want = sparse ? (rng.below(20) == 0 ? int(rng.below(2)) : 2) : 4;
      int idx[4] = {0, 1, 2, 3};
      for (int j = 3; j > 0; --j) std::swap(idx[j], idx[rng.below(uint64_t(j + 1))]);
      for (int j = 0; j < want; ++j) {
        const int64_t k = g + idx[j];
        if (k >= K) continue;
        keep[size_t(n * K + k)] = 1;
        q[size_t(n * K + k)] = rng.below(10) == 0 ? 0 : int8_t(int(rng.below(16)) - 8);
      }
    }
  }
}

// ---- CPU side ---------------------------------------------------------------------------------

struct CpuResult {
  std::string who;
  std::vector<int32_t> acc;
  std::vector<float> y;
};

// The reference and every runnable SIMD target.
std::vector<CpuResult> cpu_matmul(const simd::PackedWeights& W, const std::vector<int8_t>& qa,
                                  const std::vector<float>& sa, int64_t T, const float* bias) {
  std::vector<CpuResult> out;
  const size_t n = size_t(T * W.n_out);
  out.push_back({"ref", std::vector<int32_t>(n), std::vector<float>(n)});
  simd::int4_matmul_ref(W, qa.data(), sa.data(), T, out.back().y.data(), out.back().acc.data(), bias);
  for (const simd::SimdTarget& t : simd::runnable_targets()) {
    simd::ScopedTarget scope(t);
    out.push_back({t.name, std::vector<int32_t>(n), std::vector<float>(n)});
    simd::int4_matmul(W, qa.data(), sa.data(), T, out.back().y.data(), out.back().acc.data(), bias);
  }
  return out;
}

// ---- Checks ---------------------------------------------------------------------------------

// x [T, K] -> per-token codes on the CPU (reference + targets) and on the GPU (into the given
// layout, with the plain codes too); returns the reference codes and scales.
bool check_quantize(const std::vector<float>& x, int64_t T, int64_t K, int bits, float clip,
                    WeightFormat layout, std::vector<int8_t>& qa, std::vector<float>& sa,
                    obr::cuda::CudaActs& acts, const std::string& label) {
  qa.assign(size_t(T * K), 0);
  sa.assign(size_t(T), 0);
  simd::quantize_act_rows_i8_ref(x.data(), T, K, bits, clip, qa.data(), sa.data());
  std::string why, who = "ref";
  bool ok = true;
  for (const simd::SimdTarget& t : simd::runnable_targets()) {
    simd::ScopedTarget scope(t);
    std::vector<int8_t> q2(qa.size());
    std::vector<float> s2(sa.size());
    simd::quantize_act_rows_i8(x.data(), T, K, bits, clip, q2.data(), s2.data());
    ok &= same(qa, q2, "codes", t.name, K, why) & same(sa, s2, "scales", t.name, 1, why);
    who += " " + t.name;
  }
  DeviceBuf<float> d_x(x.size());
  d_x.upload(x.data());
  DeviceBuf<int8_t> d_q(qa.size());
  acts.format = layout;
  obr::cuda::quantize_act_rows_cuda(d_x.p, T, K, bits, clip, acts, d_q.p);
  CK(cudaDeviceSynchronize());
  std::vector<float> s_gpu(static_cast<size_t>(T));
  CK(cudaMemcpy(s_gpu.data(), acts.d_scale, size_t(T) * 4, cudaMemcpyDeviceToHost));
  ok &= same(qa, d_q.download(), "codes", "GPU", K, why) & same(sa, s_gpu, "scales", "GPU", 1, why);
  // The GEMM layout must hold the same codes (and zeros in the padding).
  std::vector<uint8_t> lay(size_t(acts.t_pad) * acts.row_bytes());
  CK(cudaMemcpy(lay.data(), acts.d_codes, lay.size(), cudaMemcpyDeviceToHost));
  std::vector<int8_t> want(size_t(acts.t_pad * acts.k_pad), 0), got(want.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) want[size_t(t * acts.k_pad + k)] = qa[size_t(t * K + k)];
  for (int64_t t = 0; t < acts.t_pad; ++t)
    for (int64_t k = 0; k < acts.k_pad; ++k) {
      const uint8_t* row = lay.data() + size_t(t) * acts.row_bytes();
      got[size_t(t * acts.k_pad + k)] =
          layout == WeightFormat::kDense ? int8_t(int8_t(row[k / 2] << (4 * (1 - k % 2))) >> 4) : int8_t(row[k]);
    }
  ok &= same(want, got, "GEMM-layout codes", "GPU", acts.k_pad, why);
  who += " GPU";
  verdict(ok, label, ok ? "codes+scales bitwise:" + who.substr(3) : why);
  return ok;
}

// End to end: x -> codes (checked) -> GEMM with W (checked: acc exactly, y bitwise).
void check_gemm(bool sparse, int64_t T, int64_t N, int64_t K, int bits, bool with_bias, uint64_t seed,
                const std::vector<int8_t>* q_in = nullptr, const std::vector<float>* sw_in = nullptr,
                const std::vector<float>* x_in = nullptr, const std::string& name = "") {
  const WeightFormat fmt = sparse ? WeightFormat::kSparse24 : WeightFormat::kDense;
  const char* fname = sparse ? "2:4  " : "dense";
  std::vector<int8_t> q;
  std::vector<uint8_t> keep;
  std::vector<float> sw;
  if (q_in) {
    q = *q_in;
    sw = *sw_in;
  } else {
    make_w(sparse, N, K, seed, q, keep, sw);
  }
  const std::vector<float> x = x_in ? *x_in : make_x(T, K, seed + 1);
  std::vector<float> bias;
  if (with_bias) {
    Rng rng(seed + 2);
    for (int64_t n = 0; n < N; ++n) bias.push_back(float(rng.normal()));
  }
  const std::string shape = detail::concat("T=", T, " N=", N, " K=", K, " bits=", bits, with_bias ? " bias" : "",
                                           name.empty() ? "" : " " + name);
  char label[160];
  std::snprintf(label, sizeof label, "quant %s %s", fname, shape.c_str());
  obr::cuda::CudaActs acts;
  std::vector<int8_t> qa;
  std::vector<float> sa;
  if (!check_quantize(x, T, K, bits, 0.9f, fmt, qa, sa, acts, label)) return;

  const simd::PackedWeights W =
      simd::pack_int4(sparse ? simd::Int4Format::kSparse24 : simd::Int4Format::kDense, q.data(), sw.data(), N,
                      K, keep.empty() ? nullptr : keep.data());
  const std::vector<CpuResult> cpu = cpu_matmul(W, qa, sa, T, with_bias ? bias.data() : nullptr);
  // The GPU weights are re-laid out from the CPU packed bytes (unpack_int4), not from q.
  const obr::cuda::CudaWeights GW = obr::cuda::upload_weights(W);
  DeviceBuf<float> d_y(size_t(T * N)), d_bias(static_cast<size_t>(N));
  DeviceBuf<int32_t> d_acc(size_t(T * N));
  if (with_bias) d_bias.upload(bias.data());

  std::string why, who;
  bool ok = true;
  for (const CpuResult& r : cpu) {
    if (&r != &cpu[0]) ok &= same(cpu[0].acc, r.acc, "acc", r.who, N, why) & same(cpu[0].y, r.y, "y", r.who, N, why);
    who += " " + r.who;
  }
  // Dense: both tensor-core paths (native .s4 mma and .s4 widened to .s8 mma).
  using obr::cuda::DenseMma;
  const std::vector<std::pair<DenseMma, std::string>> variants =
      sparse ? std::vector<std::pair<DenseMma, std::string>>{{DenseMma::kAuto, "GPU(mma.sp.s8)"}}
             : std::vector<std::pair<DenseMma, std::string>>{{DenseMma::kS4, "GPU(mma.s4)"},
                                                             {DenseMma::kS8Widened, "GPU(s4->mma.s8)"}};
  for (const auto& [mode, gpu_name] : variants) {
    CK(cudaMemset(d_y.p, 0xFF, d_y.n * 4));  // NaN: an unwritten output cannot pass
    CK(cudaMemset(d_acc.p, 0x7F, d_acc.n * 4));
    obr::cuda::int4_matmul_cuda(GW, acts, d_y.p, d_acc.p, with_bias ? d_bias.p : nullptr, nullptr, mode);
    CK(cudaDeviceSynchronize());
    ok &= same(cpu[0].acc, d_acc.download(), "acc", gpu_name, N, why) &
          same(cpu[0].y, d_y.download(), "y", gpu_name, N, why);
    who += " " + gpu_name;
  }
  std::snprintf(label, sizeof label, "gemm  %s %s", fname, shape.c_str());
  verdict(ok, label, ok ? "acc+y bitwise:" + who : why);
}

void check_hadamard(int64_t rows, int64_t n, int64_t head_dim, uint64_t seed) {
  const int K = hadamard_base_order(n);
  const Tensor base = hadamard_base(K);
  obr::cuda::CudaHadamard H;
  obr::cuda::make_hadamard(n, K, K > 1 ? base.data<float>() : nullptr, H);
  const int64_t len = n * head_dim;
  Rng rng(seed);
  std::vector<float> x(size_t(rows * len));
  for (float& v : x) v = float(rng.normal() * (rng.below(30) == 0 ? 30 : 1));
  std::vector<float> want = x;
  DeviceBuf<float> d_x(x.size());
  d_x.upload(x.data());
  if (head_dim == 1) {
    hadamard_transform_rows(want.data(), rows, n);
    obr::cuda::hadamard_transform_rows_cuda(d_x.p, rows, H);
  } else {
    hadamard_across_heads(want.data(), rows, n, head_dim);
    obr::cuda::hadamard_across_heads_cuda(d_x.p, rows, head_dim, H);
  }
  CK(cudaDeviceSynchronize());
  std::string why;
  const bool ok = same(want, d_x.download(), "x", "GPU", len, why);
  char label[160];
  if (head_dim == 1)
    std::snprintf(label, sizeof label, "hadamard rows  n=%lld (K=%d) rows=%lld", (long long)n, K, (long long)rows);
  else
    std::snprintf(label, sizeof label, "hadamard heads n_heads=%lld (K=%d) head_dim=%lld rows=%lld", (long long)n, K,
                  (long long)head_dim, (long long)rows);
  verdict(ok, label, ok ? "bitwise: ref GPU" : why);
}

// ---- mma layout probes --------------------------------------------------------------------
// One mma on one warp with the fragment layouts of obr_cuda.h, against a plain product: this
// pins down the PTX fragment and metadata layouts on their own, before the GEMMs use them.

__global__ void probe_kernel(const uint32_t* a, const uint32_t* b, const uint32_t* e, int* d, bool sparse) {
  const int l = threadIdx.x;
  int acc[4] = {0, 0, 0, 0};
  if (sparse) {
    asm volatile(
        "mma.sp::ordered_metadata.sync.aligned.m16n8k64.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
        : "+r"(acc[0]), "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
        : "r"(a[l * 4]), "r"(a[l * 4 + 1]), "r"(a[l * 4 + 2]), "r"(a[l * 4 + 3]), "r"(b[l * 4]),
          "r"(b[l * 4 + 1]), "r"(b[l * 4 + 2]), "r"(b[l * 4 + 3]), "r"(e[l]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+r"(acc[0]), "+r"(acc[1]), "+r"(acc[2]), "+r"(acc[3])
        : "r"(a[l * 4]), "r"(a[l * 4 + 1]), "r"(a[l * 4 + 2]), "r"(a[l * 4 + 3]), "r"(b[l * 4]),
          "r"(b[l * 4 + 1]));
  }
  for (int r = 0; r < 4; ++r) d[l * 4 + r] = acc[r];
}

// D [16, 8] of one mma from the tile's A bytes / metadata and a logical B [64, 8].
std::vector<int> run_probe(bool sparse, const uint8_t* a_tile, const uint32_t* meta, const int8_t* B) {
  std::vector<uint32_t> breg(128, 0);
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, c = l % 4;
    for (int j = 0; j < (sparse ? 4 : 2); ++j)
      for (int i = 0; i < (sparse ? 4 : 8); ++i) {
        // .s8: register j = k 16j + 4c + i; .s4: register j = k 32j + 8c + i (nibble i)
        const int k = sparse ? 16 * j + 4 * c + i : 32 * j + 8 * c + i;
        const uint32_t v = uint8_t(B[k * 8 + g]);
        breg[size_t(l * 4 + j)] |= sparse ? v << (8 * i) : (v & 0xF) << (4 * i);
      }
  }
  DeviceBuf<uint32_t> da(128), db(128), de(32);
  DeviceBuf<int> dd(128);
  da.upload(reinterpret_cast<const uint32_t*>(a_tile));
  db.upload(breg.data());
  std::vector<uint32_t> e(32, 0);
  if (meta) e.assign(meta, meta + 32);
  de.upload(e.data());
  probe_kernel<<<1, 32>>>(da.p, db.p, de.p, dd.p, sparse);
  CK(cudaDeviceSynchronize());
  const std::vector<int> d = dd.download();
  std::vector<int> D(128);
  for (int l = 0; l < 32; ++l)
    for (int r = 0; r < 4; ++r) D[size_t((l / 4 + (r >= 2 ? 8 : 0)) * 8 + 2 * (l % 4) + (r & 1))] = d[size_t(l * 4 + r)];
  return D;
}

void check_probe(bool sparse) {
  Rng rng(sparse ? 11 : 12);
  std::vector<int8_t> A(16 * 64, 0), B(64 * 8);
  for (int r = 0; r < 16; ++r)
    for (int g = 0; g < 16; ++g) {
      int idx[4] = {0, 1, 2, 3};
      for (int j = 3; j > 0; --j) std::swap(idx[j], idx[rng.below(uint64_t(j + 1))]);
      for (int j = 0; j < (sparse ? 2 : 4); ++j) A[size_t(r * 64 + g * 4 + idx[j])] = int8_t(int(rng.below(15)) - 7);
    }
  for (int8_t& v : B) v = int8_t(int(rng.below(16)) - 8);
  std::vector<uint8_t> codes;
  std::vector<uint32_t> meta;
  obr::cuda::layout_weights_host(sparse ? WeightFormat::kSparse24 : WeightFormat::kDense, A.data(), 16, 64, nullptr,
                                 codes, meta);
  const std::vector<int> D = run_probe(sparse, codes.data(), sparse ? meta.data() : nullptr, B.data());
  int bad = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      int want = 0;
      for (int k = 0; k < 64; ++k) want += A[size_t(r * 64 + k)] * B[size_t(k * 8 + n)];
      bad += D[size_t(r * 8 + n)] != want;
    }
  const char* label = sparse ? "probe mma.sp m16n8k64.s8 (2:4) fragment+metadata layout"
                             : "probe mma    m16n8k64.s4 (dense) fragment layout";
  verdict(bad == 0, label, bad == 0 ? "16x8 outputs exact" : detail::concat(bad, " of 128 outputs wrong"));
  if (bad == 0 || !sparse) return;
  // Diagnosis: which (row, group) each metadata nibble selects. A = all ones (codes 1), B[k][n]:
  // n < 4: bit n of the group k / 4 times (k % 4); n >= 4: k % 4. Changing nibble (lane, j) from
  // 0x4 to 0xE adds 4 in column 4 of its row and 4 * bit n of its group in column n < 4.
  std::vector<uint8_t> ones(512, 1);
  for (int k = 0; k < 64; ++k)
    for (int n = 0; n < 8; ++n) B[size_t(k * 8 + n)] = int8_t(n < 4 ? (((k / 4) >> n) & 1) * (k % 4) : k % 4);
  std::vector<uint32_t> base(32, 0x44444444u);
  const std::vector<int> D0 = run_probe(true, ones.data(), base.data(), B.data());
  for (int l = 0; l < 32; ++l) {
    std::string line = detail::concat("  meta lane ", l, ":");
    for (int j = 0; j < 8; ++j) {
      std::vector<uint32_t> m = base;
      m[size_t(l)] = (m[size_t(l)] & ~(0xFu << (4 * j))) | (0xEu << (4 * j));
      const std::vector<int> D1 = run_probe(true, ones.data(), m.data(), B.data());
      int row = -1, grp = 0;
      for (int r = 0; r < 16; ++r)
        if (D1[size_t(r * 8 + 4)] != D0[size_t(r * 8 + 4)]) {
          row = r;
          for (int n = 0; n < 4; ++n) grp |= (D1[size_t(r * 8 + n)] != D0[size_t(r * 8 + n)]) << n;
        }
      line += row < 0 ? " -" : detail::concat(" r", row, "g", grp);
    }
    std::printf("%s\n", line.c_str());
  }
  // Which (row, group, kept slot) each A byte feeds, under the layout's own metadata with every
  // group keeping indices {0, 1}: A = one-hot at (lane, byte), B[k][n] = n < 4: bit n of the
  // group k / 4; n >= 4: (k % 4 == n - 4).
  for (int k = 0; k < 64; ++k)
    for (int n = 0; n < 8; ++n)
      B[size_t(k * 8 + n)] = int8_t(n < 4 ? ((k / 4) >> n) & 1 : (k % 4 == n - 4));
  std::vector<int8_t> A01(16 * 64, 0);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 64; k += 4) A01[size_t(r * 64 + k)] = A01[size_t(r * 64 + k + 1)] = 1;
  obr::cuda::layout_weights_host(WeightFormat::kSparse24, A01.data(), 16, 64, nullptr, codes, meta);
  for (int l = 0; l < 32; ++l) {
    std::string line = detail::concat("  A lane ", l, ":");
    for (int byte = 0; byte < 16; ++byte) {
      std::vector<uint8_t> onehot(512, 0);
      onehot[size_t(l * 16 + byte)] = 1;
      const std::vector<int> D1 = run_probe(true, onehot.data(), meta.data(), B.data());
      std::string hit = " -";
      for (int r = 0; r < 16; ++r)
        for (int i = 0; i < 4; ++i)
          if (D1[size_t(r * 8 + 4 + i)] != 0) {
            int grp = 0;
            for (int n = 0; n < 4; ++n) grp |= (D1[size_t(r * 8 + n)] != 0) << n;
            hit = detail::concat(" r", r, "g", grp, "i", i);
          }
      line += hit;
    }
    std::printf("%s\n", line.c_str());
  }
}

// ---- Real layers ----------------------------------------------------------------------------

void check_real(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string f = e->d_name, suffix = ".qweight.npy";
      if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
        names.push_back(f.substr(0, f.size() - suffix.size()));
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  verdict(!names.empty(), "real layers in " + dir, detail::concat(names.size(), " projections found"));
  for (const std::string& name : names) {
    const Tensor qt = read_npy(dir + "/" + name + ".qweight.npy");
    const Tensor st = read_npy(dir + "/" + name + ".scales.npy");
    const Tensor xt = read_npy(dir + "/" + name + ".x.npy");
    const int64_t N = qt.dim(0), K = qt.dim(1), T = xt.dim(0);
    OBR_CHECK(xt.dim(1) == K && st.numel() == N, "real layer ", name, ": shapes do not match");
    const std::vector<int8_t> q(qt.data<int8_t>(), qt.data<int8_t>() + N * K);
    const std::vector<float> sw(st.data<float>(), st.data<float>() + N);
    const std::vector<float> x(xt.data<float>(), xt.data<float>() + T * K);
    bool is24 = true;  // at most 2 non-zero codes in every group of 4 columns
    for (int64_t n = 0; n < N && is24; ++n)
      for (int64_t g = 0; g < K; g += 4) {
        int nz = 0;
        for (int64_t k = g; k < std::min(g + 4, K); ++k) nz += q[size_t(n * K + k)] != 0;
        if (nz > 2) {
          is24 = false;
          break;
        }
      }
    check_gemm(false, T, N, K, 4, false, 0, &q, &sw, &x, name);
    if (is24) check_gemm(true, T, N, K, 4, false, 0, &q, &sw, &x, name);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string real_dir;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--real" && i + 1 < argc)
      real_dir = argv[++i];
    else if (a == "--quick")
      quick = true;
    else {
      std::fprintf(stderr, "usage: %s [--real DIR] [--quick]\n", argv[0]);
      return 2;
    }
  }
  std::printf("CPU SIMD targets compiled in and runnable here:%s\n", targets_str().c_str());
  if (obr::cuda::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device (the GPU kernels were not run; the CPU side built fine)\n");
    return 0;
  }
  try {
    std::printf("GPU: %s\n", obr::cuda::device_description(0).c_str());
    check_probe(false);
    check_probe(true);

    // GEMMs, end to end from f32 activations (quantize on both sides, then multiply):
    // odd shapes (rows / columns not multiples of any tile, T = 1, 3, 17, ...) and Llama shapes.
    struct Shape { int64_t T, N, K; };
    std::vector<Shape> shapes = {{1, 1, 1},     {1, 3, 5},       {3, 17, 40},     {17, 100, 264},
                                 {5, 130, 129}, {64, 256, 512},  {130, 250, 1000}, {257, 384, 4100},
                                 {3, 1, 4096},  {200, 129, 127}};
    if (!quick) {
      for (const Shape s : {Shape{1, 4096, 4096}, Shape{17, 4096, 4096}, Shape{1, 11008, 4096},
                            Shape{33, 11008, 4096}, Shape{1, 4096, 11008}, Shape{33, 4096, 11008}})
        shapes.push_back(s);
      shapes.push_back({300, 4096, 4096});
    }
    uint64_t seed = 100;
    for (bool sparse : {false, true})
      for (const Shape& s : shapes) {
        seed += 7;
        check_gemm(sparse, s.T, s.N, s.K, 4, (seed % 2) == 0, seed);
      }
    check_gemm(true, 19, 77, 300, 8, true, 5);  // A8 codes through the s8 2:4 path

    // Hadamard transforms: powers of two and K * 2^m (Llama's 11008 = 172 * 64, 14336 = 28 * 512).
    for (int64_t n : {1, 2, 64, 4096, 12, 20, 40, 384, 1280, 5120, 11008, 14336, 28 * 8, 172})
      check_hadamard(n >= 4096 ? 3 : 5, n, 1, uint64_t(n));
    check_hadamard(3, 32, 128, 1);  // Llama-7B heads
    check_hadamard(3, 40, 128, 2);  // Llama-13B heads (K = 40)
  } catch (const obr::Error& e) {
    verdict(false, "exception", e.what());
  }
  if (!real_dir.empty()) {
    try {
      check_real(real_dir);
    } catch (const obr::Error& e) {
      verdict(false, "real layers", e.what());
    }
  }
  std::printf("%s: %d of %d checks passed\n", g_failed ? "FAILED" : "ALL PASSED", g_checks - g_failed, g_checks);
  return g_failed ? 1 : 0;
}
