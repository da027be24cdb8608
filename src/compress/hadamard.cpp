// Hadamard transforms: see hadamard.h for the matrix, the index split and the conventions.
#include "compress/hadamard.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <utility>

#include "core/check.h"
#include "core/parallel.h"
#include "core/rng.h"

namespace obr {
namespace {

bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// The shipped base matrices, parsed from the embedded text and checked once
// (H H^T = K I exactly; sums of +-1 stay integers far below 2^24, so float is exact).
struct BaseMatrix {
  int K;
  std::vector<float> h;   // K x K, row-major, +1/-1
  std::vector<float> ht;  // its transpose (the transform reads columns of H_K)
};

const std::vector<BaseMatrix>& shipped_bases() {
  static const std::vector<BaseMatrix> bases = [] {
    std::vector<BaseMatrix> out;
    for (int K : hadamard_known_orders()) {
      const char* text = detail::hadamard_base_text(K);
      if (text == nullptr) continue;
      OBR_CHECK(std::strlen(text) == size_t(K) * K, "embedded had_", K, ".txt has ", std::strlen(text),
                " characters, want ", K * K);
      BaseMatrix B{K, std::vector<float>(size_t(K) * K), {}};
      for (size_t i = 0; i < B.h.size(); ++i) {
        OBR_CHECK(text[i] == '+' || text[i] == '-', "embedded had_", K, ".txt: bad character '", text[i],
                  "' at row ", i / K, ", column ", i % K);
        B.h[i] = text[i] == '+' ? 1.0f : -1.0f;
      }
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          float dot = 0;
          for (int t = 0; t < K; ++t) dot += B.h[size_t(i) * K + t] * B.h[size_t(j) * K + t];
          OBR_CHECK(dot == (i == j ? float(K) : 0.0f), "embedded had_", K, ".txt is not Hadamard: rows ", i,
                    " and ", j, " have dot product ", dot);
        }
      B.ht.resize(B.h.size());
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) B.ht[size_t(j) * K + i] = B.h[size_t(i) * K + j];
      out.push_back(std::move(B));
    }
    return out;
  }();
  return bases;
}

// H_K (or its transpose) as K*K floats, or nullptr when K is not shipped. K = 1 is handled
// by the callers.
const float* base_data(int K, bool transposed = false) {
  for (const BaseMatrix& B : shipped_bases())
    if (B.K == K) return transposed ? B.ht.data() : B.h.data();
  return nullptr;
}

std::string known_orders_str() {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < hadamard_known_orders().size(); ++i) {
    const int K = hadamard_known_orders()[i];
    os << (i ? ", " : "") << K << (base_data(K) ? "" : " (not shipped in this build)");
  }
  os << "}";
  return os.str();
}

// Step 2 (below) for one chunk of kLen floats of output block a:
//   out[i] = sum_{b = 0..K-1, in order} H_K[b, a] * x_b[i],   x_b = x + b*L,
// with the partial sums in a small local array that the compiler keeps in registers.
// `col` is column a of H_K (K values +-1): the products are exact.
template <int64_t kLen>
void dense_chunk(const float* x, int64_t L, int K, const float* col, float* out) {
  float acc[kLen] = {};
  for (int b = 0; b < K; ++b) {
    const float s = col[b];
    const float* xb = x + b * L;
    for (int64_t i = 0; i < kLen; ++i) acc[i] += s * xb[i];
  }
  for (int64_t i = 0; i < kLen; ++i) out[i] = acc[i];
}

// The same sums for a last chunk of len < 16 floats.
void dense_chunk_tail(const float* x, int64_t L, int K, const float* col, float* out, int64_t len) {
  float acc[16] = {};
  for (int b = 0; b < K; ++b) {
    const float s = col[b];
    const float* xb = x + b * L;
    for (int64_t i = 0; i < len; ++i) acc[i] += s * xb[i];
  }
  for (int64_t i = 0; i < len; ++i) out[i] = acc[i];
}

