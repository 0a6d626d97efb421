#pragma once
/// \file
/// The host GEMM engine: CBLAS (OpenBLAS on Debian) for f32 and f64. Models `gemm::gemm_engine`,
/// and `gemm::gemm_engine_of<gemm_engine, float, bf16>`: a weight B held as bf16 is widened to
/// float a block of rows at a time (a block that stays in cache) and each block goes through
/// sgemm, so the bytes read from memory are bf16's — half of float's. A few rows of A times a
/// weight as stored (a decode step) go through `simd::dots`, which reads the weight at the
/// memory's speed: one row on any CPU, up to eight with AVX2 + FMA.

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "tpx/backend/host/dots.hpp"
#include "tpx/backend/host/simd.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/gemm/engine.hpp"

namespace tpx::inline v0::host {

/// What the host engine computes with: float or double (CBLAS), B stored as the compute type or,
/// under float, as bf16.
template <class T, class W = T>
inline constexpr bool computes =
    (std::is_same_v<T, float> || std::is_same_v<T, double>) &&
    (std::is_same_v<W, T> || (std::is_same_v<T, float> && std::is_same_v<W, bf16>));

class gemm_engine {
 public:
  template <class T, class W = T>
    requires computes<T, W>
  void gemm(const gemm::gemm_args<T, W>& g) {
    gemm::check_gemm(g, "host::gemm_engine");
    const index_t m = g.c.rows();
    const index_t n = g.c.cols();
    const index_t k = g.op_a == gemm::op::none ? g.a.cols() : g.a.rows();
    for (const index_t d : {m, n, k, g.a.ld(), g.b.ld(), g.c.ld()})
      expect(d <= INT_MAX,
             "host::gemm_engine: a dim or leading dimension of {} exceeds CBLAS's "
             "int range",
             d);
    if (!g.bias_grad.empty()) row_sums(g.op_a, g.a, g.bias_grad);
    if (m == 0 || n == 0) return;
    if (k == 0) {
      scale(g.c, g.beta);
    } else if (std::is_same_v<T, float> && g.op_b == gemm::op::transpose &&
               (m == 1 || (m <= simd::dots_rows() && g.op_a == gemm::op::none))) {
      if constexpr (std::is_same_v<T, float>) dotted(g);
    } else if constexpr (!std::is_same_v<W, T>) {
      widened(g);
    } else if (m == 1) {
      row(g, n, k);
    } else {
      const auto ta = g.op_a == gemm::op::none ? CblasNoTrans : CblasTrans;
      const auto tb = g.op_b == gemm::op::none ? CblasNoTrans : CblasTrans;
      const auto lda = static_cast<int>(std::max<index_t>(1, g.a.ld()));
      const auto ldb = static_cast<int>(std::max<index_t>(1, g.b.ld()));
      const auto ldc = static_cast<int>(std::max<index_t>(1, g.c.ld()));
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), g.alpha, g.a.data(), lda, g.b.data(), ldb, g.beta,
                    g.c.data(), ldc);
      else
        cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n),
                    static_cast<int>(k), g.alpha, g.a.data(), lda, g.b.data(), ldb, g.beta,
                    g.c.data(), ldc);
    }
    if (!g.bias.empty()) add_bias(g.c, g.bias);
  }

  /// Every GEMM of `groups`, one after the other (each checked on its own).
  template <class T, class W = T>
    requires computes<T, W>
  void grouped_gemm(std::span<const gemm::gemm_args<T, W>> groups) {
    for (const gemm::gemm_args<T, W>& g : groups) gemm(g);
  }

  /// c[i, j] += bias[j].
  template <class T>
  void add_bias(matrix_view<T> c, std::span<const T> bias) {
    gemm::check_add_bias(c, bias, "host::gemm_engine");
    for (index_t i = 0; i < c.rows(); ++i)
      for (index_t j = 0; j < c.cols(); ++j) c(i, j) += bias[static_cast<std::size_t>(j)];
  }

  /// db[j] = Σ_i dy[i, j].
  template <class T>
  void bias_grad(matrix_view<const T> dy, std::span<T> db) {
    gemm::check_bias_grad(dy, db, "host::gemm_engine");
    std::fill(db.begin(), db.end(), T(0));
    for (index_t i = 0; i < dy.rows(); ++i)
      for (index_t j = 0; j < dy.cols(); ++j) db[static_cast<std::size_t>(j)] += dy(i, j);
  }

 private:
  /// A few rows of C = α · op(A) · Bᵀ + β · C, B [n × k] a weight as stored (a decode step):
  /// simd::dots reads each row of B from memory once (bf16 widened as read) for every row of A.
  /// op(A) transposed comes here with one row only (a column of A, copied once).
  template <class W>
  static void dotted(const gemm::gemm_args<float, W>& g) {
    thread_local std::vector<float> column;
    const float* x = g.a.data();
    const index_t k = g.b.cols();
    if (g.op_a == gemm::op::transpose) {
      column.resize(static_cast<std::size_t>(k));
      for (index_t l = 0; l < k; ++l) column[static_cast<std::size_t>(l)] = g.a(l, 0);
      x = column.data();
    }
    simd::dots<W>({.x = x,
                   .ldx = g.a.ld(),
                   .m = static_cast<int>(g.c.rows()),
                   .w = g.b.data(),
                   .ldw = g.b.ld(),
                   .n = g.c.cols(),
                   .k = k,
                   .c = g.c.data(),
                   .ldc = g.c.ld(),
                   .alpha = g.alpha,
                   .beta = g.beta});
  }

  /// One row of C otherwise (double, or B as stored): a GEMV reads B once, where a GEMM would
  /// first pack it.
  /// c = α · op(a) · op(B) + β · c with op(a) one row of k (a column of A when transposed).
  template <class T>
  static void row(const gemm::gemm_args<T>& g, index_t n, index_t k) {
    const auto incx = static_cast<int>(g.op_a == gemm::op::none ? 1 : std::max<index_t>(1, g.a.ld()));
    const auto ldb = static_cast<int>(std::max<index_t>(1, g.b.ld()));
    // B [n × k] transposed: c = B · a; B [k × n]: c = Bᵀ · a.
    const bool by_rows = g.op_b == gemm::op::transpose;
    const auto rows = static_cast<int>(by_rows ? n : k), cols = static_cast<int>(by_rows ? k : n);
    const auto trans = by_rows ? CblasNoTrans : CblasTrans;
    if (g.beta == T(0)) std::fill_n(g.c.data(), n, T(0));  // β = 0 never reads C (NaN stays out)
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemv(CblasRowMajor, trans, rows, cols, g.alpha, g.b.data(), ldb, g.a.data(), incx,
                  g.beta, g.c.data(), 1);
    else
      cblas_dgemv(CblasRowMajor, trans, rows, cols, g.alpha, g.b.data(), ldb, g.a.data(), incx,
                  g.beta, g.c.data(), 1);
  }

  /// Floats of B widened at once: 256 KiB, a block that stays in L2 while sgemm reads it.
  static constexpr index_t widened_block = index_t{1} << 16;

  /// g with B (bf16) widened a block of its rows at a time. B transposed ([n × k]): a block of
  /// rows is a block of C's columns. B as stored ([k × n]): a block of the inner dim, summed into
  /// C (β on the first block only). The caller handles k = 0 and adds the bias.
  template <class W>
  void widened(const gemm::gemm_args<float, W>& g) {
    thread_local std::vector<float> block;
    const bool by_columns = g.op_b == gemm::op::transpose;
    const index_t width = g.b.cols();  // k (by columns) or n
    const index_t rows = std::max<index_t>(1, widened_block / std::max<index_t>(1, width));
    block.resize(static_cast<std::size_t>(std::min(rows, g.b.rows()) * width));
    for (index_t r0 = 0; r0 < g.b.rows(); r0 += rows) {
      const index_t r1 = std::min(g.b.rows(), r0 + rows);
      for (index_t r = r0; r < r1; ++r)
        widen_bf16(&g.b(r, 0), static_cast<std::size_t>(width),
                   block.data() + (r - r0) * width);
      const matrix_view<const float> b = make_matrix<const float>(block.data(), r1 - r0, width);
      if (by_columns)
        gemm(gemm::gemm_args<float>{.op_a = g.op_a, .op_b = g.op_b, .alpha = g.alpha, .a = g.a,
                                    .b = b, .beta = g.beta, .c = g.c.col_range(r0, r1)});
      else
        gemm(gemm::gemm_args<float>{
            .op_a = g.op_a,
            .alpha = g.alpha,
            .a = g.op_a == gemm::op::none ? g.a.col_range(r0, r1) : g.a.row_range(r0, r1),
            .b = b,
            .beta = r0 == 0 ? g.beta : 1.0f,
            .c = g.c});
    }
  }

  /// out[i] = Σ_l op(a)[i, l]: row sums of A, or column sums when op is a transpose.
  template <class T>
  void row_sums(gemm::op o, matrix_view<const T> a, std::span<T> out) {
    if (o == gemm::op::transpose) return bias_grad(a, out);
    for (index_t i = 0; i < a.rows(); ++i) {
      T acc = T(0);
      for (index_t l = 0; l < a.cols(); ++l) acc += a(i, l);
      out[static_cast<std::size_t>(i)] = acc;
    }
  }

  template <class T>
  static void scale(matrix_view<T> c, T beta) {
    for (index_t i = 0; i < c.rows(); ++i)
      for (index_t j = 0; j < c.cols(); ++j) c(i, j) = beta == T(0) ? T(0) : beta * c(i, j);
  }
};

static_assert(gemm::gemm_engine<gemm_engine>);

}  // namespace tpx::inline v0::host
