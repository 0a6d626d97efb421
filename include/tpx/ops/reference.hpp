#pragma once
/// \file
/// `ops::reference::elements`: every member of `element_ops` (and of `routing_ops` and the
/// activations) as plain loops over host memory, in T — the reference the backends are held to
/// (tests/ops) and what `host::ops` is made of, with faster members of its own where it has them.
/// The members are documented in ops/concept.hpp; shapes are checked by the layers that call them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "tpx/core/dtype.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/ops/concept.hpp"
#include "tpx/ops/elementwise.hpp"
#include "tpx/ops/routing.hpp"

namespace tpx::inline v0::ops::reference {

struct elements {
  /// y[t, :] = x[t, :] · r_t ⊙ w, r_t = 1 / sqrt(mean_j x[t, j]² + eps).
  template <class T>
  void rms_norm_forward(matrix_view<const T> x, std::span<const T> w, double eps,
                        matrix_view<T> y) const {
    for (index_t t = 0; t < x.rows(); ++t) {
      const T r = inverse_rms(x, t, eps);
      for (index_t j = 0; j < x.cols(); ++j) y(t, j) = x(t, j) * r * w[at(j)];
    }
  }

  /// dx (overwritten) and dw = Σ_t dy[t, :] ⊙ x̂[t, :] over this rank's rows (overwritten).
  template <class T>
  void rms_norm_backward(matrix_view<const T> x, std::span<const T> w, double eps,
                         matrix_view<const T> dy, matrix_view<T> dx, std::span<T> dw) const {
    std::fill(dw.begin(), dw.end(), T(0));
    const index_t h = x.cols();
    for (index_t t = 0; t < x.rows(); ++t) {
      const T r = inverse_rms(x, t, eps);
      T dot = 0;  // Σ_j dy_j w_j x̂_j
      for (index_t j = 0; j < h; ++j) {
        const T xhat = x(t, j) * r;
        dw[at(j)] += dy(t, j) * xhat;
        dot += dy(t, j) * w[at(j)] * xhat;
      }
      for (index_t j = 0; j < h; ++j)
        dx(t, j) = r * (dy(t, j) * w[at(j)] - x(t, j) * r * dot / T(h));
    }
  }

  /// y[t, :] = table[ids[t] − first, :] for the ids the table's rows [first, first + rows) hold,
  /// zero for the others. The table may be held narrower than T (bf16 under `weights_in`).
  template <class W, class T>
  void embedding_forward(std::span<const std::int64_t> ids, matrix_view<const W> table,
                         index_t first, matrix_view<T> y) const {
    for (index_t t = 0; t < y.rows(); ++t) {
      const index_t row = ids[at(t)] - first;
      const bool mine = 0 <= row && row < table.rows();
      for (index_t j = 0; j < y.cols(); ++j) y(t, j) = mine ? convert<T>(table(row, j)) : T(0);
    }
  }

  /// dtable[ids[t] − first, :] += dy[t, :] for the ids the table holds, in token order.
  template <class T>
  void embedding_backward(std::span<const std::int64_t> ids, matrix_view<const T> dy, index_t first,
                          matrix_view<T> dtable) const {
    for (index_t t = 0; t < dy.rows(); ++t) {
      const index_t row = ids[at(t)] - first;
      if (row < 0 || row >= dtable.rows()) continue;
      for (index_t j = 0; j < dy.cols(); ++j) dtable(row, j) += dy(t, j);
    }
  }

  /// max[t] = max_j logits[t, j] (−∞ for a rank without columns).
  template <class T>
  void row_max(matrix_view<const T> logits, std::span<T> max) const {
    for (index_t t = 0; t < logits.rows(); ++t) {
      T m = -std::numeric_limits<T>::infinity();
      for (index_t j = 0; j < logits.cols(); ++j) m = std::max(m, logits(t, j));
      max[at(t)] = m;
    }
  }

  /// sums[t] = Σ_j exp(logits[t, j] − max[t]); sums[T + t] = target t's logit when the rank's
  /// columns [first, first + cols) hold it, else 0.
  template <class T>
  void cross_entropy_sums(matrix_view<const T> logits, std::span<const T> max,
                          std::span<const std::int64_t> targets, index_t first,
                          std::span<T> sums) const {
    const index_t tokens = logits.rows();
    for (index_t t = 0; t < tokens; ++t) {
      T s = 0;
      for (index_t j = 0; j < logits.cols(); ++j) s += std::exp(logits(t, j) - max[at(t)]);
      const index_t c = targets[at(t)] - first;
      sums[at(t)] = s;
      sums[at(tokens + t)] = 0 <= c && c < logits.cols() ? logits(t, c) : T(0);
    }
  }

  /// dlogits[t, j] = (exp(logits[t, j] − max[t]) / sum[t] − [first + j = target]) · scale; zero
  /// rows for targets equal to `ignore`.
  template <class T>
  void cross_entropy_backward(matrix_view<const T> logits, std::span<const T> max,
                              std::span<const T> sum, std::span<const std::int64_t> targets,
                              index_t first, std::int64_t ignore, T scale,
                              matrix_view<T> dlogits) const {
    for (index_t t = 0; t < logits.rows(); ++t) {
      const std::int64_t target = targets[at(t)];
      for (index_t j = 0; j < logits.cols(); ++j) {
        const T p = std::exp(logits(t, j) - max[at(t)]) / sum[at(t)];
        dlogits(t, j) = target == ignore ? T(0) : (p - (first + j == target ? T(1) : T(0))) * scale;
      }
    }
  }

