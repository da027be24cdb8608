// Benchmark of the INT4 kernels against dense baselines measured in the same run.
//
//   bench_kernels [--quick] [--csv FILE] [--threads N] [--reps R] [--ws-gb G] [--tokens T]
//                 [--phase decode|prefill|all] [--shape NxK]...
//
// Decode (T = 1, a matrix-vector product; memory bound): every method cycles through its own
// copies of the weight matrix, as many as make >= --ws-gb (default 1 GB) of that method's own
// weight bytes (1 GB = 1e9 B; FP32: 4 B/weight, 15 copies of 4096 x 4096; 2:4 INT4: 0.377
// B/weight, 159 copies), so that no method runs from the last-level cache. Time per product = time of one
// pass over the copies / copies. GB/s = the method's weight bytes per product (codes, indices,
// masks, scales; activations and outputs are < 0.1% and not counted) / time.
// Prefill (T = --tokens, default 2048; compute bound): one weight matrix per method,
// GOPS = 2 * T * N * K / time (dense-equivalent: the sparse kernels get no credit for skipped
// work, so GOPS directly compares times).
// Methods: OpenBLAS FP32 (sgemv / sgemm), oneDNN BF16 matmul and oneDNN u8 x s8 matmul (f32
// output with per-channel scales; weights pre-reordered to oneDNN's preferred layout, like
// ours are pre-packed), and obr::simd::int4_matmul on dense, 2:4 and 50%-unstructured INT4.
// All methods of one shape run interleaved (A B C ... A B C ...); the table reports the median
// and the min over --reps repetitions (after one warm-up) and the ratio of medians to FP32.
//
// For 2-core numbers pin the threads: OMP_PLACES=cores OMP_PROC_BIND=close. Debian's OpenBLAS
// takes this CPU for Haswell; OPENBLAS_CORETYPE=SkylakeX doubles its SGEMM speed, so set it.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/half.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "simd/cpu_info.h"
#include "simd/kernels.h"
#include "simd/packed_format.h"

using namespace obr;
using namespace obr::simd;

