// Tests of src/compress/hadamard.h: the shipped base matrices (and their data files), the
// supported lengths, and the fast transforms against explicit matrix products in double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "compress/hadamard.h"
#include "core/parallel.h"
#include "core/rng.h"

using namespace obr;

namespace {

const float kEps = std::numeric_limits<float>::epsilon();

std::vector<float> random_rows(int64_t rows, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(size_t(rows * n));
  for (auto& v : x) v = float(rng.normal());
  return x;
}

// Entry (i, j) of H_n = H_K (x) S_P in double, straight from the definition in hadamard.h.
double h_entry(const Tensor& HK, int64_t P, int64_t i, int64_t j) {
  const int64_t b = i / P, s = i % P, a = j / P, t = j % P;
  const double sylvester = (__builtin_popcountll(uint64_t(s & t)) & 1) ? -1.0 : 1.0;
  return double(HK.at<float>(b, a)) * sylvester;
}

// Worst |actual - expected| over a row-major [rows, n] pair, with where it happened.
struct Worst {
  double err = 0;
  int64_t index = -1;
  double expected = 0, actual = 0;
};
Worst compare(const std::vector<float>& actual, const std::vector<double>& expected) {
  Worst w;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double e = std::fabs(double(actual[i]) - expected[i]);
    if (e > w.err || w.index < 0) w = Worst{e, int64_t(i), expected[i], double(actual[i])};
  }
  return w;
}

// y = x M in double, x [rows, n] float, M [n, n] float.
std::vector<double> times(const std::vector<float>& x, int64_t rows, const Tensor& M) {
  const int64_t n = M.dim(0);
  std::vector<double> y(size_t(rows * n), 0.0);
  const float* m = M.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < n; ++k) {
      const double xk = x[size_t(r * n + k)];
      for (int64_t j = 0; j < n; ++j) y[size_t(r * n + j)] += xk * m[k * n + j];
    }
  return y;
}

// Error bound for the fast transform of a row x: log2(P) butterfly levels plus K terms in the
// dense step, each adding at most eps relative error to partial sums bounded by ||x||_1, then
// the 1/sqrt(n) scale; ||x||_1 / sqrt(n) <= ||x||_2.
double tolerance(int64_t n, const float* x) {
  const int K = hadamard_base_order(n);
  double norm2 = 0;
  for (int64_t j = 0; j < n; ++j) norm2 += double(x[j]) * x[j];
  return 2.0 * kEps * (std::log2(double(n / K)) + K + 1) * std::sqrt(norm2);
}

// Lengths that exercise every shipped K (times a few powers of two) and pure powers of two.
const std::vector<int64_t> kLengths = {1,      2,      4,      64,     12,     12 * 4, 20,  20 * 16, 28 * 8,
                                       36,     36 * 2, 40,     40 * 4, 52,     60 * 2, 108, 140,     148 * 2,
                                       156,    172,    172 * 2};

}  // namespace

TEST_CASE("hadamard: every shipped base matrix has H H^T = K I and equals its data file") {
  for (int K : hadamard_known_orders()) {
    CAPTURE(K);
    REQUIRE_MESSAGE(hadamard_supported(K), "had_", K, ".txt was not embedded at build time");
    const Tensor H = hadamard_base(K);
    REQUIRE(H.shape() == Shape{K, K});
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < K; ++j) {
        REQUIRE_MESSAGE(std::fabs(H.at<float>(i, j)) == 1.0f, "entry (", i, ", ", j, ")");
        int64_t dot = 0;
        for (int t = 0; t < K; ++t) dot += int64_t(H.at<float>(i, t)) * int64_t(H.at<float>(j, t));
        REQUIRE_MESSAGE(dot == (i == j ? K : 0), "rows ", i, " and ", j);
      }
    // The embedded copy is the data file, character for character (tests run from the repo root).
    const std::string path = "data/hadamard/had_" + std::to_string(K) + ".txt";
    std::ifstream f(path);
    REQUIRE_MESSAGE(f.good(), "cannot open ", path);
    std::string line;
    int row = 0;
    while (std::getline(f, line)) {
      REQUIRE_MESSAGE(row < K, path, " has more than ", K, " lines");
      REQUIRE_MESSAGE(int(line.size()) == K, path, " line ", row + 1);
      for (int j = 0; j < K; ++j)
        REQUIRE_MESSAGE(H.at<float>(row, j) == (line[j] == '+' ? 1.0f : -1.0f), path, " (", row, ", ", j, ")");
      ++row;
    }
    CHECK(row == K);
  }
  // Every data file is listed in the manifest.
  std::ifstream m("data/hadamard/MANIFEST.md");
  REQUIRE(m.good());
  std::stringstream manifest;
  manifest << m.rdbuf();
  for (int K : hadamard_known_orders())
    CHECK_MESSAGE(manifest.str().find("had_" + std::to_string(K) + ".txt") != std::string::npos, K);

  CHECK(hadamard_base(1).at<float>(0, 0) == 1.0f);
  CHECK_THROWS_AS(hadamard_base(13), Error);
}

