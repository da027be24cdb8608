// Tests of the packed INT4 formats and the integer kernels (simd/).
//
// Every fast kernel runs on every SIMD target this binary carries and this CPU runs, and is
// compared EXACTLY with its scalar reference twin: int32 accumulators equal, f32 outputs equal
// bit for bit. Shapes are hostile on purpose (1, 3, 118, 152, sizes that are not multiples of
// any tile), activation pointers are misaligned, and results must not depend on the thread
// count. A failure message names the target, format, shape, index, expected and actual value.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "simd/cpu_info.h"
#include "simd/kernels.h"
#include "simd/kernels_ref.h"
#include "simd/packed_format.h"

using namespace obr;
using namespace obr::simd;

namespace {

const Int4Format kFormats[] = {Int4Format::kDense, Int4Format::kSparse24, Int4Format::kUnstructured};

// Codes q [N, K] in [-8, 7] and a keep mask that the format accepts.
//   kind 0: random codes; dense keeps all, 2:4 keeps 2 (sometimes 1 or 0) per group,
//           unstructured keeps each weight with probability 1/2;
//   kind 1: the extreme code -8 at every kept position;
//   kind 2: like 0, but every third row is all zero.
struct TestWeights {
  std::vector<int8_t> q;
  std::vector<uint8_t> keep;
  std::vector<float> sw;
};

TestWeights make_weights(Int4Format f, int64_t N, int64_t K, int kind, uint64_t seed) {
  Rng rng(seed);
  TestWeights w;
  w.q.assign(size_t(N * K), 0);
  w.keep.assign(size_t(N * K), 0);
  w.sw.resize(size_t(N));
  for (int64_t n = 0; n < N; ++n) {
    w.sw[size_t(n)] = float(0.001 + 0.02 * rng.uniform());
    for (int64_t g = 0; g < (K + 3) / 4; ++g) {
      const int64_t k0 = 4 * g, len = std::min<int64_t>(4, K - k0);
      if (f == Int4Format::kSparse24) {
        int want = 2 - int(rng.below(8) == 0) - int(rng.below(16) == 0);  // mostly 2, some 1 or 0
        for (int tries = 0; want > 0 && tries < 16; ++tries) {
          const int64_t k = k0 + int64_t(rng.below(uint64_t(len)));
          if (!w.keep[size_t(n * K + k)]) {
            w.keep[size_t(n * K + k)] = 1;
            --want;
          }
        }
      } else {
        for (int64_t k = k0; k < k0 + len; ++k) {
          w.keep[size_t(n * K + k)] = f == Int4Format::kDense ? 1 : uint8_t(rng.below(2));
        }
      }
    }
    const bool zero_row = kind == 2 && n % 3 == 0;
    for (int64_t k = 0; k < K; ++k) {
      const size_t i = size_t(n * K + k);
      if (!w.keep[i] || zero_row) continue;
      w.q[i] = kind == 1 ? int8_t(-8) : int8_t(int(rng.below(16)) - 8);
    }
  }
  return w;
}

// Activation codes qa [T, K] (A4 range, or A8 with a8), and positive scales.
void make_acts(int64_t T, int64_t K, int kind, bool a8, uint64_t seed, int8_t* qa, float* sa) {
  Rng rng(seed);
  for (int64_t t = 0; t < T; ++t) {
    sa[t] = float(0.01 + rng.uniform());
    for (int64_t k = 0; k < K; ++k) {
      int8_t v = a8 ? int8_t(int(rng.below(256)) - 128) : int8_t(int(rng.below(16)) - 8);
      if (kind == 1) v = a8 ? int8_t(-128) : int8_t(-8);
      if (kind == 2 && t % 2 == 1) v = 0;
      qa[t * K + k] = v;
    }
  }
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Empty string if equal; else a message naming the first mismatch.
std::string compare(const std::string& what, int64_t T, int64_t N, const float* y_ref,
                    const int32_t* acc_ref, const float* y, const int32_t* acc) {
  for (int64_t i = 0; i < T * N; ++i) {
    if (acc[i] != acc_ref[i] || bits_of(y[i]) != bits_of(y_ref[i])) {
      std::ostringstream os;
      os.precision(9);
      os << what << ": first mismatch at [t=" << i / N << ", n=" << i % N << "]: expected acc "
         << acc_ref[i] << " y " << y_ref[i] << ", got acc " << acc[i] << " y " << y[i];
      return os.str();
    }
  }
  return "";
}

// Buffers at deliberately odd addresses.
template <class T>
struct Misaligned {
  std::vector<uint8_t> storage;
  T* p;
  Misaligned(size_t n, size_t byte_offset) : storage(n * sizeof(T) + 64) {
    p = reinterpret_cast<T*>(storage.data() + byte_offset);
  }
};

struct Case {
  Int4Format format;
  int64_t N, K, T;
  int wkind, akind;
  bool a8, bias;
};

// Runs one case on every target against the reference, on 1 thread, or for `threads` on 1 and
// 2 threads (the sweep stays on 1: on a busy machine every parallel region can stall for a
// scheduler tick, and thread independence has its own test).
void run_case(const Case& c, bool threads) {
  const uint64_t seed = uint64_t(c.N * 1000003 + c.K * 1009 + c.T * 17 + int(c.format));
  const TestWeights tw = make_weights(c.format, c.N, c.K, c.wkind, seed);
  const PackedWeights W = pack_int4(c.format, tw.q.data(), tw.sw.data(), c.N, c.K, tw.keep.data());
  // Activations at an odd address (1..3 bytes past alignment), scales and outputs shifted too.
  Misaligned<int8_t> qa(size_t(c.T * c.K), 1 + size_t(c.T % 3));
  Misaligned<float> sa(size_t(c.T), 4);
  make_acts(c.T, c.K, c.akind, c.a8, seed + 1, qa.p, sa.p);
  std::vector<float> bias(size_t(c.N));
  for (int64_t n = 0; n < c.N; ++n) bias[size_t(n)] = float(n % 7) * 0.25f - 0.5f;
  const float* bias_p = c.bias ? bias.data() : nullptr;

  std::vector<float> y_ref(size_t(c.T * c.N));
  std::vector<int32_t> acc_ref(size_t(c.T * c.N));
  int4_matmul_ref(W, qa.p, sa.p, c.T, y_ref.data(), acc_ref.data(), bias_p);

  std::ostringstream shape;
  shape << format_name(c.format) << " N=" << c.N << " K=" << c.K << " T=" << c.T
        << " wkind=" << c.wkind << " akind=" << c.akind << (c.a8 ? " A8" : " A4")
        << (c.bias ? " bias" : "");
  struct RestoreThreads {  // also when a REQUIRE below throws
    int n = num_threads();
    ~RestoreThreads() { set_num_threads(n); }
  } restore_threads;
  for (const SimdTarget& target : runnable_targets()) {
    // SCALAR runs the reference code itself: comparing big products with themselves is slow
    // and proves nothing beyond the dispatch, which the small ones prove.
    if (target.name == "SCALAR" && c.N * c.K * c.T > (1 << 20)) continue;
    ScopedTarget scoped(target);
    for (int nt : threads ? std::vector<int>{1, 2} : std::vector<int>{1}) {
      set_num_threads(nt);
      Misaligned<float> y(size_t(c.T * c.N), 4);
      Misaligned<int32_t> acc(size_t(c.T * c.N), 4);
      std::fill(y.p, y.p + c.T * c.N, std::numeric_limits<float>::quiet_NaN());
      std::fill(acc.p, acc.p + c.T * c.N, -1);
      int4_matmul(W, qa.p, sa.p, c.T, y.p, acc.p, bias_p);
      const std::string what = target.name + " " + shape.str() + " threads=" + std::to_string(nt);
      const std::string err = compare(what, c.T, c.N, y_ref.data(), acc_ref.data(), y.p, acc.p);
      REQUIRE_MESSAGE(err.empty(), err);
    }
  }
}

std::string targets_list() {
  std::string s;
  for (const SimdTarget& t : runnable_targets()) s += (s.empty() ? "" : ", ") + t.name;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Formats

TEST_CASE("kernel formats: dense layout matches the documented bytes") {
  // 16 x 8, q[r][k] = (r + k) % 16 - 8: byte 4r + j = u4(q[r][j]) | u4(q[r][4 + j]) << 4.
  std::vector<int8_t> q(16 * 8);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 8; ++k) q[size_t(r * 8 + k)] = int8_t((r + k) % 16 - 8);
  std::vector<float> sw(16, 1.0f);
  const PackedWeights W = pack_int4(Int4Format::kDense, q.data(), sw.data(), 16, 8);
  REQUIRE(W.data.size() == 64);
  for (int r = 0; r < 16; ++r) {
    for (int j = 0; j < 4; ++j) {
      const int lo = (r + j) % 16, hi = (r + j + 4) % 16;  // u4 = q + 8
      CHECK_MESSAGE(W.data.data()[4 * r + j] == uint8_t(lo | hi << 4), "row ", r, " j ", j);
    }
  }
  CHECK(W.row_sum[3] == (3 + 4 + 5 + 6 + 7 + 8 + 9 + 10) - 64);
}

TEST_CASE("kernel formats: 2:4 layout matches the documented bytes") {
  // Row r keeps columns {1, 3} of group 0 and {0, 2} of group 1 (codes r - 8 and 7 - r, ...).
  const int64_t N = 16, K = 8;
  std::vector<int8_t> q(size_t(N * K), 0);
  for (int r = 0; r < 16; ++r) {
    q[size_t(r * K + 1)] = int8_t(r - 8);
    q[size_t(r * K + 3)] = int8_t(7 - r);
    q[size_t(r * K + 4)] = int8_t(r % 4);
    q[size_t(r * K + 6)] = -1;
  }
  std::vector<uint8_t> keep(size_t(N * K), 0);  // explicit: some of those codes are 0
  for (int r = 0; r < 16; ++r)
    for (int k : {1, 3, 4, 6}) keep[size_t(r * K + k)] = 1;
  std::vector<float> sw(16, 1.0f);
  const PackedWeights W = pack_int4(Int4Format::kSparse24, q.data(), sw.data(), N, K, keep.data());
  REQUIRE(W.k_pad == 32);
  REQUIRE(W.data.size() == 192);
  const uint8_t* d = W.data.data();
  for (int r = 0; r < 16; ++r) {
    // Sub-chunk s = 0: values in the low nibbles of bytes 4r + e.
    CHECK((d[4 * r + 0] & 15) == r);            // group 0, i0 = 1: q = r - 8
    CHECK((d[4 * r + 1] & 15) == 15 - r);       // group 0, i1 = 3: q = 7 - r
    CHECK((d[4 * r + 2] & 15) == r % 4 + 8);    // group 1, i0 = 0
    CHECK((d[4 * r + 3] & 15) == 7);            // group 1, i1 = 2: q = -1
    const int L = r / 4, b = 4 * (r % 4);
    CHECK(((d[128 + b + 0] >> (2 * L)) & 3) == 1);
    CHECK(((d[128 + b + 1] >> (2 * L)) & 3) == 3);
    CHECK(((d[128 + b + 2] >> (2 * L)) & 3) == 0);
    CHECK(((d[128 + b + 3] >> (2 * L)) & 3) == 2);
  }
  // Groups 2.. are padding: code 0 (nibble 8) at indices (0, 1).
  CHECK(d[64 + 0] == 0x88);
  CHECK(((d[128 + 16 * 3 + 1] >> 2) & 3) == 1);
}

TEST_CASE("kernel formats: pack/unpack round trips on odd shapes") {
  const int64_t sizes[] = {1, 3, 4, 60, 64, 100, 118, 152, 192};
  for (Int4Format f : kFormats) {
    for (int64_t N : sizes) {
      for (int64_t K : sizes) {
        for (int kind = 0; kind < 3; ++kind) {
          const TestWeights tw = make_weights(f, N, K, kind, uint64_t(N * 131 + K * 7 + kind));
          const PackedWeights W = pack_int4(f, tw.q.data(), tw.sw.data(), N, K, tw.keep.data());
          std::vector<int8_t> q(size_t(N * K));
          std::vector<uint8_t> keep(size_t(N * K));
          unpack_int4(W, q.data(), keep.data());
          for (int64_t i = 0; i < N * K; ++i) {
            const int8_t want = tw.keep[size_t(i)] ? tw.q[size_t(i)] : int8_t(0);
            const bool keep_ok = f == Int4Format::kUnstructured ? keep[size_t(i)] == tw.keep[size_t(i)]
                                                                : keep[size_t(i)] >= tw.keep[size_t(i)];
            if (q[size_t(i)] == want && keep_ok) continue;
            FAIL(format_name(f), " [", N, ", ", K, "] kind ", kind, " at [", i / K, ", ", i % K,
                 "]: expected code ", int(want), " kept ", int(tw.keep[size_t(i)]), ", got ",
                 int(q[size_t(i)]), " kept ", int(keep[size_t(i)]));
          }
          if (f == Int4Format::kSparse24) {  // every full group stores exactly 2 positions
            for (int64_t n = 0; n < N; ++n)
              for (int64_t g = 0; g + 4 <= K; g += 4) {
                int c = 0;
                for (int i = 0; i < 4; ++i) c += keep[size_t(n * K + g + i)];
                if (c != 2) FAIL("2:4 [", N, ", ", K, "] row ", n, " group ", g / 4, " stores ", c);
              }
          }
          for (int64_t n = 0; n < N; ++n) {
            int32_t s = 0;
            for (int64_t k = 0; k < K; ++k) s += q[size_t(n * K + k)];
            if (W.row_sum[size_t(n)] != s) FAIL("row_sum[", n, "] = ", W.row_sum[size_t(n)], ", want ", s);
          }
        }
      }
    }
  }
}

TEST_CASE("kernel formats: bytes per weight") {
  const int64_t N = 512, K = 4096;
  for (Int4Format f : kFormats) {
    const TestWeights tw = make_weights(f, N, K, 0, 5);
    const PackedWeights W = pack_int4(f, tw.q.data(), tw.sw.data(), N, K, tw.keep.data());
    const double bpw = W.bytes_per_weight();
    MESSAGE(std::string(format_name(f)), " [512, 4096]: ", bpw, " bytes/weight");
    if (f == Int4Format::kDense) CHECK(bpw == doctest::Approx(0.5 + 8.0 / K));
    if (f == Int4Format::kSparse24) CHECK(bpw == doctest::Approx(0.375 + 8.0 / K));
    if (f == Int4Format::kUnstructured) CHECK((bpw > 0.375 && bpw < 0.40));
  }
}

TEST_CASE("kernel formats: pack rejects bad input with a message naming it") {
  std::vector<int8_t> q = {1, 2, 3, 0, 0, 0, 0, 0};  // group 0 has 3 non-zeros
  std::vector<float> sw = {1.0f};
  CHECK_THROWS_WITH_AS(pack_int4(Int4Format::kSparse24, q.data(), sw.data(), 1, 8),
                       doctest::Contains("row 0 group 0"), obr::Error);
  q[0] = 9;
  CHECK_THROWS_WITH_AS(pack_int4(Int4Format::kDense, q.data(), sw.data(), 1, 8),
                       doctest::Contains("code 9 at [0, 0]"), obr::Error);
  std::vector<uint8_t> keep = {1, 1, 0, 0, 0, 0, 0, 0};  // a mask makes the group valid
  q[0] = 7;
  CHECK_NOTHROW(pack_int4(Int4Format::kSparse24, q.data(), sw.data(), 1, 8, keep.data()));
}

// ---------------------------------------------------------------------------------------------
// Kernels

TEST_CASE("kernel int4_matmul: every target equals the reference on hostile shapes") {
  MESSAGE("targets: ", targets_list());
  const int64_t sizes[] = {1, 3, 4, 60, 64, 100, 118, 152, 192, 384, 1280};
  int cases = 0;
  for (Int4Format f : kFormats) {
    for (int64_t N : sizes) {
      for (int64_t K : sizes) {
        for (int64_t T : {1, 2, 7, 64, 65}) {
          // Large products run T = 1, 7 and 65 only (the reference is slow there).
          if (N * K > 50000 && (T == 2 || T == 64)) continue;
          const int wkind = int((N + K + T) % 3), akind = int((N * 3 + K + T) % 3);
          run_case({f, N, K, T, wkind, akind, (N + T) % 2 == 0, (K + T) % 2 == 1}, false);
          ++cases;
        }
      }
    }
  }
  MESSAGE(cases, " cases on every target");
}

TEST_CASE("kernel int4_matmul: extreme codes, all-zero inputs, decode/prefill boundary") {
  for (Int4Format f : kFormats) {
    // Long rows: the prefill kernel splits T = 65 tokens into several macro-blocks.
    run_case({f, 48, 16384 + 4, 65, 0, 0, true, true}, false);
    for (int64_t T : {1, 3, 4, 5, 12, 13}) {
      for (bool a8 : {false, true}) {
        run_case({f, 100, 1280, T, /*wkind=*/1, /*akind=*/1, a8, true}, false);  // -8 x -8 (or -128)
        run_case({f, 118, 152, T, 2, 2, a8, false}, false);                      // zero rows / tokens
      }
    }
  }
}

TEST_CASE("kernel int4_matmul: results do not depend on the thread count") {
  for (Int4Format f : kFormats) {
    for (int64_t T : {1, 4, 65}) {
      // Both above the size where the kernels start using threads (2^18 multiply-adds).
      run_case({f, 1280, 384, T, 0, 0, true, true}, true);
      run_case({f, 384, 1280, T, 2, 0, false, false}, true);
    }
  }
}

TEST_CASE("kernel int4_matmul: argument checks name the values") {
  std::vector<int8_t> q(16 * 8, 1);
  std::vector<float> sw(16, 1.0f);
  const PackedWeights W = pack_int4(Int4Format::kDense, q.data(), sw.data(), 16, 8);
  std::vector<int8_t> qa(8, 1);
  float sa = 1.0f;
  std::vector<float> y(16);
  CHECK_THROWS_WITH_AS(int4_matmul(W, qa.data(), &sa, -1, y.data()),
                       doctest::Contains("T must be >= 0, got -1"), obr::Error);
  CHECK_THROWS_WITH_AS(int4_matmul(PackedWeights{}, qa.data(), &sa, 1, y.data()),
                       doctest::Contains("weights are empty"), obr::Error);
  CHECK_THROWS_WITH_AS(int4_matmul(W, nullptr, &sa, 1, y.data()),
                       doctest::Contains("null activations"), obr::Error);
}

TEST_CASE("kernel quantize_act_rows_i8: every target equals the reference") {
  Rng rng(11);
  for (const SimdTarget& target : runnable_targets()) {
    ScopedTarget scoped(target);
    for (int64_t K : {1, 3, 17, 100, 1280}) {
      for (int bits : {4, 8}) {
        for (float clip : {1.0f, 0.9f}) {
          const int64_t T = 7;
          Misaligned<float> x(size_t(T * K), 4 + 4 * size_t(K % 3));
          for (int64_t i = 0; i < T * K; ++i) x.p[i] = float(rng.normal() * 3.0);
          for (int64_t k = 0; k < K; ++k) x.p[1 * K + k] = 0.0f;  // all-zero row: scale 1
          // Row 2: scale exactly 1 (amax = hi / clip for clip 1), many exact .5 ties.
          const float hi = float((1 << (bits - 1)) - 1);
          for (int64_t k = 0; k < K; ++k) x.p[2 * K + k] = float(int(k % 9) - 4) + 0.5f;
          x.p[2 * K + 0] = hi;
          for (int64_t k = 0; k < K; ++k) x.p[3 * K + k] = 1e-42f * float(k % 3);  // denormals
          std::vector<int8_t> q_ref(size_t(T * K)), q(size_t(T * K));
          std::vector<float> s_ref(static_cast<size_t>(T)), s(static_cast<size_t>(T));
          quantize_act_rows_i8_ref(x.p, T, K, bits, clip, q_ref.data(), s_ref.data());
          Misaligned<int8_t> qm(size_t(T * K), 3);
          quantize_act_rows_i8(x.p, T, K, bits, clip, qm.p, s.data());
          for (int64_t t = 0; t < T; ++t) {
            REQUIRE_MESSAGE(bits_of(s[size_t(t)]) == bits_of(s_ref[size_t(t)]), target.name,
                            " K=", K, " bits=", bits, " clip=", clip, " row ", t,
                            ": expected scale ", s_ref[size_t(t)], ", got ", s[size_t(t)]);
          }
          for (int64_t i = 0; i < T * K; ++i) {
            REQUIRE_MESSAGE(qm.p[i] == q_ref[size_t(i)], target.name, " K=", K, " bits=", bits,
                            " clip=", clip, " at [", i / K, ", ", i % K, "] x=", x.p[i],
                            ": expected ", int(q_ref[size_t(i)]), ", got ", int(qm.p[i]));
          }
          CHECK(s_ref[1] == 1.0f);
          if (clip == 1.0f) CHECK(s_ref[2] == 1.0f);
        }
      }
    }
    // Half-way values round to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2.
    const float xs[6] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f};
    int8_t q6[6];
    float s1;
    quantize_act_rows_i8(xs, 1, 6, 8, 1.0f, q6, &s1);
    CHECK(s1 == 1.0f);
    CHECK((q6[1] == 0 && q6[2] == 2 && q6[3] == 2 && q6[4] == 0 && q6[5] == -2));
    // Non-finite input is an error naming the position.
    std::vector<float> bad(40, 1.0f);
    bad[21] = std::numeric_limits<float>::infinity();
    std::vector<int8_t> qb(40);
    float sb[2];
    CHECK_THROWS_WITH_AS(quantize_act_rows_i8(bad.data(), 2, 20, 4, 1.0f, qb.data(), sb),
                         doctest::Contains("x[1, 1]"), obr::Error);
  }
}

TEST_CASE("kernel sum_u64_parallel sums every word") {
  std::vector<uint64_t> v(3 * (1 << 20) + 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = i * 3 + 1;
  uint64_t want = 0;
  for (uint64_t x : v) want += x;
  CHECK(sum_u64_parallel(v.data(), v.size() * 8) == want);
}