// The transform of one vector of n = K * P elements, each element w contiguous floats
// (w = 1 for a row; w = head_dim across heads). x holds n * w floats; with element index
// j = b * P + s (b < K, s < P) it computes, for every lane d < w,
//   y[a*P + t][d] = scale * sum_b sum_s H_K[b, a] S[s, t] x[b*P + s][d].
// Step 1: Sylvester butterflies on each of the K contiguous blocks of P elements (natural
//         order: after the passes, block b holds x_b S_P).
// Step 2: block a of the output is sum_b H_K[b, a] * block b (blocks of L = P*w floats),
//         summed in b order into `scratch` (L*K floats), then scaled back into x.
// `HKt` is H_K transposed (row a = column a of H_K), so step 2 reads it contiguously.
// Built for AVX-512, AVX2 and baseline x86 (GCC picks one at load time): the loops are
// element-wise adds, subtracts and products summed in a fixed b order with no FMA contraction,
// so every version computes the same bits, only more lanes at a time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void transform_one(float* x, int64_t n, int64_t w, int K, const float* HKt, float scale, float* scratch) {
  const int64_t P = n / K;  // power of two
  const int64_t L = P * w;  // floats per block
  for (int b = 0; b < K; ++b) {
    float* xb = x + b * L;
    // Element pairs (j, j + len) in groups of 2*len elements; in floats the pair's halves
    // are the contiguous runs [i, i + half) and [i + half, i + 2*half), half = len * w.
    for (int64_t half = w; half < L; half *= 2)
      for (int64_t i = 0; i < L; i += 2 * half)
        for (int64_t q = i; q < i + half; ++q) {
          const float u = xb[q], v = xb[q + half];
          xb[q] = u + v;
          xb[q + half] = u - v;
        }
  }
  if (K == 1) {
    for (int64_t i = 0; i < n * w; ++i) x[i] *= scale;
    return;
  }
  constexpr int64_t kChunk = 16;
  for (int a = 0; a < K; ++a) {
    const float* col = HKt + int64_t(a) * K;
    int64_t i0 = 0;
    for (; i0 + kChunk <= L; i0 += kChunk) dense_chunk<kChunk>(x + i0, L, K, col, scratch + a * L + i0);
    if (i0 < L) dense_chunk_tail(x + i0, L, K, col, scratch + a * L + i0, L - i0);
  }
  for (int64_t i = 0; i < n * w; ++i) x[i] = scratch[i] * scale;
}

// Applies transform_one to `rows` consecutive vectors of n*w floats (with optional input
// signs, one per element, applied to all w lanes first). Threads split rows only, in
// contiguous chunks, each with its own scratch; rows are independent, so the result does not
// depend on the thread count.
void transform_rows_impl(float* X, int64_t rows, int64_t n, int64_t w, const float* signs) {
  const int K = hadamard_base_order(n);
  const float* HKt = K > 1 ? base_data(K, /*transposed=*/true) : nullptr;
  const float scale = float(1.0 / std::sqrt(double(n)));
  const int64_t len = n * w;
  auto run_chunk = [&](int64_t r0, int64_t r1) {
    std::vector<float> scratch(K > 1 ? size_t(len) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      float* x = X + r * len;
      if (signs)
        for (int64_t j = 0; j < n; ++j)
          for (int64_t d = 0; d < w; ++d) x[j * w + d] *= signs[j];
      transform_one(x, n, w, K, HKt, scale, scratch.data());
    }
  };
  // Threads only pay off with enough work: at least 4 rows and about 2^18 floats in total.
  const int64_t chunks = std::min<int64_t>(rows, 4 * int64_t(num_threads()));
  if (rows < 4 || rows * len < (int64_t(1) << 18) || chunks < 2) {
    run_chunk(0, rows);
    return;
  }
  parallel_for(chunks, [&](int64_t c) { run_chunk(rows * c / chunks, rows * (c + 1) / chunks); });
}

