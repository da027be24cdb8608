// Generator of the Hadamard base matrices in data/hadamard/ (see MANIFEST.md).
//
// Writes had_<K>.txt for K in {12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172}: K lines of
// K characters, '+' for +1 and '-' for -1. Every matrix is built here from a textbook
// construction (nothing is copied from elsewhere) and checked to satisfy H H^T = K I exactly
// before it is written. The output is deterministic: the same files on every run.
//
//   g++ -O2 -std=c++17 -o /tmp/gen_hadamard data/hadamard/gen_hadamard.cpp
//   /tmp/gen_hadamard data/hadamard
//
// Constructions (q a prime power, chi the quadratic character of GF(q)):
//   Paley I   q = 3 mod 4, order q + 1:  12 (q=11), 20 (19), 28 (GF(27)), 60 (59), 108 (107), 140 (139)
//   Paley II  q = 1 mod 4, order 2(q+1): 36 (q=17), 52 (GF(25)), 148 (q=73)
//   Sylvester doubling [[H, H], [H, -H]]: 40 = 2 x 20
//   Williamson array with four symmetric circulant matrices of odd order n, found by a
//   computer search below: 156 = 4 x 39, 172 = 4 x 43
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Matrix = std::vector<std::vector<int>>;  // entries +1 / -1 (0 only inside conference matrices)

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "gen_hadamard: %s\n", msg.c_str());
  std::exit(1);
}

Matrix zeros(int n) { return Matrix(n, std::vector<int>(n, 0)); }

// Exact integer check of H H^T = K I and of every entry being +-1.
bool is_hadamard(const Matrix& H) {
  const int K = int(H.size());
  for (int i = 0; i < K; ++i) {
    if (int(H[i].size()) != K) return false;
    for (int v : H[i])
      if (v != 1 && v != -1) return false;
  }
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) {
      int dot = 0;
      for (int t = 0; t < K; ++t) dot += H[i][t] * H[j][t];
      if (dot != (i == j ? K : 0)) return false;
    }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Finite field GF(q), q = p^k. An element is the integer sum_i c_i p^i, standing for the
// polynomial sum_i c_i x^i over GF(p) reduced modulo a monic irreducible polynomial of degree
// k. For k = 2 or 3 a monic polynomial without a root in GF(p) is irreducible; we take the
// first one in lexicographic order of its coefficients. Tables are small (q <= 139).
struct Field {
  int p = 0, k = 0, q = 0;
  std::vector<int> add, mul;  // q x q tables
  std::vector<int> chi;       // quadratic character: 0, +1 (nonzero square), -1

  int sum(int a, int b) const { return add[a * q + b]; }
  int prod(int a, int b) const { return mul[a * q + b]; }
  int neg(int a) const {
    for (int b = 0; b < q; ++b)
      if (sum(a, b) == 0) return b;
    die("no additive inverse");
  }
};

Field make_field(int p, int k) {
  Field F;
  F.p = p;
  F.k = k;
  F.q = 1;
  for (int i = 0; i < k; ++i) F.q *= p;
  const int q = F.q;
  auto digits = [&](int a) {
    std::vector<int> d(k);
    for (int i = 0; i < k; ++i, a /= p) d[i] = a % p;
    return d;
  };
  auto number = [&](const std::vector<int>& d) {
    int a = 0;
    for (int i = k - 1; i >= 0; --i) a = a * p + d[i];
    return a;
  };
  // Monic irreducible x^k + c_{k-1} x^{k-1} + ... + c_0 (c = digits of `poly`); k = 1 is GF(p).
  std::vector<int> c(k, 0);
  if (k > 1) {
    bool found = false;
    for (int poly = 0; poly < q && !found; ++poly) {
      c = digits(poly);
      bool has_root = false;
      for (int x = 0; x < p && !has_root; ++x) {
        int v = 1;  // Horner on x^k + ... + c_0
        for (int i = k - 1; i >= 0; --i) v = (v * x + c[i]) % p;
        has_root = (v == 0);
      }
      found = !has_root;
    }
    if (!found || k > 3) die("no irreducible polynomial found");
  }
  F.add.assign(size_t(q) * q, 0);
  F.mul.assign(size_t(q) * q, 0);
  for (int a = 0; a < q; ++a)
    for (int b = 0; b < q; ++b) {
      std::vector<int> da = digits(a), db = digits(b), s(k), t(2 * k, 0);
      for (int i = 0; i < k; ++i) s[i] = (da[i] + db[i]) % p;
      F.add[a * q + b] = number(s);
      if (k == 1) {
        F.mul[a * q + b] = (a * b) % p;
        continue;
      }
      for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) t[i + j] = (t[i + j] + da[i] * db[j]) % p;
      for (int d = 2 * k - 1; d >= k; --d) {  // x^d = -(c_{k-1} x^{d-1} + ... + c_0 x^{d-k})
        const int lead = t[d];
        t[d] = 0;
        for (int i = 0; i < k; ++i) t[d - k + i] = ((t[d - k + i] - lead * c[i]) % p + p) % p;
      }
      F.mul[a * q + b] = number(std::vector<int>(t.begin(), t.begin() + k));
    }
  for (int a = 1; a < q; ++a) {  // a field: every nonzero element has an inverse
    bool inv = false;
    for (int b = 1; b < q && !inv; ++b) inv = (F.prod(a, b) == 1);
    if (!inv) die("GF(" + std::to_string(q) + ") tables are not a field");
  }
  F.chi.assign(q, -1);
  F.chi[0] = 0;
  for (int a = 1; a < q; ++a) F.chi[F.prod(a, a)] = 1;
  return F;
}