  /// Row moves by index maps (computed on the host). `w` is [rows × k] routing weights, or an
  /// empty view for weight 1.
  ///   gather_rows   dst[r] = src[from[r]] (zeros where from[r] < 0)
  ///   spread_rows   dst[to[t·k + j]] = w[t, j] · src[t] where to ≥ 0 (each dst row written once)
  ///   combine_rows  dst[t] = Σ_j w[t, j] · src[from[t·k + j]] over from ≥ 0, j in order
  ///   row_dots      out[t, j] = from[t·k + j] ≥ 0 ? a[t] · b[from[t·k + j]] : 0
  template <class T>
  void gather_rows(matrix_view<const T> src, std::span<const index_t> from,
                   matrix_view<T> dst) const {
    for (index_t r = 0; r < dst.rows(); ++r)
      for (index_t c = 0; c < dst.cols(); ++c)
        dst(r, c) = from[at(r)] >= 0 ? src(from[at(r)], c) : T(0);
  }
  template <class T>
  void spread_rows(matrix_view<const T> src, std::span<const index_t> to, index_t k,
                   matrix_view<const T> w, matrix_view<T> dst) const {
    for (index_t t = 0; t < src.rows(); ++t)
      for (index_t j = 0; j < k; ++j)
        if (const index_t d = to[at(t * k + j)]; d >= 0)
          for (index_t c = 0; c < src.cols(); ++c)
            dst(d, c) = w.data() == nullptr ? src(t, c) : w(t, j) * src(t, c);
  }
  template <class T>
  void combine_rows(matrix_view<const T> src, std::span<const index_t> from, index_t k,
                    matrix_view<const T> w, matrix_view<T> dst) const {
    for (index_t t = 0; t < dst.rows(); ++t) {
      for (index_t c = 0; c < dst.cols(); ++c) dst(t, c) = T(0);
      for (index_t j = 0; j < k; ++j)
        if (const index_t r = from[at(t * k + j)]; r >= 0)
          for (index_t c = 0; c < dst.cols(); ++c)
            dst(t, c) += w.data() == nullptr ? src(r, c) : w(t, j) * src(r, c);
    }
  }
  template <class T>
  void row_dots(matrix_view<const T> a, matrix_view<const T> b, std::span<const index_t> from,
                matrix_view<T> out) const {
    const index_t k = out.cols();
    for (index_t t = 0; t < out.rows(); ++t)
      for (index_t j = 0; j < k; ++j) {
        const index_t r = from[at(t * k + j)];
        T s = 0;
        if (r >= 0)
          for (index_t c = 0; c < a.cols(); ++c) s += a(t, c) * b(r, c);
        out(t, j) = s;
      }
  }

  /// a = silu(gate) ⊙ up of h = [gate | up], and dh from da (ops/elementwise.hpp's loops).
  template <class T>
  void swiglu_forward(matrix_view<const T> h, matrix_view<T> a) const {
    ops::swiglu<T>(h, a);
  }
  template <class T>
  void swiglu_backward(matrix_view<const T> h, matrix_view<const T> da, matrix_view<T> dh) const {
    ops::swiglu_backward<T>(h, da, dh);
  }

  /// a = act(h), and da ⊙= act'(h), for any activation of ops/elementwise.hpp.
  template <class Activation, class T>
  void activate(Activation, matrix_view<const T> h, matrix_view<T> a) const {
    ops::activate<Activation, T>(h, a);
  }
  template <class Activation, class T>
  void activate_backward(Activation, matrix_view<const T> h, matrix_view<T> da) const {
    ops::activate_backward<Activation, T>(h, da);
  }

  /// a += b, element by element.
  template <class T>
  void add(matrix_view<T> a, matrix_view<const T> b) const {
    ops::add_to(a, b);
  }

  /// Top-k routing and its backward (ops/routing.hpp's loops; ids in host memory).
  template <class T>
  void route(matrix_view<const T> logits, const routing_options& options,
             matrix_view<std::int64_t> ids, matrix_view<T> weights) const {
    ops::route(logits, options, ids, weights);
  }
  template <class T>
  void route_backward(matrix_view<const T> logits, const routing_options& options,
                      matrix_view<const std::int64_t> ids, matrix_view<const T> dweights,
                      matrix_view<T> dlogits) const {
    ops::route_backward(logits, options, ids, dweights, dlogits);
  }

  /// to = from, element by element (views of the same shape, any leading dimensions).
  template <class T>
  void copy(matrix_view<const T> from, matrix_view<T> to) const {
    copy_view(from, to);
  }

  /// Copies backend elements into host memory (once the work that writes them is done), and
  /// host elements into backend memory.
  template <class T>
  void copy_to_host(matrix_view<const T> from, matrix_view<T> to) const {
    copy_view(from, to);
  }
  template <class T>
  void copy_from_host(matrix_view<const T> from, matrix_view<T> to) const {
    copy_view(from, to);
  }

 private:
  static std::size_t at(index_t i) { return static_cast<std::size_t>(i); }

  template <class T>
  static T inverse_rms(matrix_view<const T> x, index_t t, double eps) {
    T ss = 0;
    for (index_t j = 0; j < x.cols(); ++j) ss += x(t, j) * x(t, j);
    return T(1) / std::sqrt(ss / T(x.cols()) + static_cast<T>(eps));
  }
};

static_assert(element_ops<elements> && routing_ops<elements> &&
              activation_ops_of<elements, activation::silu, float>);

}  // namespace tpx::inline v0::ops::reference