void check_rows_args(const char* fn, const float* X, int64_t rows, int64_t n) {
  OBR_CHECK(rows >= 0, fn, ": rows must be >= 0, got ", rows);
  OBR_CHECK(n >= 1, fn, ": n must be >= 1, got ", n);
  OBR_CHECK(X != nullptr || rows == 0, fn, ": X is null with rows = ", rows);
}

std::vector<float> random_signs(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> s(static_cast<size_t>(n));
  for (auto& v : s) v = float(rng.sign());
  return s;
}

}  // namespace

const std::vector<int>& hadamard_known_orders() {
  static const std::vector<int> known = {12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172};
  return known;
}

bool hadamard_supported(int64_t n) {
  if (n < 1) return false;
  if (is_pow2(n)) return true;
  for (int K : hadamard_known_orders())
    if (n % K == 0 && is_pow2(n / K) && base_data(K)) return true;
  return false;
}

int hadamard_base_order(int64_t n) {
  OBR_CHECK(n >= 1, "Hadamard transform length must be >= 1, got ", n);
  if (is_pow2(n)) return 1;
  const std::vector<int>& known = hadamard_known_orders();
  for (auto it = known.rbegin(); it != known.rend(); ++it)  // largest first: 40 before 20
    if (n % *it == 0 && is_pow2(n / *it) && base_data(*it)) return *it;
  fail("no Hadamard matrix of order ", n, ": the length must be K * 2^m with K = 1 or K in ",
       known_orders_str());
}

Tensor hadamard_base(int K) {
  Tensor t = Tensor::zeros({K, K});
  if (K == 1) {
    t.at<float>(0, 0) = 1.0f;
    return t;
  }
  const float* h = base_data(K);
  OBR_CHECK(h != nullptr, "no Hadamard base matrix of order ", K, "; known orders: ", known_orders_str());
  std::memcpy(t.data<float>(), h, sizeof(float) * size_t(K) * K);
  return t;
}

void hadamard_transform_rows(float* X, int64_t rows, int64_t n) {
  check_rows_args("hadamard_transform_rows", X, rows, n);
  transform_rows_impl(X, rows, n, 1, nullptr);
}

Tensor hadamard_matrix(int64_t n) {
  const int K = hadamard_base_order(n);
  const int64_t P = n / K;
  const Tensor HK = hadamard_base(K);
  const float c = float(1.0 / std::sqrt(double(n)));
  Tensor M = Tensor::zeros({n, n});
  float* m = M.data<float>();
  for (int64_t b = 0; b < K; ++b)
    for (int64_t s = 0; s < P; ++s)
      for (int64_t a = 0; a < K; ++a)
        for (int64_t t = 0; t < P; ++t) {
          const bool sylvester_neg = __builtin_popcountll(uint64_t(s & t)) & 1;
          const bool neg = (HK.at<float>(b, a) < 0) != sylvester_neg;
          m[(b * P + s) * n + a * P + t] = neg ? -c : c;
        }
  return M;
}

Tensor random_hadamard_matrix(int64_t n, uint64_t seed) {
  Tensor Q = hadamard_matrix(n);  // checks n
  const std::vector<float> s = random_signs(n, seed);
  float* q = Q.data<float>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) q[i * n + j] *= s[size_t(i)];
  return Q;
}

void random_hadamard_transform_rows(float* X, int64_t rows, int64_t n, uint64_t seed) {
  check_rows_args("random_hadamard_transform_rows", X, rows, n);
  hadamard_base_order(n);  // fail on an unsupported n before drawing signs
  const std::vector<float> s = random_signs(n, seed);
  transform_rows_impl(X, rows, n, 1, s.data());
}

void hadamard_across_heads(float* X, int64_t rows, int64_t n_heads, int64_t head_dim) {
  check_rows_args("hadamard_across_heads", X, rows, n_heads);
  OBR_CHECK(head_dim >= 1, "hadamard_across_heads: head_dim must be >= 1, got ", head_dim);
  transform_rows_impl(X, rows, n_heads, head_dim, nullptr);
}

}  // namespace obr