namespace {

struct Options {
  bool quick = false;
  std::string csv;
  int threads = 0;  // 0: OMP_NUM_THREADS / all cores
  int reps = 7;
  double ws_gb = 1.0;
  int64_t tokens = 2048;
  bool decode = true, prefill = true;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // empty: the three Llama-7B shapes
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Method {
  std::string name;
  std::function<void()> rep;   // one repetition
  int64_t calls_per_rep = 1;   // products per repetition (the copies, for decode)
  double bytes = 0;            // weight bytes per product
  double ops = 0;              // dense-equivalent operations per product
  std::vector<double> times;   // seconds per product, one per repetition
};

struct Row {
  std::string phase, shape, method;
  double med_s, min_s, gbps, gops, vs_fp32;
  int64_t copies;
};

// Runs all methods interleaved: warm-up, then reps x (A B C ...).
void run_interleaved(std::vector<Method>& methods, int reps) {
  for (Method& m : methods) m.rep();
  for (int r = 0; r < reps; ++r) {
    for (Method& m : methods) {
      const double t0 = now_s();
      m.rep();
      m.times.push_back((now_s() - t0) / double(m.calls_per_rep));
    }
  }
}

// Random INT4 codes for one weight matrix [N, K] with the keep mask of each format.
struct Int4Source {
  std::vector<int8_t> q;
  std::vector<uint8_t> keep24, keep50;
  std::vector<float> sw;
};

Int4Source make_int4(int64_t N, int64_t K, uint64_t seed) {
  Int4Source s;
  s.q.resize(size_t(N * K));
  s.keep24.assign(size_t(N * K), 0);
  s.keep50.resize(size_t(N * K));
  s.sw.resize(size_t(N));
  Rng rng(seed);
  for (int64_t n = 0; n < N; ++n) s.sw[size_t(n)] = float(0.001 + 0.01 * rng.uniform());
  for (int64_t i = 0; i < N * K; ++i) {
    s.q[size_t(i)] = int8_t(int(rng.below(16)) - 8);
    s.keep50[size_t(i)] = uint8_t(rng.below(2));
  }
  static const int kPairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  for (int64_t g = 0; g < N * K / 4; ++g) {
    const int* p = kPairs[rng.below(6)];
    s.keep24[size_t(4 * g + p[0])] = s.keep24[size_t(4 * g + p[1])] = 1;
  }
  return s;
}

// ---- oneDNN helpers ---------------------------------------------------------------------------

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct DnnlMatmul {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul prim;
  dnnl::matmul::primitive_desc pd;
  dnnl::memory src, dst;
  std::vector<dnnl::memory> weights;  // copies in oneDNN's preferred layout, inside `arena`

  // src [T, K] of src_dt, weights [K, N] (from W [N, K] row-major: tag ba), dst [T, N] f32.
  // wdata: the plain weights ([N, K] elements of wei_dt). per_n_scales: output scales (int8).
  DnnlMatmul(int64_t T, int64_t N, int64_t K, dt src_dt, dt wei_dt, const void* wdata,
             double ws_bytes, AlignedBytes& arena, const std::vector<float>* per_n_scales) {
    const dnnl::memory::desc src_md({T, K}, src_dt, tag::ab);
    const dnnl::memory::desc wei_any({K, N}, wei_dt, tag::any);
    const dnnl::memory::desc wei_plain({K, N}, wei_dt, tag::ba);
    const dnnl::memory::desc dst_md({T, N}, dt::f32, tag::ab);
    dnnl::primitive_attr attr;
    if (per_n_scales) attr.set_output_scales(1 << 1, *per_n_scales);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_any, dst_md), attr, eng);
    prim = dnnl::matmul(pd);
    src = dnnl::memory(pd.src_desc(), eng);
    dst = dnnl::memory(pd.dst_desc(), eng);
    std::memset(src.get_data_handle(), 1, pd.src_desc().get_size());
    const size_t bytes = pd.weights_desc().get_size(), stride = (bytes + 4095) / 4096 * 4096;
    const int64_t copies = std::max<int64_t>(1, int64_t(std::ceil(ws_bytes / double(bytes))));
    arena.grow(size_t(copies) * stride);
    dnnl::memory plain(wei_plain, eng, const_cast<void*>(wdata));
    for (int64_t c = 0; c < copies; ++c) {
      weights.emplace_back(pd.weights_desc(), eng, arena.data() + c * int64_t(stride));
      if (c == 0) {
        dnnl::reorder(plain, weights[0]).execute(strm, plain, weights[0]);
        strm.wait();
      } else {
        std::memcpy(arena.data() + c * int64_t(stride), arena.data(), bytes);
      }
    }
  }
  void run(size_t copy) {
    prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights[copy]}, {DNNL_ARG_DST, dst}});
    strm.wait();
  }
  double weight_bytes() const { return double(pd.weights_desc().get_size()); }
};

// The decode working sets: one buffer per method, reused (not re-faulted) for every shape.
struct Arenas {
  AlignedBytes fp32, bf16, s8, prefill_bf16, prefill_s8;
  std::vector<PackedWeights> int4[3];
};

// ---- the benchmark ------------------------------------------------------------------------------

const Int4Format kFormats[3] = {Int4Format::kDense, Int4Format::kSparse24, Int4Format::kUnstructured};
const char* kInt4Names[3] = {"obr INT4 dense", "obr INT4 2:4", "obr INT4 unstr-50%"};

int64_t copies_for(double bytes_per_matrix, double ws_bytes) {
  return std::max<int64_t>(1, int64_t(std::ceil(ws_bytes / bytes_per_matrix)));
}

void add_rows(std::vector<Row>& rows, const std::string& phase, const std::string& shape,
              const std::vector<Method>& methods) {
  const double fp32 = median(methods[0].times);
  for (const Method& m : methods) {
    const double med = median(m.times), mn = *std::min_element(m.times.begin(), m.times.end());
    rows.push_back({phase, shape, m.name, med, mn, m.bytes / med * 1e-9, m.ops / med * 1e-9,
                    fp32 / med, m.calls_per_rep});
  }
}

