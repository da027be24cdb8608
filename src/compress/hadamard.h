// Hadamard matrices and fast Walsh-Hadamard transforms for the QuaRot rotation
// (ALGORITHM.md section 1).
//
// Sizes. A transform of length n exists when n = K * 2^m with K = 1 or K one of the base
// orders {12, 20, 28, 36, 40, 52, 60, 108, 140, 148, 156, 172} (QuaRot's list; e.g.
// 11008 = 172 * 64, 14336 = 28 * 512, 5120 = 40 * 128). The K x K base matrices H_K are
// embedded at build time from data/hadamard/had_<K>.txt (see data/hadamard/MANIFEST.md).
// Where two K fit (only 20 and 40 can: 40 * 2^m = 20 * 2^(m+1)) the larger is used, as
// QuaRot's get_hadK does.
//
// The matrix. With n = K * 2^m, index j in [0, n) is split as j = b * 2^m + s
// (b in [0, K) the slow "block" index, s in [0, 2^m) the fast index), and
//
//   H_n = H_K (x) S_{2^m},   H_n[b*2^m + s, a*2^m + t] = H_K[b, a] * S[s, t],
//
// where S_{2^m} is the Sylvester matrix in natural order, S[s, t] = (-1)^popcount(s & t)
// (symmetric), and (x) is the Kronecker product. The orthonormal matrix
//
//   M_n = H_n / sqrt(n),   M_n M_n^T = I,
//
// is what the transforms apply to row vectors: x <- x M_n. M_n is symmetric, and the
// transform its own inverse, exactly when H_K is; for K = 1 (powers of two) it always is,
// for the shipped K not in general (Paley I and Williamson matrices are not symmetric).
// In general the inverse of x -> x M_n is y -> y M_n^T.
//
// QuaRot correspondence: its matmul_hadU(X) computes X (hadK^T (x) S_{2^m}) / sqrt(n) with
// the same index split (butterflies on the contiguous 2^m part, then `hadK @ x` over the K
// blocks); with H_K := hadK^T the two agree. Our H_K are our own matrices (not QuaRot's), so
// values differ from QuaRot's, but every property the method relies on is the same.
//
// Layouts: every X here is row-major [rows, n], transformed in place, row by row.
// Arithmetic is float32 in a fixed order (results do not depend on the thread count).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace obr {

// The base orders K > 1 that the transforms know about, ascending (QuaRot's list). Only those
// whose data file was present at build time are usable (all of them in a normal build).
const std::vector<int>& hadamard_known_orders();

// True when n = K * 2^m with K = 1 or K a shipped base order (n >= 1).
bool hadamard_supported(int64_t n);

// The K used for length n (1 for powers of two). Throws obr::Error naming n and the known
// orders when n is not supported.
int hadamard_base_order(int64_t n);

// The K x K base matrix H_K, entries +1/-1 as float32 (not normalised: H_K H_K^T = K I).
// K = 1 gives [[1]]. Throws for an unknown K.
Tensor hadamard_base(int K);

// In-place orthonormal transform of each row of X [rows, n]: x <- x M_n = x H_n / sqrt(n).
// Cost per row: (n/2) log2(n/K) butterflies plus n*K multiply-adds for the K x K step.
void hadamard_transform_rows(float* X, int64_t rows, int64_t n);

// The explicit n x n matrix M_n = H_n / sqrt(n) that hadamard_transform_rows applies
// (row-major, n*n floats: for tests and small folds; fold big matrices with the transform).
Tensor hadamard_matrix(int64_t n);

// Random Hadamard rotation (QuaRot's convention, signs on the input side):
//   Q = diag(s) M_n = diag(s) H_n / sqrt(n),  so  x Q = (x * s) H_n / sqrt(n),
// with s_i = Rng(seed).sign() drawn in order i = 0, 1, ..., n-1. Q is orthogonal.
Tensor random_hadamard_matrix(int64_t n, uint64_t seed);

// In place: x <- x Q for each row of X [rows, n], Q = random_hadamard_matrix(n, seed).
void random_hadamard_transform_rows(float* X, int64_t rows, int64_t n, uint64_t seed);

// QuaRot's online transform of the o_proj input. X is [rows, n_heads * head_dim], each row
// n_heads contiguous heads of head_dim values. For every row r and position d within a head,
// the vector v[h] = X[r, h*head_dim + d] (h = 0..n_heads-1) becomes v M_{n_heads}, i.e.
//   X <- X (M_{n_heads} (x) I_{head_dim}),  scaled 1/sqrt(n_heads) through M.
// (QuaRot writes this as had_K @ x.view(n_heads, head_dim) / sqrt(n_heads).) n_heads must be
// a supported length.
void hadamard_across_heads(float* X, int64_t rows, int64_t n_heads, int64_t head_dim);

namespace detail {
// Rows of H_K as K*K characters '+'/'-' (row-major), or nullptr when had_<K>.txt was not
// present at build time. Defined in the build-generated hadamard_data.cpp (CMakeLists.txt).
const char* hadamard_base_text(int K);
}  // namespace detail

}  // namespace obr
