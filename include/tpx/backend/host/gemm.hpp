#pragma once
/// \file
/// The host GEMM engine: CBLAS (OpenBLAS on Debian) for f32 and f64. Models `gemm::gemm_engine`.

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <span>
#include <type_traits>

#include "tpx/gemm/engine.hpp"

namespace tpx::inline v0::host {

class gemm_engine {
 public:
  template <class T>
  void gemm(const gemm::gemm_args<T>& g) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "tpx::host::gemm_engine: CBLAS computes in float or double");
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
  template <class T>
  void grouped_gemm(std::span<const gemm::gemm_args<T>> groups) {
    for (const gemm::gemm_args<T>& g : groups) gemm(g);
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
