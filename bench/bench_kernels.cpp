// Benchmark of the INT4 kernels against dense baselines measured in the same run.
//
//   bench_kernels [--quick] [--csv FILE] [--threads N] [--reps R] [--prefill-reps R] [--ws-gb G]
//                 [--tokens T] [--phase decode|prefill|all] [--shape NxK]... [--no-seed]
//                 [--seed-tokens T] [--seed-reps R]
//
// Decode (T = 1, a matrix-vector product; memory bound): every method cycles through its own
// copies of the weight matrix, as many as make >= --ws-gb (default 1 GB) of that method's own
// weight bytes (1 GB = 1e9 B; FP32: 4 B/weight, 15 copies of 4096 x 4096; 2:4 INT4: 0.377
// B/weight, 159 copies), so that no method runs from the last-level cache. Time per product = time of one
// pass over the copies / copies. GB/s = the method's weight bytes per product (codes, indices,
// masks, scales; activations and outputs are < 0.1% and not counted) / time. A plain streaming
// read of the FP32 working set (sum of its words, "read probe") runs interleaved with the
// methods; "% peak" of a decode row is the method's GB/s over the probe's (medians).
// Prefill (T = --tokens, default 2048; compute bound): one weight matrix per method,
// GOPS = 2 * T * N * K / time (dense-equivalent: the sparse kernels get no credit for skipped
// work, so GOPS directly compares times). "% peak" of a prefill row: the operations the method
// really executes per second (2:4 INT4: half of the dense-equivalent; the unstructured kernel
// runs every MAC) over the peak of the instruction it runs on (vpdpbusd for int8 / INT4,
// vfmadd231ps for FP32, vdpbf16ps for BF16), measured by probes (bench_common.h) that run
// interleaved with the methods of the same group.
// The seed's shape (X [65536, 4096] x W [4096, 4096], T = --seed-tokens) runs last, prefill
// only, --seed-reps (default 3) repetitions: one FP32 product takes seconds.
// Methods: OpenBLAS FP32 (sgemv / sgemm), oneDNN BF16 matmul and oneDNN u8 x s8 matmul (f32
// output with per-channel scales; weights pre-reordered to oneDNN's preferred layout, like
// ours are pre-packed), and obr::simd::int4_matmul on dense, 2:4 and 50%-unstructured INT4.
// All methods of one shape run interleaved (A B C ... A B C ...); the table reports the median
// and the min over the repetitions (after one warm-up) and ratios of medians.
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

#include "bench/bench_common.h"
#include "core/half.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "simd/cpu_info.h"
#include "simd/kernels.h"
#include "simd/packed_format.h"

using namespace obr;
using namespace obr::simd;
using obr::bench::median;
using obr::bench::min_of;
using obr::bench::now_s;