TEST_CASE("hadamard: supported lengths, base orders and errors") {
  const std::pair<int64_t, int> cases[] = {
      {1, 1},      {2, 1},     {64, 1},     {4096, 1},    {12, 12},      {48, 12},      {20, 20},
      {40, 40},    {80, 40},   {5120, 40},  {320, 40}, {11008, 172}, {14336, 28},
      {13824, 108}, {156, 156}, {296, 148}, {36 * 8, 36}, {52 * 2, 52},  {60 * 16, 60}, {140 * 32, 140}};
  for (const auto& [n, K] : cases) {
    CAPTURE(n);
    CHECK(hadamard_supported(n));
    CHECK(hadamard_base_order(n) == K);
  }
  for (int64_t n : {int64_t(0), int64_t(-4), int64_t(3), int64_t(7), int64_t(44), int64_t(100), int64_t(11 * 64),
                    int64_t(172 * 3)}) {
    CAPTURE(n);
    CHECK_FALSE(hadamard_supported(n));
    CHECK_THROWS_AS(hadamard_base_order(n), Error);
  }
  // The message names n and the known orders.
  for (int64_t n : {int64_t(7), int64_t(100), int64_t(11 * 64)}) {
    std::string msg;
    try {
      hadamard_base_order(n);
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK_MESSAGE(msg.find(std::to_string(n)) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172") != std::string::npos, msg);
  }
  std::vector<float> x(100, 1.0f);
  CHECK_THROWS_AS(hadamard_transform_rows(x.data(), 1, 100), Error);
  CHECK_THROWS_AS(random_hadamard_transform_rows(x.data(), 1, 100, 1), Error);
  CHECK_THROWS_AS(hadamard_across_heads(x.data(), 1, 25, 4), Error);
  CHECK_THROWS_AS(hadamard_matrix(100), Error);
  CHECK_THROWS_AS(hadamard_transform_rows(nullptr, 2, 64), Error);
  CHECK_THROWS_AS(hadamard_transform_rows(x.data(), -1, 64), Error);
  hadamard_transform_rows(nullptr, 0, 64);  // zero rows: nothing to do
}

TEST_CASE("hadamard_matrix is orthonormal with entries +-1/sqrt(n) as defined") {
  for (int64_t n : kLengths) {
    CAPTURE(n);
    const Tensor M = hadamard_matrix(n);
    REQUIRE(M.shape() == Shape{n, n});
    const int K = hadamard_base_order(n);
    const Tensor HK = hadamard_base(K);
    const double c = 1.0 / std::sqrt(double(n));
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        REQUIRE_MESSAGE(double(M.at<float>(i, j)) == double(float(h_entry(HK, n / K, i, j) * c)), i, ", ", j);
        double dot = 0;
        for (int64_t t = 0; t < n; ++t) dot += double(M.at<float>(i, t)) * M.at<float>(j, t);
        worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
      }
    CHECK(worst <= 4 * kEps);
  }
}

TEST_CASE("hadamard_transform_rows equals x * hadamard_matrix(n)") {
  for (int64_t n : kLengths) {
    for (int64_t rows : {int64_t(1), int64_t(3)}) {
      CAPTURE(n);
      CAPTURE(rows);
      std::vector<float> x = random_rows(rows, n, uint64_t(1000 + n + rows));
      const std::vector<double> want = times(x, rows, hadamard_matrix(n));
      double tol = 0;
      for (int64_t r = 0; r < rows; ++r) tol = std::max(tol, tolerance(n, &x[size_t(r * n)]));
      hadamard_transform_rows(x.data(), rows, n);
      const Worst w = compare(x, want);
      CHECK_MESSAGE(w.err <= tol, "worst at ", w.index, ": expected ", w.expected, ", got ", w.actual,
                    ", tolerance ", tol);
    }
  }
}

TEST_CASE("hadamard transform of 11008-wide rows (172 * 64): unit rows and a random row") {
  const int64_t n = 11008, K = 172, P = 64;
  REQUIRE(hadamard_base_order(n) == K);
  const Tensor HK = hadamard_base(int(K));
  const float c = float(1.0 / std::sqrt(double(n)));
  // Rows of M_n: e_i M_n for a few i, exact (one nonzero term per output) and orthonormal.
  const int64_t picks[] = {0, 1, 63, 64, 5000, n - 1};
  std::vector<float> E(6 * n, 0.0f);
  for (int r = 0; r < 6; ++r) E[size_t(r * n + picks[r])] = 1.0f;
  hadamard_transform_rows(E.data(), 6, n);
  for (int r = 0; r < 6; ++r)
    for (int64_t j = 0; j < n; ++j)
      REQUIRE_MESSAGE(E[size_t(r * n + j)] == float(h_entry(HK, P, picks[r], j)) * c, "row ", picks[r], " col ", j);
  for (int r = 0; r < 6; ++r)
    for (int s = 0; s < 6; ++s) {
      double dot = 0;
      for (int64_t j = 0; j < n; ++j) dot += double(E[size_t(r * n + j)]) * E[size_t(s * n + j)];
      CHECK(std::fabs(dot - (r == s ? 1.0 : 0.0)) <= 4 * kEps);
    }
  // One random row against the definition in double (no n x n matrix is built).
  std::vector<float> x = random_rows(1, n, 11008);
  std::vector<double> want(size_t(n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) want[size_t(j)] += double(x[size_t(i)]) * h_entry(HK, P, i, j);
  for (auto& v : want) v /= std::sqrt(double(n));
  const double tol = tolerance(n, x.data());
  hadamard_transform_rows(x.data(), 1, n);
  const Worst w = compare(x, want);
  CHECK_MESSAGE(w.err <= tol, "worst at ", w.index, ": expected ", w.expected, ", got ", w.actual);
}

TEST_CASE("hadamard: threaded, misaligned and row-by-row calls give identical bits") {
  const int64_t rows = 70, n = 4096 + 0;  // 70 * 4096 floats: over the threading threshold
  for (int64_t len : {n, int64_t(28 * 128)}) {
    CAPTURE(len);
    std::vector<float> buf(size_t(rows * len + 1));
    const std::vector<float> x = random_rows(rows, len, 7);
    std::copy(x.begin(), x.end(), buf.begin() + 1);  // misaligned by one float
    std::vector<float> one = x;
    hadamard_transform_rows(buf.data() + 1, rows, len);
    for (int64_t r = 0; r < rows; ++r) hadamard_transform_rows(&one[size_t(r * len)], 1, len);
    bool same = std::equal(one.begin(), one.end(), buf.begin() + 1);
    CHECK(same);
    const int threads = num_threads();
    set_num_threads(1);
    std::vector<float> serial = x;
    hadamard_transform_rows(serial.data(), rows, len);
    set_num_threads(threads);
    same = std::equal(serial.begin(), serial.end(), one.begin());
    CHECK(same);
  }
}

TEST_CASE("hadamard: the inverse of x -> x M is y -> y M^T; an involution when H_K is symmetric") {
  for (int64_t n : kLengths) {
    CAPTURE(n);
    const int64_t rows = 2;
    const std::vector<float> x = random_rows(rows, n, uint64_t(77 + n));
    std::vector<float> y = x;
    hadamard_transform_rows(y.data(), rows, n);
    // y M^T: entry j of row r is sum_k y[k] M[j, k].
    const Tensor M = hadamard_matrix(n);
    std::vector<double> back(size_t(rows * n), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < n; ++k) back[size_t(r * n + j)] += double(y[size_t(r * n + k)]) * M.at<float>(j, k);
    const double tol = 2 * tolerance(n, x.data()) + 2 * tolerance(n, x.data() + n);
    Worst w = compare(x, back);
    CHECK_MESSAGE(w.err <= tol, "x M M^T: worst at ", w.index, ": expected ", w.expected, ", got ", w.actual);
    // Applying the transform twice gives x back exactly when M is symmetric.
    const Tensor HK = hadamard_base(hadamard_base_order(n));
    bool symmetric = true;
    for (int64_t i = 0; i < HK.dim(0); ++i)
      for (int64_t j = 0; j < HK.dim(0); ++j) symmetric = symmetric && HK.at<float>(i, j) == HK.at<float>(j, i);
    if (hadamard_base_order(n) == 1) CHECK(symmetric);
    if (symmetric) {
      hadamard_transform_rows(y.data(), rows, n);
      std::vector<double> xd(x.begin(), x.end());
      w = compare(y, xd);
      CHECK_MESSAGE(w.err <= tol, "x M M: worst at ", w.index, ": expected ", w.expected, ", got ", w.actual);
    }
  }
}

TEST_CASE("hadamard: random Hadamard matrix Q = diag(s) M and its transform") {
  for (int64_t n : {int64_t(1), int64_t(64), int64_t(12 * 4), int64_t(40 * 2), int64_t(172)}) {
    CAPTURE(n);
    const uint64_t seed = 1234;
    const Tensor Q = random_hadamard_matrix(n, seed);
    const Tensor M = hadamard_matrix(n);
    Rng rng(seed);
    for (int64_t i = 0; i < n; ++i) {
      const float s = float(rng.sign());
      for (int64_t j = 0; j < n; ++j) REQUIRE(Q.at<float>(i, j) == s * M.at<float>(i, j));
    }
    // Orthogonal.
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t t = 0; t < n; ++t) dot += double(Q.at<float>(i, t)) * Q.at<float>(j, t);
        worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
      }
    CHECK(worst <= 4 * kEps);
    // The transform is multiplication by Q.
    const int64_t rows = 3;
    std::vector<float> x = random_rows(rows, n, 99);
    const std::vector<double> want = times(x, rows, Q);
    const double tol = std::max({tolerance(n, &x[0]), tolerance(n, &x[size_t(n)]), tolerance(n, &x[size_t(2 * n)])});
    random_hadamard_transform_rows(x.data(), rows, n, seed);
    const Worst w = compare(x, want);
    CHECK_MESSAGE(w.err <= tol, "worst at ", w.index, ": expected ", w.expected, ", got ", w.actual);
  }
  // Seeds matter, and the same seed gives the same matrix.
  const Tensor a = random_hadamard_matrix(64, 1), b = random_hadamard_matrix(64, 1), c = random_hadamard_matrix(64, 2);
  CHECK(std::equal(a.data<float>(), a.data<float>() + 64 * 64, b.data<float>()));
  CHECK_FALSE(std::equal(a.data<float>(), a.data<float>() + 64 * 64, c.data<float>()));
}