void bench_shape(int64_t N, int64_t K, const Options& opt, Arenas& arenas, std::vector<Row>& rows) {
  const std::string shape = std::to_string(N) + "x" + std::to_string(K);
  const double ws = opt.ws_gb * 1e9;
  const double t_setup = now_s();
  const Int4Source src = make_int4(N, K, uint64_t(N * 31 + K));
  std::vector<PackedWeights> packed;
  for (int f = 0; f < 3; ++f) {
    packed.push_back(pack_int4(kFormats[f], src.q.data(), src.sw.data(), N, K,
                               f == 1 ? src.keep24.data() : f == 2 ? src.keep50.data() : nullptr));
  }
  // Dense float / bf16 / int8 versions of the same (dense) codes.
  std::vector<float> wf(size_t(N * K));
  std::vector<uint16_t> wb(size_t(N * K));
  std::vector<int8_t> wi8(size_t(N * K));
  for (int64_t i = 0; i < N * K; ++i) {
    wf[size_t(i)] = float(src.q[size_t(i)]) * src.sw[size_t(i / K)];
    wb[size_t(i)] = f32_to_bf16(wf[size_t(i)]);
    wi8[size_t(i)] = src.q[size_t(i)];
  }
  Rng rng(7);
  std::vector<int8_t> qa(size_t(opt.tokens * K));
  std::vector<float> sa(size_t(opt.tokens), 0.05f);
  for (auto& v : qa) v = int8_t(int(rng.below(16)) - 8);
  std::vector<float> xf(size_t(opt.tokens * K));
  for (size_t i = 0; i < xf.size(); ++i) xf[i] = float(qa[i]) * 0.05f;

  // ---- decode: T = 1 over >= ws bytes of weights per method ----
  if (opt.decode) {
    std::vector<Method> methods;
    const int64_t cf = copies_for(4.0 * double(N * K), ws);
    const size_t fbytes = size_t(N * K) * 4;
    arenas.fp32.grow(size_t(cf) * fbytes);
    for (int64_t c = 0; c < cf; ++c) std::memcpy(arenas.fp32.data() + c * int64_t(fbytes), wf.data(), fbytes);
    const float* wcopies = reinterpret_cast<const float*>(arenas.fp32.data());
    auto y = std::make_shared<std::vector<float>>(size_t(N));
    methods.push_back({"OpenBLAS FP32 sgemv", [=, &xf] {
                         for (int64_t c = 0; c < cf; ++c)
                           cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f,
                                       wcopies + c * N * K, int(K), xf.data(), 1, 0.0f, y->data(), 1);
                       }, cf, 4.0 * double(N * K), 2.0 * double(N * K), {}});
    auto bf = std::make_shared<DnnlMatmul>(1, N, K, dt::bf16, dt::bf16, wb.data(), ws, arenas.bf16,
                                           nullptr);
    methods.push_back({"oneDNN BF16 matmul", [bf] {
                         for (size_t c = 0; c < bf->weights.size(); ++c) bf->run(c);
                       }, int64_t(bf->weights.size()), bf->weight_bytes(), 2.0 * double(N * K), {}});
    auto i8 = std::make_shared<DnnlMatmul>(1, N, K, dt::u8, dt::s8, wi8.data(), ws, arenas.s8,
                                           &src.sw);
    methods.push_back({"oneDNN u8s8 matmul", [i8] {
                         for (size_t c = 0; c < i8->weights.size(); ++c) i8->run(c);
                       }, int64_t(i8->weights.size()), i8->weight_bytes(), 2.0 * double(N * K), {}});
    for (int f = 0; f < 3; ++f) {
      const int64_t c = copies_for(double(packed[size_t(f)].bytes()), ws);
      std::vector<PackedWeights>& wc = arenas.int4[f];
      if (int64_t(wc.size()) < c) wc.resize(size_t(c));
      for (int64_t i = 0; i < c; ++i) wc[size_t(i)] = packed[size_t(f)];  // reuses the buffers
      const PackedWeights* wp = wc.data();
      methods.push_back({kInt4Names[f], [wp, c, y, &qa, &sa] {
                           for (int64_t i = 0; i < c; ++i)
                             int4_matmul(wp[i], qa.data(), sa.data(), 1, y->data());
                         }, c, double(packed[size_t(f)].bytes()), 2.0 * double(N * K), {}});
    }
    std::fprintf(stderr, "  %s decode: setup %.1f s\n", shape.c_str(), now_s() - t_setup);
    run_interleaved(methods, opt.reps);
    add_rows(rows, "decode T=1", shape, methods);
  }

  // ---- prefill: T = opt.tokens, one weight matrix per method ----
  if (opt.prefill) {
    const int64_t T = opt.tokens;
    const double ops = 2.0 * double(T) * double(N) * double(K);
    std::vector<Method> methods;
    auto y = std::make_shared<std::vector<float>>(size_t(T * N));
    methods.push_back({"OpenBLAS FP32 sgemm", [=, &xf, &wf] {
                         cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(N), int(K),
                                     1.0f, xf.data(), int(K), wf.data(), int(K), 0.0f, y->data(),
                                     int(N));
                       }, 1, 4.0 * double(N * K), ops, {}});
    auto bf = std::make_shared<DnnlMatmul>(T, N, K, dt::bf16, dt::bf16, wb.data(), 0.0,
                                           arenas.prefill_bf16, nullptr);
    methods.push_back({"oneDNN BF16 matmul", [bf] { bf->run(0); }, 1, bf->weight_bytes(), ops, {}});
    auto i8 = std::make_shared<DnnlMatmul>(T, N, K, dt::u8, dt::s8, wi8.data(), 0.0,
                                           arenas.prefill_s8, &src.sw);
    methods.push_back({"oneDNN u8s8 matmul", [i8] { i8->run(0); }, 1, i8->weight_bytes(), ops, {}});
    auto y4 = std::make_shared<std::vector<float>>(size_t(T * N));  // dense INT4, checked below
    for (int f = 0; f < 3; ++f) {
      const PackedWeights* w = &packed[size_t(f)];
      auto yf = f == 0 ? y4 : y;
      methods.push_back({kInt4Names[f], [w, yf, T, &qa, &sa] {
                           int4_matmul(*w, qa.data(), sa.data(), T, yf->data());
                         }, 1, double(w->bytes()), ops, {}});
    }
    run_interleaved(methods, std::max(5, opt.reps / 2 + 2));
    add_rows(rows, "prefill T=" + std::to_string(T), shape, methods);
    // The same product two ways (the dense INT4 codes times the activation codes, scaled):
    // OpenBLAS in f32 and obr in int32 + f32 epilogue agree to f32 rounding.
    methods[0].rep();
    double err = 0, ref = 0;
    for (size_t i = 0; i < y->size(); ++i) {
      err = std::max(err, double(std::fabs((*y)[i] - (*y4)[i])));
      ref = std::max(ref, double(std::fabs((*y)[i])));
    }
    std::fprintf(stderr, "  %s prefill check: max |y_int4_dense - y_sgemm| / max |y_sgemm| = %.1e\n",
                 shape.c_str(), err / ref);
  }
}

