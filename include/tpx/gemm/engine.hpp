#pragma once
/// \file
/// The `gemm_engine` concept: C = alpha · op(A) · op(B) + beta · C (+ bias broadcast over rows),
/// and the bias gradient db = Σ_rows dY, on row-major matrix views. Backends model it (host:
/// CBLAS; cuda: cuBLASLt), plus the bias add a rowwise layer needs after its all-reduce.
/// `check_gemm` is the shape check every engine runs first.

#include <concepts>
#include <span>
#include <string_view>
#include <utility>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::gemm {

/// Whether an operand is used as stored or transposed.
enum class op { none, transpose };

/// Rows and columns of op(M).
template <class T>
constexpr std::pair<index_t, index_t> op_shape(op o, matrix_view<T> m) noexcept {
  return o == op::none ? std::pair{m.rows(), m.cols()} : std::pair{m.cols(), m.rows()};
}

/// One GEMM: c = alpha · op_a(a) · op_b(b) + beta · c, then c[i, j] += bias[j] when bias is not
/// empty, and bias_grad[i] = Σ_l op_a(a)[i, l] when bias_grad is not empty (the bias gradient of
/// the weight-gradient GEMM dW = dYᵀ · X, which an engine may fuse: cuBLASLt's BGRADB epilogue).
/// Designated initialisers make a call read like its formula. B's elements may be of a storage
/// type W (a layer's weight held as bf16, `layer::weights_in`): the engine computes in T.
template <class T, class W = T>
struct gemm_args {
  op op_a = op::none;
  op op_b = op::none;
  T alpha = T(1);
  matrix_view<const T> a;
  matrix_view<const W> b;
  T beta = T(0);
  matrix_view<T> c;
  std::span<const T> bias = {};
  std::span<T> bias_grad = {};
};

/// Checks that op(A) [m × k], op(B) [k × n], C [m × n] and the bias [n] line up.
template <class T, class W>
void check_gemm(const gemm_args<T, W>& g, std::string_view who = "gemm") {
  const auto [m, ka] = op_shape(g.op_a, g.a);
  const auto [kb, n] = op_shape(g.op_b, g.b);
  expect(ka == kb,
         "{}: op(A) is [{} × {}] and op(B) is [{} × {}]; the inner dims {} and {} must be equal",
         who, m, ka, kb, n, ka, kb);
  expect(g.c.rows() == m && g.c.cols() == n, "{}: C is [{} × {}] but op(A)·op(B) is [{} × {}]", who,
         g.c.rows(), g.c.cols(), m, n);
  expect(g.bias.empty() || static_cast<index_t>(g.bias.size()) == n,
         "{}: the bias has {} elements but C has {} columns", who, g.bias.size(), n);
  expect(g.bias_grad.empty() || static_cast<index_t>(g.bias_grad.size()) == m,
         "{}: the bias gradient has {} elements but C has {} rows", who, g.bias_grad.size(), m);
}

/// Checks add_bias's operands: one bias element per column of C.
template <class T>
void check_add_bias(matrix_view<T> c, std::span<const T> bias, std::string_view who) {
  expect(static_cast<index_t>(bias.size()) == c.cols(),
         "{}::add_bias: the bias has {} elements but C has {} columns", who, bias.size(), c.cols());
}

/// Checks bias_grad's operands: one db element per column of dY.
template <class T>
void check_bias_grad(matrix_view<const T> dy, std::span<T> db, std::string_view who) {
  expect(static_cast<index_t>(db.size()) == dy.cols(),
         "{}::bias_grad: db has {} elements but dY has {} columns", who, db.size(), dy.cols());
}

/// A GEMM engine for element type T, with B (the weight) stored as W (T unless a layer holds its
/// weights in a narrower type). `grouped_gemm` runs a list of independent GEMMs of any shapes
/// (experts: one per local expert); an engine may batch them or loop.
template <class E, class T, class W = T>
concept gemm_engine_of = requires(E& e, const gemm_args<T>& g, const gemm_args<T, W>& gw,
                                  matrix_view<const T> dy, std::span<T> db, matrix_view<T> c,
                                  std::span<const T> bias, std::span<const gemm_args<T>> groups,
                                  std::span<const gemm_args<T, W>> weight_groups) {
  e.gemm(g);
  e.gemm(gw);
  e.grouped_gemm(groups);
  e.grouped_gemm(weight_groups);
  e.bias_grad(dy, db);  // db[j] = Σ_i dy[i, j]
  e.add_bias(c, bias);  // c[i, j] += bias[j]
};

/// An engine for both compute types.
template <class E>
concept gemm_engine = gemm_engine_of<E, float> && gemm_engine_of<E, double>;

}  // namespace tpx::inline v0::gemm
