// GPU timing of one linear layer y = x W^T at the OBR paper's kernel shape
// (x [65536, 4096], W [4096, 4096]): cuBLAS FP16 (f16 in and out, f32 accumulation) against
// our INT4 dense (mma .s4) and INT4 2:4 (mma.sp .s8 on widened codes) GEMMs.
//
//   obr_cuda_bench [--T 65536] [--N 4096] [--K 4096] [--reps 20]
//
// Each kernel runs 3 times untimed, then --reps times, each timed alone with CUDA events;
// the median and the minimum are printed, with TOPS = 2 T N K / time (dense-equivalent
// operations, also for 2:4). The INT4 GEMMs take activation codes that are already quantized
// (the per-token quantization of x is timed on its own line) and write f32 y. As a
// consistency check at this size, the dense and 2:4 GEMMs run on the same 2:4-pruned codes
// and must give bitwise identical y.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_fp16.h>

#include "core/check.h"
#include "obr_cuda.h"

namespace {

#define CK(call)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) obr::fail("CUDA error: ", cudaGetErrorString(e_), " in " #call); \
  } while (0)
#define CKB(call)                                                                  \
  do {                                                                             \
    cublasStatus_t s_ = (call);                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) obr::fail("cuBLAS error ", int(s_), " in " #call); \
  } while (0)

// Deterministic pseudo-random normal-ish values (sum of uniforms), on the device.
__global__ void fill_kernel(float* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    float s = 0;
    for (int r = 0; r < 4; ++r) {
      h ^= h >> 15;
      h *= 2246822519u;
      h ^= h >> 13;
      h *= 3266489917u;
      h ^= h >> 16;
      s += float(h & 0xFFFFFF) * (1.0f / 16777216.0f);
    }
    x[i] = (s - 2.0f) * 1.7f;
  }
}
__global__ void to_half_kernel(const float* x, __half* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = __float2half_rn(x[i]);
}
__global__ void count_diff_kernel(const float* a, const float* b, size_t n, unsigned long long* out) {
  unsigned long long c = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    c += __float_as_uint(a[i]) != __float_as_uint(b[i]);
  atomicAdd(out, c);
}

struct Stats {
  double median_ms, min_ms;
};

Stats time_it(int reps, const std::function<void()>& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  CK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[0]};
}