void print_rows(const std::vector<Row>& rows) {
  std::printf("%-12s %-11s %-22s %10s %10s %9s %9s %8s %7s\n", "phase", "shape NxK", "method",
              "median ms", "min ms", "GB/s", "GOPS", "vs FP32", "copies");
  for (const Row& r : rows) {
    std::printf("%-12s %-11s %-22s %10.3f %10.3f %9.1f %9.1f %7.2fx %7lld\n", r.phase.c_str(),
                r.shape.c_str(), r.method.c_str(), r.med_s * 1e3, r.min_s * 1e3, r.gbps, r.gops,
                r.vs_fp32, (long long)r.copies);
  }
}

void write_csv(const std::string& path, const std::vector<Row>& rows, int threads,
               const std::string& target) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "phase,shape,method,threads,target,median_ms,min_ms,gbps,gops,vs_fp32,copies\n");
  for (const Row& r : rows) {
    std::fprintf(f, "%s,%s,%s,%d,%s,%.4f,%.4f,%.2f,%.2f,%.3f,%lld\n", r.phase.c_str(),
                 r.shape.c_str(), r.method.c_str(), threads, target.c_str(), r.med_s * 1e3,
                 r.min_s * 1e3, r.gbps, r.gops, r.vs_fp32, (long long)r.copies);
  }
  std::fclose(f);
}

