#pragma once
/// \file
/// `host::attention`: RoPE and attention (`ops::attention_ops`) on the host at the GEMM engine's
/// speed. Queries go in blocks of `block_rows` rows; per block and head, the scores against the
/// keys the block sees are one GEMM, the causal (or sliding-window) mask and softmax one pass over
/// each row, and the weighted sum of values one more GEMM — a decode step is the same with one
/// row. Backward recomputes each block's probabilities from the forward's log-sum-exp (nothing
/// quadratic in the tokens is kept between the two) and forms dV, dQ and dK as three GEMMs per
/// block. The scratch is one block of scores, reused.
///
/// `ops::reference` computes the same one row at a time; tests/ops holds the two equal.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/backend/host/gemm.hpp"
#include "tpx/backend/host/simd.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/ops/attention.hpp"

namespace tpx::inline v0::host {

namespace detail {

using simd::exp_nonpositive;
using simd::f32x4;

/// row[j] = e^(row[j] − shift) for j in [lo, hi]; returns their sum. Floats go four at a time
/// through `exp_nonpositive` (row[j] ≤ shift: the row's max or its log-sum-exp), doubles through
/// std::exp.
template <class T>
T exp_shifted(T* row, index_t lo, index_t hi, T shift) {
  T sum = 0;
  if constexpr (std::is_same_v<T, float>) {
    f32x4 acc{};
    index_t j = lo;
    for (; j + 4 <= hi + 1; j += 4) {
      f32x4 v;
      std::memcpy(&v, row + j, sizeof v);
      v = exp_nonpositive(v - shift);
      std::memcpy(row + j, &v, sizeof v);
      acc += v;
    }
    if (j <= hi) {                // the last 1 … 3
      f32x4 v = f32x4{} + shift;  // lanes past hi: e^0, never stored
      std::memcpy(&v, row + j, static_cast<std::size_t>(hi + 1 - j) * sizeof(float));
      v = exp_nonpositive(v - shift);
      for (index_t u = 0; u <= hi - j; ++u) row[j + u] = v[u], sum += v[u];
    }
    for (int u = 0; u < 4; ++u) sum += acc[u];
  } else {
    for (index_t j = lo; j <= hi; ++j) sum += row[j] = std::exp(row[j] - shift);
  }
  return sum;
}

}  // namespace detail

class attention {
 public:
  /// Query rows per block of scores.
  static constexpr index_t block_rows = 64;

  template <class T>
  void rope(matrix_view<T> x, index_t head_dim, index_t first, matrix_view<const T> cos,
            matrix_view<const T> sin, bool inverse) const {
    const index_t half = head_dim / 2;
    const T sign = inverse ? T(-1) : T(1);
    for (index_t t = 0; t < x.rows(); ++t) {
      const T* c = &cos(first + t, 0);
      const T* s = &sin(first + t, 0);
      for (index_t c0 = 0; c0 + head_dim <= x.cols(); c0 += head_dim) {
        T* a = &x(t, c0);
        T* b = a + half;
        for (index_t i = 0; i < half; ++i) {
          const T ai = a[i], bi = b[i], si = sign * s[i];
          a[i] = ai * c[i] - bi * si;
          b[i] = bi * c[i] + ai * si;
        }
      }
    }
  }

  template <class T>
  void attention_forward(const ops::attention_shape& s, matrix_view<const T> q,
                         matrix_view<const T> k, matrix_view<const T> v, matrix_view<T> o,
                         std::span<T> lse) {
    for (index_t h = 0; h < s.q_heads; ++h)
      attend(s, h, q, k, v, 0, o, lse.subspan(static_cast<std::size_t>(h * q.rows())));
  }

  template <class T>
  void attention_decode(const ops::attention_shape& s, matrix_view<const T> q,
                        matrix_view<const T> keys, matrix_view<const T> values, index_t first,
                        matrix_view<T> o) {
    for (index_t h = 0; h < s.q_heads; ++h) attend(s, h, q, keys, values, first, o, {});
  }