namespace {

struct Options {
  bool quick = false;
  std::string csv;
  int threads = 0;  // 0: OMP_NUM_THREADS / all cores
  int reps = 7;           // decode repetitions
  int prefill_reps = 5;
  double ws_gb = 1.0;
  int64_t tokens = 2048;
  bool decode = true, prefill = true;
  bool seed_shape = true;  // X [seed_tokens, 4096] x W [4096, 4096], prefill only
  int64_t seed_tokens = 65536;
  int seed_reps = 3;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // empty: the three Llama-7B shapes
};

// What a method is, for the ratio columns and the peak it is compared with.
enum class Kind {
  kFP32, kBF16, kU8S8, kInt4Dense, kInt4Sparse24, kInt4Unstructured,
  kReadProbe, kVnniProbe, kFmaProbe, kBf16Probe  // the machine's limits, measured alongside
};

bool is_probe(Kind k) { return k >= Kind::kReadProbe; }

struct Method {
  Kind kind;
  std::string name;
  std::function<void()> rep;   // one repetition
  int64_t calls_per_rep = 1;   // products per repetition (the copies, for decode)
  double bytes = 0;            // weight bytes per product
  double ops = 0;              // dense-equivalent operations per product
  std::vector<double> times;   // seconds per product, one per repetition
};

// Ratios are of medians: time of the baseline / time of this method (> 1: faster).
// pct_peak: decode, % of the read probe's GB/s; prefill, % of the measured instruction peak.
struct Row {
  std::string phase, shape, method;
  Kind kind;
  double med_s, min_s, gbps, gops, vs_fp32, vs_bf16, vs_u8s8, vs_int4_dense, pct_peak;
  int64_t copies;
  int reps;
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
  // dst_buf: [T, N] f32 output to write into (null: oneDNN allocates one).
  DnnlMatmul(int64_t T, int64_t N, int64_t K, dt src_dt, dt wei_dt, const void* wdata,
             double ws_bytes, AlignedBytes& arena, const std::vector<float>* per_n_scales,
             float* dst_buf = nullptr) {
    const dnnl::memory::desc src_md({T, K}, src_dt, tag::ab);
    const dnnl::memory::desc wei_any({K, N}, wei_dt, tag::any);
    const dnnl::memory::desc wei_plain({K, N}, wei_dt, tag::ba);
    const dnnl::memory::desc dst_md({T, N}, dt::f32, tag::ab);
    dnnl::primitive_attr attr;
    if (per_n_scales) attr.set_output_scales(1 << 1, *per_n_scales);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_any, dst_md), attr, eng);
    prim = dnnl::matmul(pd);
    src = dnnl::memory(pd.src_desc(), eng);
    dst = dst_buf ? dnnl::memory(pd.dst_desc(), eng, dst_buf) : dnnl::memory(pd.dst_desc(), eng);
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
const Kind kInt4Kinds[3] = {Kind::kInt4Dense, Kind::kInt4Sparse24, Kind::kInt4Unstructured};

int64_t copies_for(double bytes_per_matrix, double ws_bytes) {
  return std::max<int64_t>(1, int64_t(std::ceil(ws_bytes / bytes_per_matrix)));
}

// Median time of the method of kind k in the group (0 if absent).
double median_of(const std::vector<Method>& methods, Kind k) {
  for (const Method& m : methods)
    if (m.kind == k) return median(m.times);
  return 0;
}

// The probe of the instruction a method's prefill runs on.
Kind probe_for(Kind k) {
  switch (k) {
    case Kind::kFP32: return Kind::kFmaProbe;
    case Kind::kBF16: return Kind::kBf16Probe;
    default: return Kind::kVnniProbe;
  }
}

// The same peak from the start of the run (used where a group has no probe of its own).
double start_peak(Kind probe, const obr::bench::Peaks& p) {
  return probe == Kind::kFmaProbe ? p.fma_gflops : probe == Kind::kBf16Probe ? p.bf16_gflops : p.vnni_gops;
}

void add_rows(std::vector<Row>& rows, const std::string& phase, const std::string& shape,
              const std::vector<Method>& methods, bool decode, const obr::bench::Peaks& peaks) {
  const double fp32 = median_of(methods, Kind::kFP32), bf16 = median_of(methods, Kind::kBF16),
               u8s8 = median_of(methods, Kind::kU8S8), dense4 = median_of(methods, Kind::kInt4Dense);
  // Rates of the probes in this group (medians): GB/s for the read probe, GOPS for the others.
  auto probe_rate = [&](Kind k) {
    for (const Method& m : methods)
      if (m.kind == k) return (k == Kind::kReadProbe ? m.bytes : m.ops) / median(m.times) * 1e-9;
    return k == Kind::kReadProbe ? 0.0 : start_peak(k, peaks);
  };
  auto ratio = [](double base, double t) { return base > 0 ? base / t : 0.0; };
  for (const Method& m : methods) {
    const double med = median(m.times), mn = min_of(m.times);
    const double gbps = m.bytes / med * 1e-9, gops = m.ops / med * 1e-9;
    double pct = 0;
    if (is_probe(m.kind)) {
      pct = 0;
    } else if (decode) {
      const double bw = probe_rate(Kind::kReadProbe);
      pct = bw > 0 ? 100 * gbps / bw : 0;
    } else {
      const double executed = m.kind == Kind::kInt4Sparse24 ? 0.5 * gops : gops;
      const double peak = probe_rate(probe_for(m.kind));
      pct = peak > 0 ? 100 * executed / peak : 0;
    }
    Row row{phase, shape, m.name, m.kind, med, mn, gbps, gops, ratio(fp32, med), ratio(bf16, med),
            ratio(u8s8, med), ratio(dense4, med), pct, m.calls_per_rep, int(m.times.size())};
    if (is_probe(m.kind)) row.vs_fp32 = row.vs_bf16 = row.vs_u8s8 = row.vs_int4_dense = 0;
    if (m.kind == Kind::kReadProbe) row.gops = 0;
    rows.push_back(row);
  }
}

void bench_shape(int64_t N, int64_t K, const Options& opt, const obr::bench::Peaks& peaks, Arenas& arenas,
                 std::vector<Row>& rows, const std::string& phase_suffix = "") {
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
    // The reference streaming read over the FP32 copies (the largest working set).
    const uint8_t* fp32_bytes = arenas.fp32.data();
    auto sink = std::make_shared<uint64_t>(0);
    methods.push_back({Kind::kReadProbe, "read probe (sum)", [=] {
                         *sink += sum_u64_parallel(fp32_bytes, size_t(cf) * fbytes);
                       }, 1, double(cf) * double(fbytes), 0, {}});
    methods.push_back({Kind::kFP32, "OpenBLAS FP32 sgemv", [=, &xf] {
                         for (int64_t c = 0; c < cf; ++c)
                           cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f,
                                       wcopies + c * N * K, int(K), xf.data(), 1, 0.0f, y->data(), 1);
                       }, cf, 4.0 * double(N * K), 2.0 * double(N * K), {}});
    auto bf = std::make_shared<DnnlMatmul>(1, N, K, dt::bf16, dt::bf16, wb.data(), ws, arenas.bf16,
                                           nullptr);
    methods.push_back({Kind::kBF16, "oneDNN BF16 matmul", [bf] {
                         for (size_t c = 0; c < bf->weights.size(); ++c) bf->run(c);
                       }, int64_t(bf->weights.size()), bf->weight_bytes(), 2.0 * double(N * K), {}});
    auto i8 = std::make_shared<DnnlMatmul>(1, N, K, dt::u8, dt::s8, wi8.data(), ws, arenas.s8,
                                           &src.sw);
    methods.push_back({Kind::kU8S8, "oneDNN u8s8 matmul", [i8] {
                         for (size_t c = 0; c < i8->weights.size(); ++c) i8->run(c);
                       }, int64_t(i8->weights.size()), i8->weight_bytes(), 2.0 * double(N * K), {}});
    for (int f = 0; f < 3; ++f) {
      const int64_t c = copies_for(double(packed[size_t(f)].bytes()), ws);
      std::vector<PackedWeights>& wc = arenas.int4[f];
      if (int64_t(wc.size()) < c) wc.resize(size_t(c));
      for (int64_t i = 0; i < c; ++i) wc[size_t(i)] = packed[size_t(f)];  // reuses the buffers
      const PackedWeights* wp = wc.data();
      methods.push_back({kInt4Kinds[f], kInt4Names[f], [wp, c, y, &qa, &sa] {
                           for (int64_t i = 0; i < c; ++i)
                             int4_matmul(wp[i], qa.data(), sa.data(), 1, y->data());
                         }, c, double(packed[size_t(f)].bytes()), 2.0 * double(N * K), {}});
    }
    std::fprintf(stderr, "  %s decode: setup %.1f s\n", shape.c_str(), now_s() - t_setup);
    run_interleaved(methods, opt.reps);
    add_rows(rows, "decode T=1", shape, methods, true, peaks);
  }

  // ---- prefill: T = opt.tokens, one weight matrix per method ----
  if (opt.prefill) {
    const int64_t T = opt.tokens;
    const double ops = 2.0 * double(T) * double(N) * double(K);
    std::vector<Method> methods;
    auto y = std::make_shared<std::vector<float>>(size_t(T * N));
    methods.push_back({Kind::kFP32, "OpenBLAS FP32 sgemm", [=, &xf, &wf] {
                         cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(N), int(K),
                                     1.0f, xf.data(), int(K), wf.data(), int(K), 0.0f, y->data(),
                                     int(N));
                       }, 1, 4.0 * double(N * K), ops, {}});
    // oneDNN writes into y too (no extra [T, N] buffers: at T = 65536 each is 1 GiB).
    auto bf = std::make_shared<DnnlMatmul>(T, N, K, dt::bf16, dt::bf16, wb.data(), 0.0,
                                           arenas.prefill_bf16, nullptr, y->data());
    methods.push_back({Kind::kBF16, "oneDNN BF16 matmul", [bf] { bf->run(0); }, 1, bf->weight_bytes(), ops, {}});
    auto i8 = std::make_shared<DnnlMatmul>(T, N, K, dt::u8, dt::s8, wi8.data(), 0.0,
                                           arenas.prefill_s8, &src.sw, y->data());
    methods.push_back({Kind::kU8S8, "oneDNN u8s8 matmul", [i8] { i8->run(0); }, 1, i8->weight_bytes(), ops, {}});
    // The instruction peaks, measured in the same loop (each run ~0.03 s).
    using obr::bench::Probe;
    const int nthreads = num_threads();
    auto probe_sink = std::make_shared<int64_t>(0);
    const std::pair<Kind, Probe> probes[3] = {
        {Kind::kFmaProbe, Probe::kFma}, {Kind::kBf16Probe, Probe::kBf16}, {Kind::kVnniProbe, Probe::kVnni}};
    const char* probe_names[3] = {"peak probe FMA f32", "peak probe vdpbf16ps", "peak probe vpdpbusd"};
    for (int i = 0; i < 3; ++i) {
      const Probe pr = probes[i].second;
      if (!obr::bench::probe_supported(pr)) continue;
      methods.push_back({probes[i].first, probe_names[i], [=] { *probe_sink += obr::bench::run_probe(pr, nthreads); },
                         1, 0, obr::bench::probe_ops(pr, nthreads), {}});
    }
    auto y4 = std::make_shared<std::vector<float>>(size_t(T * N));  // dense INT4, checked below
    for (int f = 0; f < 3; ++f) {
      const PackedWeights* w = &packed[size_t(f)];
      auto yf = f == 0 ? y4 : y;
      methods.push_back({kInt4Kinds[f], kInt4Names[f], [w, yf, T, &qa, &sa] {
                           int4_matmul(*w, qa.data(), sa.data(), T, yf->data());
                         }, 1, double(w->bytes()), ops, {}});
    }
    std::fprintf(stderr, "  %s prefill T=%lld: setup %.1f s\n", shape.c_str(), (long long)T, now_s() - t_setup);
    run_interleaved(methods, opt.prefill_reps);
    add_rows(rows, "prefill T=" + std::to_string(T) + phase_suffix, shape, methods, false, peaks);
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