// Conference core: the Jacobsthal matrix Q[x][y] = chi(x - y), bordered by one row and column:
//   S = [[0, 1^T], [eps*1, Q]],  eps = -1 for q = 3 mod 4 (S skew), +1 for q = 1 mod 4 (S symmetric).
Matrix conference(const Field& F) {
  const int q = F.q;
  const int eps = (q % 4 == 3) ? -1 : 1;
  Matrix S = zeros(q + 1);
  for (int x = 0; x < q; ++x) {
    S[0][x + 1] = 1;
    S[x + 1][0] = eps;
    for (int y = 0; y < q; ++y) S[x + 1][y + 1] = F.chi[F.sum(x, F.neg(y))];
  }
  return S;
}

// Paley I: q = 3 mod 4, H = I + S, order q + 1.
Matrix paley1(int p, int k) {
  Field F = make_field(p, k);
  if (F.q % 4 != 3) die("Paley I needs q = 3 mod 4");
  Matrix H = conference(F);
  for (int i = 0; i <= F.q; ++i) H[i][i] += 1;
  return H;
}

// Paley II: q = 1 mod 4, order 2(q + 1): every entry of the symmetric S becomes a 2 x 2 block,
// 0 -> [[1, -1], [-1, -1]], +-1 -> +-[[1, 1], [1, -1]].
Matrix paley2(int p, int k) {
  Field F = make_field(p, k);
  if (F.q % 4 != 1) die("Paley II needs q = 1 mod 4");
  const Matrix S = conference(F);
  const int m = F.q + 1;
  Matrix H = zeros(2 * m);
  const int zero_block[2][2] = {{1, -1}, {-1, -1}}, one_block[2][2] = {{1, 1}, {1, -1}};
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j)
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          H[2 * i + a][2 * j + b] = S[i][j] == 0 ? zero_block[a][b] : S[i][j] * one_block[a][b];
  return H;
}

// Sylvester doubling: [[H, H], [H, -H]].
Matrix doubled(const Matrix& H) {
  const int m = int(H.size());
  Matrix D = zeros(2 * m);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) {
      D[i][j] = D[i][j + m] = D[i + m][j] = H[i][j];
      D[i + m][j + m] = -H[i][j];
    }
  return D;
}