  template <class T>
  void attention_backward(const ops::attention_shape& s, matrix_view<const T> q,
                          matrix_view<const T> k, matrix_view<const T> v, matrix_view<const T> o,
                          std::span<const T> lse, matrix_view<const T> dout, matrix_view<T> dq,
                          matrix_view<T> dk, matrix_view<T> dv) {
    const index_t n = q.rows(), d = s.head_dim;
    fill_zero(dk);
    fill_zero(dv);
    std::vector<T>& delta = scratch<T>(2);
    delta.resize(static_cast<std::size_t>(n));
    const T scale = static_cast<T>(s.scale);
    for (index_t h = 0; h < s.q_heads; ++h) {
      const index_t g = s.kv_of(h), qc = s.q_col(h), kc = s.kv_col(g);
      const auto qh = q.col_range(qc, qc + d), oh = o.col_range(qc, qc + d),
                 doh = dout.col_range(qc, qc + d);
      const auto kg = k.col_range(kc, kc + d), vg = v.col_range(kc, kc + d);
      const auto dqh = dq.col_range(qc, qc + d);
      const auto dkg = dk.col_range(kc, kc + d), dvg = dv.col_range(kc, kc + d);
      for (index_t i = 0; i < n; ++i) {
        T acc = 0;
        for (index_t e = 0; e < d; ++e) acc += doh(i, e) * oh(i, e);
        delta[static_cast<std::size_t>(i)] = acc;
      }
      for (index_t i0 = 0; i0 < n; i0 += block_rows) {
        const index_t i1 = std::min(n, i0 + block_rows), m = i1 - i0;
        const index_t k0 = s.first_key(i0), span = i1 - k0;
        const auto qb = qh.row_range(i0, i1), dob = doh.row_range(i0, i1);
        const auto kb = kg.row_range(k0, i1), vb = vg.row_range(k0, i1);
        const matrix_view<T> p = sized<T>(0, m, span), ds = sized<T>(1, m, span);
        engine_.gemm<T>({.op_b = gemm::op::transpose, .alpha = scale, .a = qb, .b = kb, .c = p});
        const matrix_view<T> slope = s.softcap > 0 ? sized<T>(3, m, span) : matrix_view<T>{};
        for (index_t r = 0; r < m; ++r) {
          const index_t i = i0 + r, lo = s.first_key(i) - k0, hi = i - k0;
          if (s.softcap > 0) cap_row(s, &p(r, 0), span, lo, hi, &slope(r, 0));
          const T l = lse[static_cast<std::size_t>(h * n + i)];
          exp_masked(&p(r, 0), span, lo, hi, l);
        }
        engine_.gemm<T>({.op_a = gemm::op::transpose,
                         .a = read_only(p),
                         .b = dob,
                         .beta = T(1),
                         .c = dvg.row_range(k0, i1)});
        engine_.gemm<T>({.op_b = gemm::op::transpose, .a = dob, .b = vb, .c = ds});
        for (index_t r = 0; r < m; ++r) {
          const T dl = delta[static_cast<std::size_t>(i0 + r)];
          T* drow = &ds(r, 0);
          const T* prow = &p(r, 0);
          for (index_t j = 0; j < span; ++j) drow[j] = prow[j] * (drow[j] - dl) * scale;
          if (s.softcap > 0)
            for (index_t j = 0; j < span; ++j) drow[j] *= slope(r, j);
        }
        engine_.gemm<T>({.a = read_only(ds), .b = kb, .c = dqh.row_range(i0, i1)});
        engine_.gemm<T>({.op_a = gemm::op::transpose,
                         .a = read_only(ds),
                         .b = qb,
                         .beta = T(1),
                         .c = dkg.row_range(k0, i1)});
      }
    }
  }