const char* peak_name(const Row& r) {
  if (is_probe(r.kind)) return "-";
  if (r.phase.rfind("decode", 0) == 0) return "read probe";
  switch (r.kind) {
    case Kind::kFP32: return "FMA f32";
    case Kind::kBF16: return "vdpbf16ps";
    default: return "vpdpbusd";
  }
}

void print_rows(const std::vector<Row>& rows) {
  std::printf("\n%-22s %-11s %-20s %9s %9s %7s %7s %7s %7s %7s %7s %6s %-10s %6s\n", "phase", "shape NxK",
              "method", "median ms", "min ms", "GB/s", "GOPS", "vsFP32", "vsBF16", "vsU8S8", "vsINT4", "%peak",
              "of", "copies");
  std::string last;
  for (const Row& r : rows) {
    if (!last.empty() && last != r.phase + r.shape) std::printf("\n");
    last = r.phase + r.shape;
    std::printf("%-22s %-11s %-20s %9.3f %9.3f %7.1f %7.1f %6.2fx %6.2fx %6.2fx %6.2fx %6.1f %-10s %6lld\n",
                r.phase.c_str(), r.shape.c_str(), r.method.c_str(), r.med_s * 1e3, r.min_s * 1e3, r.gbps, r.gops,
                r.vs_fp32, r.vs_bf16, r.vs_u8s8, r.vs_int4_dense, r.pct_peak, peak_name(r), (long long)r.copies);
  }
}