const char* env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v ? v : dflt;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--quick") opt.quick = true;
    else if (a == "--csv") opt.csv = next();
    else if (a == "--threads") opt.threads = std::stoi(next());
    else if (a == "--reps") opt.reps = std::stoi(next());
    else if (a == "--ws-gb") opt.ws_gb = std::stod(next());
    else if (a == "--tokens") opt.tokens = std::stoll(next());
    else if (a == "--phase") {
      const std::string p = next();
      opt.decode = p == "decode" || p == "all";
      opt.prefill = p == "prefill" || p == "all";
    } else if (a == "--shape") {
      const std::string v = next();
      const size_t x = v.find('x');
      opt.shapes.emplace_back(std::stoll(v.substr(0, x)), std::stoll(v.substr(x + 1)));
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--csv FILE] [--threads N] [--reps R] [--ws-gb G] "
                   "[--tokens T] [--phase decode|prefill|all] [--shape NxK]...\n", argv[0]);
      return 2;
    }
  }
  if (opt.quick) {  // seconds: one shape, small working set, few tokens
    opt.reps = 3;
    opt.ws_gb = 0.125;
    opt.tokens = 256;
  }
  if (opt.threads > 0) set_num_threads(opt.threads);
  const int threads = num_threads();
  openblas_set_num_threads(threads);
  const std::string target = best_target_name();

  std::printf("bench_kernels: threads %d, SIMD target %s, OpenBLAS core %s "
              "(OPENBLAS_CORETYPE=%s%s), OMP_PLACES=%s OMP_PROC_BIND=%s\n",
              threads, target.c_str(), openblas_get_corename(), env_or("OPENBLAS_CORETYPE", "unset"),
              std::getenv("OPENBLAS_CORETYPE") ? "" : "; SkylakeX recommended on this CPU",
              env_or("OMP_PLACES", "unset"), env_or("OMP_PROC_BIND", "unset"));
  std::printf("decode: T=1, working set >= %.2f GB of each method's own weight bytes, %d reps; "
              "prefill: T=%lld, %d reps; methods interleaved, 1 warm-up each\n", opt.ws_gb,
              opt.reps, (long long)opt.tokens, std::max(5, opt.reps / 2 + 2));

  Arenas arenas;
  {  // Reference read bandwidth: sum of a buffer >= the decode working set.
    const size_t bytes = size_t(std::max(opt.ws_gb, 0.25) * 1e9) / 64 * 64;
    AlignedBytes& buf = arenas.fp32;  // becomes the FP32 working set afterwards
    buf.grow(bytes);
    std::memset(buf.data(), 1, bytes);
    std::vector<double> ts;
    uint64_t sink = 0;
    for (int r = 0; r < opt.reps + 1; ++r) {
      const double t0 = now_s();
      sink += sum_u64_parallel(buf.data(), bytes);
      if (r > 0) ts.push_back(now_s() - t0);
    }
    std::printf("read bandwidth (sum of %.2f GB): median %.1f GB/s, best %.1f GB/s  [%llu]\n",
                double(bytes) * 1e-9, double(bytes) / median(ts) * 1e-9,
                double(bytes) / *std::min_element(ts.begin(), ts.end()) * 1e-9,
                (unsigned long long)(sink & 0xff));
  }

  std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  if (opt.quick) shapes = {{4096, 4096}};
  if (!opt.shapes.empty()) shapes = opt.shapes;
  std::vector<Row> rows;
  for (auto [N, K] : shapes) {
    std::fprintf(stderr, "shape %lldx%lld...\n", (long long)N, (long long)K);
    bench_shape(N, K, opt, arenas, rows);
  }
  print_rows(rows);
  if (!opt.csv.empty()) write_csv(opt.csv, rows, threads, target);
  return 0;
}