void report(const char* what, Stats s, double ops, double base_ms) {
  std::printf("%-36s median %8.3f ms  min %8.3f ms  %7.1f TOPS", what, s.median_ms, s.min_ms,
              ops / (s.median_ms * 1e-3) / 1e12);
  if (base_ms > 0) std::printf("  %5.2fx vs cuBLAS FP16", base_ms / s.median_ms);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int64_t T = 65536, N = 4096, K = 4096;
  int reps = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int64_t v = std::atoll(argv[i + 1]);
    if (a == "--T") T = v;
    else if (a == "--N") N = v;
    else if (a == "--K") K = v;
    else if (a == "--reps") reps = int(v);
  }
  if (obr::cuda::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  try {
    using obr::cuda::WeightFormat;
    std::printf("GPU: %s\n", obr::cuda::device_description(0).c_str());
    std::printf("shape: x [%lld, %lld] x W^T, W [%lld, %lld]; %d timed runs each\n", (long long)T, (long long)K,
                (long long)N, (long long)K, reps);
    const double ops = 2.0 * double(T) * double(N) * double(K);

    // Weights: random INT4 codes with a 2:4 mask (both GEMMs use these same codes).
    std::vector<int8_t> q(size_t(N * K), 0);
    std::vector<float> sw(static_cast<size_t>(N));
    uint64_t r = 12345;
    auto next = [&] { r ^= r << 13; r ^= r >> 7; r ^= r << 17; return r; };
    for (int64_t n = 0; n < N; ++n) {
      sw[size_t(n)] = 0.01f + float(next() % 1000) * 1e-5f;
      for (int64_t g = 0; g < K; g += 4) {
        const int i0 = int(next() % 4), i1 = (i0 + 1 + int(next() % 3)) % 4;
        for (int i : {i0, i1})
          if (g + i < K) q[size_t(n * K + g + i)] = int8_t(int(next() % 15) - 7);
      }
    }
    const obr::cuda::CudaWeights Wd = obr::cuda::upload_weights(WeightFormat::kDense, q.data(), sw.data(), N, K);
    const obr::cuda::CudaWeights Ws = obr::cuda::upload_weights(WeightFormat::kSparse24, q.data(), sw.data(), N, K);
    std::printf("weights: dense %.1f MB, 2:4 %.1f MB (codes + metadata)\n", Wd.code_bytes() / 1e6,
                Ws.code_bytes() / 1e6);

    float *d_x = nullptr, *d_yd = nullptr, *d_ys = nullptr;
    CK(cudaMalloc(&d_x, size_t(T * K) * 4));
    fill_kernel<<<4096, 256>>>(d_x, size_t(T * K), 7u);
    CK(cudaGetLastError());

    // cuBLAS FP16: y^T [N, T] (column-major) = W [N, K] x^T: W is K x N column-major (op T).
    double base_ms = 0;
    {
      __half *d_xh = nullptr, *d_wh = nullptr, *d_yh = nullptr;
      CK(cudaMalloc(&d_xh, size_t(T * K) * 2));
      CK(cudaMalloc(&d_wh, size_t(N * K) * 2));
      CK(cudaMalloc(&d_yh, size_t(T * N) * 2));
      float* d_w = nullptr;
      CK(cudaMalloc(&d_w, size_t(N * K) * 4));
      fill_kernel<<<1024, 256>>>(d_w, size_t(N * K), 9u);
      to_half_kernel<<<4096, 256>>>(d_x, d_xh, size_t(T * K));
      to_half_kernel<<<1024, 256>>>(d_w, d_wh, size_t(N * K));
      CK(cudaDeviceSynchronize());
      cublasHandle_t h;
      CKB(cublasCreate(&h));
      const float alpha = 1.0f, beta = 0.0f;
      const Stats s = time_it(reps, [&] {
        CKB(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &alpha, d_wh, CUDA_R_16F, int(K), d_xh,
                         CUDA_R_16F, int(K), &beta, d_yh, CUDA_R_16F, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      });
      base_ms = s.median_ms;
      report("cuBLAS FP16 (f16 out)", s, ops, 0);
      cublasDestroy(h);
      cudaFree(d_xh);
      cudaFree(d_wh);
      cudaFree(d_yh);
      cudaFree(d_w);
    }

    CK(cudaMalloc(&d_yd, size_t(T * N) * 4));
    CK(cudaMalloc(&d_ys, size_t(T * N) * 4));
    obr::cuda::CudaActs ad, as;
    ad.format = WeightFormat::kDense;
    as.format = WeightFormat::kSparse24;
    const Stats qd = time_it(reps, [&] { obr::cuda::quantize_act_rows_cuda(d_x, T, K, 4, 0.9f, ad); });
    const Stats qs = time_it(reps, [&] { obr::cuda::quantize_act_rows_cuda(d_x, T, K, 4, 0.9f, as); });
    using obr::cuda::DenseMma;
    const Stats gd4 = time_it(std::max(3, reps / 4), [&] {
      obr::cuda::int4_matmul_cuda(Wd, ad, d_yd, nullptr, nullptr, nullptr, DenseMma::kS4);
    });
    const Stats gd8 = time_it(reps, [&] {
      obr::cuda::int4_matmul_cuda(Wd, ad, d_yd, nullptr, nullptr, nullptr, DenseMma::kS8Widened);
    });
    const Stats gs = time_it(reps, [&] { obr::cuda::int4_matmul_cuda(Ws, as, d_ys); });
    report("INT4 dense, mma .s4 (f32 out)", gd4, ops, base_ms);
    report("INT4 dense, s4->.s8 mma (f32 out)", gd8, ops, base_ms);
    report("INT4 2:4, mma.sp .s8 (f32 out)", gs, ops, base_ms);
    std::printf("%-36s median %8.3f ms (s4 layout), %8.3f ms (s8 layout); includes a sync and a 4-byte copy\n",
                "per-token quantization of x (A4)", qd.median_ms, qs.median_ms);

    unsigned long long* d_cnt = nullptr;
    CK(cudaMalloc(&d_cnt, 8));
    CK(cudaMemset(d_cnt, 0, 8));
    count_diff_kernel<<<4096, 256>>>(d_yd, d_ys, size_t(T * N), d_cnt);
    unsigned long long diff = 0;
    CK(cudaMemcpy(&diff, d_cnt, 8, cudaMemcpyDeviceToHost));
    std::printf("%s: dense and 2:4 GEMMs on the same codes: %llu of %lld outputs differ bitwise\n",
                diff == 0 ? "PASS" : "FAIL", diff, (long long)(T * N));
    cudaFree(d_cnt);
    cudaFree(d_x);
    cudaFree(d_yd);
    cudaFree(d_ys);
    return diff == 0 ? 0 : 1;
  } catch (const obr::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