 private:
  /// Query head h of the rows of q, at positions first … first + rows − 1, over keys and values
  /// in a ring (position p in row p % ring): o's head h columns, and lse[i] when given.
  template <class T>
  void attend(const ops::attention_shape& s, index_t h, matrix_view<const T> q,
              matrix_view<const T> keys, matrix_view<const T> values, index_t first,
              matrix_view<T> o, std::span<T> lse) {
    const index_t d = s.head_dim, ring = keys.rows(), g = s.kv_of(h);
    const index_t qc = s.q_col(h), kc = s.kv_col(g);
    const auto qh = q.col_range(qc, qc + d);
    const auto kg = keys.col_range(kc, kc + d), vg = values.col_range(kc, kc + d);
    const auto oh = o.col_range(qc, qc + d);
    for (index_t t0 = 0; t0 < q.rows(); t0 += block_rows) {
      const index_t t1 = std::min(q.rows(), t0 + block_rows), m = t1 - t0;
      const index_t k0 = s.first_key(first + t0), k1 = first + t1, span = k1 - k0;
      expect(span <= ring,
             "host::attention: query rows at positions {} … {} see {} key positions but the "
             "cache ring holds {} rows",
             first + t0, k1 - 1, span, ring);
      // The positions [k0, k1) sit in at most two runs of rows of the ring.
      const index_t start = k0 % ring, run = std::min(span, ring - start);
      const matrix_view<T> p = sized<T>(0, m, span);
      const auto qb = qh.row_range(t0, t1);
      engine_.gemm<T>({.op_b = gemm::op::transpose,
                       .alpha = static_cast<T>(s.scale),
                       .a = qb,
                       .b = kg.row_range(start, start + run),
                       .c = p.col_range(0, run)});
      if (run < span)
        engine_.gemm<T>({.op_b = gemm::op::transpose,
                         .alpha = static_cast<T>(s.scale),
                         .a = qb,
                         .b = kg.row_range(0, span - run),
                         .c = p.col_range(run, span)});
      std::vector<T>& sums = scratch<T>(2);
      sums.resize(static_cast<std::size_t>(m));
      for (index_t r = 0; r < m; ++r) {
        const index_t pos = first + t0 + r;
        if (s.softcap > 0)
          cap_row(s, &p(r, 0), span, s.first_key(pos) - k0, pos - k0, static_cast<T*>(nullptr));
        const auto [top, sum] = exp_row(&p(r, 0), span, s.first_key(pos) - k0, pos - k0);
        sums[static_cast<std::size_t>(r)] = sum;
        if (!lse.empty()) lse[static_cast<std::size_t>(t0 + r)] = top + std::log(sum);
      }
      engine_.gemm<T>({.a = read_only(p.col_range(0, run)),
                       .b = vg.row_range(start, start + run),
                       .c = oh.row_range(t0, t1)});
      if (run < span)
        engine_.gemm<T>({.a = read_only(p.col_range(run, span)),
                         .b = vg.row_range(0, span - run),
                         .beta = T(1),
                         .c = oh.row_range(t0, t1)});
      for (index_t r = 0; r < m; ++r) {  // the softmax's normalisation, on d columns, not span
        const T inv = T(1) / sums[static_cast<std::size_t>(r)];
        T* out = &oh(t0 + r, 0);
        for (index_t e = 0; e < d; ++e) out[e] *= inv;
      }
    }
  }

  /// Soft-caps row[j] for j in [lo, hi] in place, and writes each one's slope d capped / d score
  /// to slope[j] when given (elsewhere in [0, n): 0).
  template <class T>
  static void cap_row(const ops::attention_shape& s, T* row, index_t n, index_t lo, index_t hi,
                      T* slope) {
    for (index_t j = lo; j <= hi; ++j) row[j] = s.capped(row[j]);
    if (slope == nullptr) return;
    std::fill(slope, slope + n, T(0));
    for (index_t j = lo; j <= hi; ++j) slope[j] = s.cap_slope(row[j]);
  }

  /// exp(row[j] − max) for j in [lo, hi], zero elsewhere in [0, n), in place (the softmax before
  /// its normalisation); returns the max and the sum.
  template <class T>
  static std::pair<T, T> exp_row(T* row, index_t n, index_t lo, index_t hi) {
    T top = -std::numeric_limits<T>::infinity();
    for (index_t j = lo; j <= hi; ++j) top = std::max(top, row[j]);
    return {top, exp_masked(row, n, lo, hi, top)};
  }

  /// exp(row[j] − shift) for j in [lo, hi] (the columns a query sees), zero elsewhere in [0, n),
  /// in place; returns the sum of the exps.
  template <class T>
  static T exp_masked(T* row, index_t n, index_t lo, index_t hi, T shift) {
    const T sum = detail::exp_shifted(row, lo, hi, shift);
    std::fill(row, row + lo, T(0));
    std::fill(row + hi + 1, row + n, T(0));
    return sum;
  }

  template <class T>
  static void fill_zero(matrix_view<T> m) {
    for (index_t r = 0; r < m.rows(); ++r) std::fill_n(&m(r, 0), m.cols(), T(0));
  }

  /// Scratch buffer `i` (0, 1: score blocks; 2: per-row sums; 3: soft-cap slopes) for element
  /// type T.
  template <class T>
  std::vector<T>& scratch(int i) {
    if constexpr (std::is_same_v<T, float>)
      return f32_[static_cast<std::size_t>(i)];
    else
      return f64_[static_cast<std::size_t>(i)];
  }
  template <class T>
  matrix_view<T> sized(int i, index_t rows, index_t cols) {
    std::vector<T>& b = scratch<T>(i);
    if (static_cast<index_t>(b.size()) < rows * cols)
      b.resize(static_cast<std::size_t>(rows * cols));
    return make_matrix(b.data(), rows, cols);
  }

  gemm_engine engine_;
  std::vector<float> f32_[4];
  std::vector<double> f64_[4];
};

static_assert(ops::attention_ops<attention>);

}  // namespace tpx::inline v0::host