// ---------------------------------------------------------------------------------------------
// Williamson matrices: symmetric circulant +-1 matrices A, B, C, D of odd order n with
// A^2 + B^2 + C^2 + D^2 = 4n I. They commute, so the Williamson array
//   [[ A,  B,  C,  D],
//    [-B,  A, -D,  C],
//    [-C,  D,  A, -B],
//    [-D, -C,  B,  A]]
// is a Hadamard matrix of order 4n.
//
// Search. A symmetric sequence (a_0..a_{n-1}, a_j = a_{n-j}) with a_0 = +1 (negating a matrix
// is free) is a bit mask over j = 1..h, h = (n-1)/2: bit j-1 set <=> a_j = -1. The condition,
// in terms of periodic autocorrelations PAF_X(s) = sum_i x_i x_{i+s mod n}, is
//   PAF_A(s) + PAF_B(s) + PAF_C(s) + PAF_D(s) = 0,  s = 1..h,
// and, through the DFT (real for symmetric sequences, X^(k) = x_0 + 2 sum_j x_j cos(2 pi jk/n)),
//   PSD_A(k) + PSD_B(k) + PSD_C(k) + PSD_D(k) = 4n,  PSD_X(k) = X^(k)^2,  every k.
// Filters and reductions:
//  1. PSD filter: a sequence with PSD(k) > 4n for some k, or a pair with PSD sum > 4n, is out.
//  2. Row sums: PSD(0) = r^2, so r_A^2 + r_B^2 + r_C^2 + r_D^2 = 4n; with a_0 = +1 the row sum
//     is r = 1 + 2 (h - 2 popcount) = 1 + 2h mod 4, which fixes its sign. We try each
//     decomposition of 4n into four such squares.
//  3. Williamson's lemma (odd n, a_0 = b_0 = c_0 = d_0 = 1): a_j b_j c_j d_j = -1 for j != 0,
//     i.e. mask_A ^ mask_B = ~(mask_C ^ mask_D). It is the bucket key of the join below.
//  4. Multipliers: j -> u j mod n (u a unit) maps solutions to solutions, so A can be taken
//     as the smallest mask of its orbit.
// Meet in the middle: every passing pair (A canonical, B) is stored, keyed by
// (mask_A ^ mask_B, hash of PAF_A + PAF_B); every passing pair (C, D) looks up
// (~(mask_C ^ mask_D), hash of -(PAF_C + PAF_D)); a hit is confirmed by the exact check.
// The scan order is fixed, so the first solution found (and the file) is the same on every run.
struct SeqList {
  int r = 0;                   // row sum
  std::vector<uint32_t> mask;  // one per sequence
  std::vector<float> psd;      // kPad per sequence, PSD(k) for k = 1..h, zero padded
  std::vector<int8_t> paf;     // kPad per sequence, PAF(s) for s = 1..h, zero padded
};
constexpr int kPad = 32;
constexpr double kPi = 3.14159265358979323846;

std::vector<int> expand(uint32_t mask, int n) {
  std::vector<int> a(n, 1);
  for (int j = 1; j <= (n - 1) / 2; ++j)
    if (mask >> (j - 1) & 1u) a[j] = a[n - j] = -1;
  return a;
}

int paf(const std::vector<int>& a, int s) {
  const int n = int(a.size());
  int v = 0;
  for (int i = 0; i < n; ++i) v += a[i] * a[(i + s) % n];
  return v;
}