TEST_CASE("hadamard_across_heads equals X (M_{n_heads} (x) I_{head_dim})") {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 4}, {4, 1}, {4, 3}, {8, 16}, {12, 5}, {32, 8}, {40, 3}, {20 * 4, 2}};
  for (const auto& [heads, hd] : shapes) {
    CAPTURE(heads);
    CAPTURE(hd);
    const int64_t rows = 3, n = heads * hd;
    std::vector<float> x = random_rows(rows, n, uint64_t(heads * 100 + hd));
    // The explicit Kronecker product K = M_heads (x) I_hd, K[h*hd + d, g*hd + e] = M[h, g] [d == e].
    const Tensor Mh = hadamard_matrix(heads);
    Tensor Kr = Tensor::zeros({n, n});
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t g = 0; g < heads; ++g)
        for (int64_t d = 0; d < hd; ++d) Kr.at<float>(h * hd + d, g * hd + d) = Mh.at<float>(h, g);
    const std::vector<double> want = times(x, rows, Kr);
    double tol = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double norm2 = 0;
      for (int64_t j = 0; j < n; ++j) norm2 += double(x[size_t(r * n + j)]) * x[size_t(r * n + j)];
      const int K = hadamard_base_order(heads);
      tol = std::max(tol, 2.0 * kEps * (std::log2(double(heads / K)) + K + 1) * std::sqrt(norm2));
    }
    hadamard_across_heads(x.data(), rows, heads, hd);
    const Worst w = compare(x, want);
    CHECK_MESSAGE(w.err <= tol, "worst at ", w.index, ": expected ", w.expected, ", got ", w.actual);
  }
  // With head_dim = 1 it is the row transform.
  std::vector<float> a = random_rows(2, 48, 5), b = a;
  hadamard_across_heads(a.data(), 2, 48, 1);
  hadamard_transform_rows(b.data(), 2, 48);
  CHECK(a == b);
}