// The targets for 2:4 INT4, each with the number that decides it.
void print_targets(const std::vector<Row>& rows, int64_t seed_tokens) {
  std::printf("\ntargets (2:4 INT4; ratios of medians):\n");
  auto verdict = [](double v, double goal) { return v >= goal ? "met" : "MISSED"; };
  for (const Row& r : rows) {
    if (r.kind != Kind::kInt4Sparse24) continue;
    if (r.phase.rfind("decode", 0) == 0) {
      std::printf("  %s %-11s  %5.2fx FP32 (>= 8: %s)  %5.2fx BF16 (>= 4: %s)  %5.2fx INT4 dense (>= 1.2: %s)  "
                  "%5.1f%% of read BW (>= 75: %s)\n",
                  r.phase.c_str(), r.shape.c_str(), r.vs_fp32, verdict(r.vs_fp32, 8), r.vs_bf16,
                  verdict(r.vs_bf16, 4), r.vs_int4_dense, verdict(r.vs_int4_dense, 1.2), r.pct_peak,
                  verdict(r.pct_peak, 75));
    } else {
      const bool seed = r.phase.find("T=" + std::to_string(seed_tokens)) != std::string::npos;
      std::printf("  %s %-11s  %5.2fx FP32 (%s%s)  %5.2fx oneDNN u8s8 (>= 1.3: %s)\n", r.phase.c_str(),
                  r.shape.c_str(), r.vs_fp32, seed ? ">= 4.72: " : "no target", seed ? verdict(r.vs_fp32, 4.72) : "",
                  r.vs_u8s8, verdict(r.vs_u8s8, 1.3));
    }
  }
}