Matrix williamson_array(const std::vector<int> (&seq)[4]) {
  const int n = int(seq[0].size());
  // Block (R, C) of the array is sign * circulant(seq[which]).
  const int which[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  const int sign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  Matrix H = zeros(4 * n);
  for (int R = 0; R < 4; ++R)
    for (int C = 0; C < 4; ++C)
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
          H[R * n + i][C * n + j] = sign[R][C] * seq[which[R][C]][((j - i) % n + n) % n];
  return H;
}

uint32_t paf_hash(const int8_t* v, int h) {
  uint32_t x = 2166136261u;  // FNV-1a over the bytes
  for (int s = 0; s < h; ++s) x = (x ^ uint8_t(v[s])) * 16777619u;
  return x;
}

bool pair_passes(const float* x, const float* y, int h, float bound) {
  for (int k = 0; k < h; ++k)
    if (x[k] + y[k] > bound) return false;
  return true;
}

Matrix williamson(int n) {
  const int h = (n - 1) / 2;
  const float bound = float(4 * n) + 1e-3f;
  const uint32_t full = (h == 32) ? ~0u : ((1u << h) - 1);
  // cos table: cs[k][j] = 2 cos(2 pi j k / n)
  std::vector<double> cs((h + 1) * (h + 1));
  for (int k = 0; k <= h; ++k)
    for (int j = 0; j <= h; ++j) cs[k * (h + 1) + j] = 2 * std::cos(2 * kPi * double(j) * k / n);

  // 1. All symmetric sequences passing the single PSD filter, grouped by row sum.
  std::vector<SeqList> lists;
  auto list_for = [&](int r) -> SeqList& {
    for (auto& L : lists)
      if (L.r == r) return L;
    lists.push_back(SeqList{});
    lists.back().r = r;
    return lists.back();
  };
  std::vector<float> psd(kPad);
  for (uint32_t m = 0; m <= full; ++m) {
    const int r = 1 + 2 * (h - 2 * __builtin_popcount(m));
    if (r * r > 4 * n) continue;
    bool ok = true;
    std::fill(psd.begin(), psd.end(), 0.0f);
    for (int k = 1; k <= h && ok; ++k) {
      double v = 1;
      for (int j = 1; j <= h; ++j) v += (m >> (j - 1) & 1u) ? -cs[k * (h + 1) + j] : cs[k * (h + 1) + j];
      psd[k - 1] = float(v * v);
      ok = v * v <= 4.0 * n + 1e-6;
    }
    if (!ok) continue;
    SeqList& L = list_for(r);
    L.mask.push_back(m);
    L.psd.insert(L.psd.end(), psd.begin(), psd.end());
    const std::vector<int> a = expand(m, n);
    for (int s = 1; s <= kPad; ++s) L.paf.push_back(int8_t(s <= h ? paf(a, s) : 0));
  }
  std::sort(lists.begin(), lists.end(), [](const SeqList& x, const SeqList& y) { return x.r < y.r; });

  // Units mod n up to sign, for the multiplier orbits of A.
  std::vector<int> units;
  for (int u = 2; u <= h; ++u) {
    int g = n, v = u;
    while (v) std::swap(g, v), v %= g;
    if (g == 1) units.push_back(u);
  }
  auto canonical = [&](uint32_t m) {
    const std::vector<int> a = expand(m, n);
    for (int u : units) {
      uint32_t mu = 0;
      for (int j = 1; j <= h; ++j)
        if (a[(u * j) % n] < 0) mu |= 1u << (j - 1);
      if (mu < m) return false;
    }
    return true;
  };

  // 2. Decompositions 4n = rA^2 + rB^2 + rC^2 + rD^2 (as list indices, nondecreasing).
  struct Plan {
    int A, B, C, D;
    double cost;
  };
  std::vector<Plan> plans;
  const int nl = int(lists.size());
  for (int i0 = 0; i0 < nl; ++i0)
    for (int i1 = i0; i1 < nl; ++i1)
      for (int i2 = i1; i2 < nl; ++i2)
        for (int i3 = i2; i3 < nl; ++i3) {
          const int ss = lists[i0].r * lists[i0].r + lists[i1].r * lists[i1].r +
                         lists[i2].r * lists[i2].r + lists[i3].r * lists[i3].r;
          if (ss != 4 * n) continue;
          // Roles: the cheapest of the 12 assignments (A canonical, (C, D) unordered if equal).
          int idx[4] = {i0, i1, i2, i3};
          Plan best{0, 0, 0, 0, 1e300};
          std::sort(idx, idx + 4);
          do {
            auto sz = [&](int i) { return double(lists[i].mask.size()); };
            const double cd = sz(idx[2]) * sz(idx[3]) / (idx[2] == idx[3] ? 2 : 1);
            const double ab = sz(idx[0]) / (units.size() + 1) * sz(idx[1]);
            if (cd + ab < best.cost) best = Plan{idx[0], idx[1], idx[2], idx[3], cd + ab};
          } while (std::next_permutation(idx, idx + 4));
          plans.push_back(best);
        }
  std::stable_sort(plans.begin(), plans.end(), [](const Plan& x, const Plan& y) { return x.cost < y.cost; });

  // 3. Meet in the middle, one decomposition at a time.
  struct Entry {
    uint32_t pattern, hash, ia, ib;
  };
  for (const Plan& P : plans) {
    const SeqList &LA = lists[P.A], &LB = lists[P.B], &LC = lists[P.C], &LD = lists[P.D];
    std::fprintf(stderr, "  n=%d: row sums (%d, %d, %d, %d), lists %zu %zu %zu %zu\n", n, LA.r, LB.r,
                 LC.r, LD.r, LA.mask.size(), LB.mask.size(), LC.mask.size(), LD.mask.size());
    std::vector<Entry> table;
    int8_t s8[kPad];
    for (uint32_t ia = 0; ia < LA.mask.size(); ++ia) {
      if (!canonical(LA.mask[ia])) continue;
      for (uint32_t ib = 0; ib < LB.mask.size(); ++ib) {
        if (!pair_passes(&LA.psd[ia * kPad], &LB.psd[ib * kPad], h, bound)) continue;
        for (int s = 0; s < h; ++s) s8[s] = int8_t(LA.paf[ia * kPad + s] + LB.paf[ib * kPad + s]);
        table.push_back(Entry{LA.mask[ia] ^ LB.mask[ib], paf_hash(s8, h), ia, ib});
      }
    }
    std::sort(table.begin(), table.end(), [](const Entry& x, const Entry& y) {
      return x.pattern != y.pattern ? x.pattern < y.pattern : x.hash < y.hash;
    });
    std::vector<uint32_t> start(size_t(full) + 2, 0);  // entries with pattern p: [start[p], start[p+1])
    for (const Entry& e : table) ++start[e.pattern + 1];
    for (size_t p = 1; p < start.size(); ++p) start[p] += start[p - 1];
    std::fprintf(stderr, "  n=%d: %zu (A, B) pairs stored\n", n, table.size());

    for (uint32_t ic = 0; ic < LC.mask.size(); ++ic) {
      for (uint32_t id = (P.C == P.D ? ic : 0); id < LD.mask.size(); ++id) {
        if (!pair_passes(&LC.psd[ic * kPad], &LD.psd[id * kPad], h, bound)) continue;
        const uint32_t pattern = ~(LC.mask[ic] ^ LD.mask[id]) & full;
        if (start[pattern] == start[pattern + 1]) continue;
        for (int s = 0; s < h; ++s) s8[s] = int8_t(-(LC.paf[ic * kPad + s] + LD.paf[id * kPad + s]));
        const uint32_t hash = paf_hash(s8, h);
        for (uint32_t t = start[pattern]; t < start[pattern + 1]; ++t) {
          if (table[t].hash != hash) continue;
          const std::vector<int> seq[4] = {expand(LA.mask[table[t].ia], n), expand(LB.mask[table[t].ib], n),
                                           expand(LC.mask[ic], n), expand(LD.mask[id], n)};
          bool ok = true;
          for (int s = 1; s <= h && ok; ++s) ok = paf(seq[0], s) + paf(seq[1], s) + paf(seq[2], s) + paf(seq[3], s) == 0;
          if (!ok) continue;  // hash collision
          std::fprintf(stderr, "  n=%d: Williamson masks A=%#x B=%#x C=%#x D=%#x\n", n, LA.mask[table[t].ia],
                       LB.mask[table[t].ib], LC.mask[ic], LD.mask[id]);
          return williamson_array(seq);
        }
      }
    }
  }
  return {};  // no solution in any decomposition
}

void write_matrix(const std::string& dir, const Matrix& H) {
  const std::string path = dir + "/had_" + std::to_string(H.size()) + ".txt";
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) die("cannot write " + path);
  for (const auto& row : H) {
    for (int v : row) std::fputc(v > 0 ? '+' : '-', f);
    std::fputc('\n', f);
  }
  std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  // Optional second argument: build only this order (for testing the search on small n,
  // e.g. `gen_hadamard /tmp 92` runs the Williamson search for n = 23).
  const int only = argc > 2 ? std::atoi(argv[2]) : 0;
  struct Job {
    int K;
    const char* how;
  };
  const Job jobs[] = {{12, "Paley I, q=11"},   {20, "Paley I, q=19"},   {28, "Paley I, q=27"},
                      {36, "Paley II, q=17"},  {40, "Sylvester 2 x 20"}, {52, "Paley II, q=25"},
                      {60, "Paley I, q=59"},   {108, "Paley I, q=107"}, {140, "Paley I, q=139"},
                      {148, "Paley II, q=73"}, {156, "Williamson n=39"}, {172, "Williamson n=43"}};
  std::vector<Job> todo(std::begin(jobs), std::end(jobs));
  if (only) todo = {{only, "single order"}};
  const auto t_all = std::chrono::steady_clock::now();
  int failed = 0;
  for (const Job& job : todo) {
    const auto t0 = std::chrono::steady_clock::now();
    Matrix H;
    switch (job.K) {
      case 12: H = paley1(11, 1); break;
      case 20: H = paley1(19, 1); break;
      case 28: H = paley1(3, 3); break;
      case 36: H = paley2(17, 1); break;
      case 40: H = doubled(paley1(19, 1)); break;
      case 52: H = paley2(5, 2); break;
      case 60: H = paley1(59, 1); break;
      case 108: H = paley1(107, 1); break;
      case 140: H = paley1(139, 1); break;
      case 148: H = paley2(73, 1); break;
      default:
        if (job.K % 8 != 4) die("no construction for order " + std::to_string(job.K));
        H = williamson(job.K / 4);
        break;
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (H.empty()) {
      std::fprintf(stderr, "K=%d (%s): NOT FOUND after %.1f s\n", job.K, job.how, sec);
      ++failed;
      continue;
    }
    if (int(H.size()) != job.K || !is_hadamard(H)) die("K=" + std::to_string(job.K) + ": not a Hadamard matrix");
    write_matrix(dir, H);
    std::fprintf(stderr, "K=%d (%s): ok, %.1f s\n", job.K, job.how, sec);
  }
  std::fprintf(stderr, "total %.1f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count());
  return failed ? 1 : 0;
}