void write_csv(const std::string& path, const std::vector<Row>& rows, int threads, const std::string& target) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "phase,shape,method,threads,simd_target,median_ms,min_ms,gbps,gops,vs_fp32,vs_bf16,vs_u8s8,"
                  "vs_int4_dense,pct_peak,peak_of,copies,reps\n");
  for (const Row& r : rows) {
    std::fprintf(f, "%s,%s,%s,%d,%s,%.4f,%.4f,%.2f,%.2f,%.3f,%.3f,%.3f,%.3f,%.1f,%s,%lld,%d\n", r.phase.c_str(),
                 r.shape.c_str(), r.method.c_str(), threads, target.c_str(), r.med_s * 1e3, r.min_s * 1e3, r.gbps,
                 r.gops, r.vs_fp32, r.vs_bf16, r.vs_u8s8, r.vs_int4_dense, r.pct_peak, peak_name(r),
                 (long long)r.copies, r.reps);
  }
  std::fclose(f);
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
    else if (a == "--prefill-reps") opt.prefill_reps = std::stoi(next());
    else if (a == "--ws-gb") opt.ws_gb = std::stod(next());
    else if (a == "--tokens") opt.tokens = std::stoll(next());
    else if (a == "--no-seed") opt.seed_shape = false;
    else if (a == "--seed-tokens") opt.seed_tokens = std::stoll(next());
    else if (a == "--seed-reps") opt.seed_reps = std::stoi(next());
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
                   "usage: %s [--quick] [--csv FILE] [--threads N] [--reps R] [--prefill-reps R] [--ws-gb G] "
                   "[--tokens T] [--phase decode|prefill|all] [--shape NxK]... [--no-seed] [--seed-tokens T] "
                   "[--seed-reps R]\n", argv[0]);
      return 2;
    }
  }
  if (opt.quick) {  // seconds: one shape, small working set, few tokens, no seed shape
    opt.reps = 3;
    opt.prefill_reps = 3;
    opt.ws_gb = 0.125;
    opt.tokens = 256;
    opt.seed_shape = false;
  }
  if (!opt.prefill) opt.seed_shape = false;
  if (opt.threads > 0) set_num_threads(opt.threads);
  const int threads = num_threads();
  openblas_set_num_threads(threads);
  const std::string target = best_target_name();

  std::printf("bench_kernels: threads %d (%s), SIMD target %s, OpenBLAS core %s "
              "(OPENBLAS_CORETYPE=%s%s), OMP_PLACES=%s OMP_PROC_BIND=%s\n",
              threads, obr::bench::thread_placement().c_str(), target.c_str(), openblas_get_corename(),
              obr::bench::env_or("OPENBLAS_CORETYPE", "unset"),
              std::getenv("OPENBLAS_CORETYPE") ? "" : "; SkylakeX recommended on this CPU",
              obr::bench::env_or("OMP_PLACES", "unset"), obr::bench::env_or("OMP_PROC_BIND", "unset"));
  std::printf("decode: T=1, working set >= %.2f GB of each method's own weight bytes, %d reps; "
              "prefill: T=%lld, %d reps", opt.ws_gb, opt.reps, (long long)opt.tokens, opt.prefill_reps);
  if (opt.seed_shape)
    std::printf("; seed shape: T=%lld x 4096x4096, %d reps", (long long)opt.seed_tokens, opt.seed_reps);
  std::printf("; methods interleaved, 1 warm-up each\n");

  const obr::bench::Peaks peaks = obr::bench::measure_peaks(threads, 5);
  std::printf("compute peaks (%d threads, median of 5): vpdpbusd %.0f GOPS (int8), FMA f32 %.0f GFLOP/s, "
              "vdpbf16ps %.0f GFLOP/s\n", threads, peaks.vnni_gops, peaks.fma_gflops, peaks.bf16_gflops);

  Arenas arenas;
  {  // Reference read bandwidth: sum of a buffer >= the decode working set.
    const size_t bytes = size_t(std::max(opt.ws_gb, 0.25) * 1e9) / 64 * 64;
    AlignedBytes& buf = arenas.fp32;  // becomes the FP32 working set afterwards
    buf.grow(bytes);
    std::memset(buf.data(), 1, bytes);
    uint64_t sink = 0;
    const auto ts = obr::bench::time_reps([&] { sink += sum_u64_parallel(buf.data(), bytes); }, opt.reps);
    std::printf("read bandwidth (sum of %.2f GB): median %.1f GB/s, best %.1f GB/s  [%llu]; the decode rows' %%peak "
                "is against the same read interleaved with them\n",
                double(bytes) * 1e-9, double(bytes) / median(ts) * 1e-9, double(bytes) / min_of(ts) * 1e-9,
                (unsigned long long)(sink & 0xff));
  }

  std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  if (opt.quick) shapes = {{4096, 4096}};
  if (!opt.shapes.empty()) shapes = opt.shapes;
  std::vector<Row> rows;
  for (auto [N, K] : shapes) {
    std::fprintf(stderr, "shape %lldx%lld...\n", (long long)N, (long long)K);
    bench_shape(N, K, opt, peaks, arenas, rows);
  }
  if (opt.seed_shape) {
    arenas = Arenas();  // the decode working sets are not needed any more
    Options seed = opt;
    seed.decode = false;
    seed.tokens = opt.seed_tokens;
    seed.prefill_reps = opt.seed_reps;
    std::fprintf(stderr, "seed shape: X [%lld, 4096] x W [4096, 4096]...\n", (long long)seed.tokens);
    bench_shape(4096, 4096, seed, peaks, arenas, rows, " (seed)");
  }
  print_rows(rows);
  print_targets(rows, opt.seed_tokens);
  if (!opt.csv.empty()) write_csv(opt.csv, rows, threads, target);
  return 0;
}
