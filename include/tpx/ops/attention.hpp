#pragma once
/// \file
/// Attention and RoPE as ops: what a backend's `Backend::ops` computes for `causal_attention`
/// (`ops::attention_ops_of`), the shape a call covers (`attention_shape`), RoPE's frequency and
/// angle tables, and the reference implementation (`ops::reference`): plain loops, one query row
/// at a time, that the backends' own implementations are tested against.
///
/// Layout: a call covers the heads one rank holds, each a run of head_dim columns.
///
///   q [n, q_heads · d]     k, v [n, kv_heads · d]     o [n, q_heads · d]
///   lse [q_heads · n]       log Σ_j exp(score), per head and query row (kept for backward)
///
/// Query head h reads KV head (q_offset + h) / group() (grouped-query attention: h / (q_heads /
/// kv_heads) when the call's heads form whole groups). Query row i of
/// a causal call is position i and sees the keys at positions first_key(i) … i (all of the prefix,
/// or the last `window` positions: transformers' `kv_idx > q_idx − sliding_window`). A decode call
/// reads keys and values from a cache ring: position p in row p % ring.
///
/// Soft-capping (Gemma 2's attn_logit_softcapping): with `softcap` c > 0 a score s becomes
/// c · tanh(s / c) before the softmax, and its gradient carries the factor 1 − (capped / c)².
///
/// RoPE pairs feature i with i + d/2 of each head (Hugging Face's rotate_half) and turns the pair
/// by position · inv_freq[i]; the cos and sin tables [positions × d/2] are computed once, on the
/// host, and uploaded to the backend.

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::ops {

/// The heads an attention call covers and how it masks.
struct attention_shape {
  index_t q_heads = 0;
  index_t kv_heads = 0;
  index_t head_dim = 0;
  /// Scores are scale · q · k (usually 1 / sqrt(head_dim)).
  double scale = 1.0;
  /// Sliding window: a query at position p sees positions p − window + 1 … p; 0: the whole prefix.
  index_t window = 0;
  /// Scores soft-capped to (−softcap, softcap) by softcap · tanh(score / softcap); 0: none.
  double softcap = 0.0;

  /// Query heads per KV head in the whole model; 0: q_heads / kv_heads (the call's heads form
  /// whole groups).
  index_t kv_group = 0;
  /// Where the call's first query head sits in the group of its first KV head (a rank whose query
  /// heads start mid-group, shard::gqa::q_offset); 0 when they form whole groups.
  index_t q_offset = 0;

  /// Query heads per KV head.
  constexpr index_t group() const noexcept {
    return kv_group > 0 ? kv_group : kv_heads == 0 ? 0 : q_heads / kv_heads;
  }
  /// The KV head query head h reads.
  constexpr index_t kv_of(index_t h) const noexcept { return (q_offset + h) / group(); }
  /// The first key position a query at position `pos` sees.
  constexpr index_t first_key(index_t pos) const noexcept {
    return window > 0 ? std::max<index_t>(0, pos - window + 1) : 0;
  }
  /// Columns [begin, end) of query head h in q (and o), of KV head g in k and v.
  constexpr index_t q_col(index_t h) const noexcept { return h * head_dim; }
  constexpr index_t kv_col(index_t g) const noexcept { return g * head_dim; }
  /// A score after soft-capping (itself without a cap).
  template <class T>
  T capped(T score) const {
    return softcap > 0 ? static_cast<T>(softcap) * std::tanh(score / static_cast<T>(softcap))
                       : score;
  }
  /// d capped / d score, from the capped score.
  template <class T>
  T cap_slope(T capped_score) const {
    if (softcap <= 0) return T(1);
    const T t = capped_score / static_cast<T>(softcap);
    return T(1) - t * t;
  }
};

/// RoPE's default frequencies: base^(−2i/d) for i < d / 2.
inline std::vector<double> default_inv_freq(double base, index_t head_dim) {
  std::vector<double> f;
  for (index_t i = 0; 2 * i < head_dim; ++i)
    f.push_back(std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)));
  return f;
}

/// cos and sin of position · inv_freq[i] for positions [0, positions), row-major
/// [positions × inv_freq.size()], each times `scale` (YaRN's attention factor; 1 otherwise),
/// computed in double and rounded to T.
template <class T>
void rope_tables(std::span<const double> inv_freq, index_t positions, std::vector<T>& cos,
                 std::vector<T>& sin, double scale = 1.0) {
  const auto half = static_cast<index_t>(inv_freq.size());
  cos.resize(static_cast<std::size_t>(positions * half));
  sin.resize(cos.size());
  for (index_t t = 0; t < positions; ++t)
    for (index_t i = 0; i < half; ++i) {
      const double theta = static_cast<double>(t) * inv_freq[static_cast<std::size_t>(i)];
      cos[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::cos(theta) * scale);
      sin[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::sin(theta) * scale);
    }
}

/// Ops `O` compute RoPE and attention on element type `T`:
///
/// | member                                                  | does                              |
/// |---------------------------------------------------------|-----------------------------------|
/// | rope(x, d, first, cos, sin, inverse)                    | turns every head of row t of x by |
/// |                                                         | position first + t (inverse: back)|
/// | attention_forward(shape, q, k, v, o, lse)               | causal attention at positions 0…n |
/// | attention_backward(shape, q, k, v, o, lse, do, dq, dk, dv) | its gradients (overwritten)    |
/// | attention_decode(shape, q, keys, values, first, o)      | rows at positions first… over a   |
/// |                                                         | cache ring that holds their keys  |
template <class O, class T>
concept attention_ops_of = requires(O& o, const attention_shape& s, matrix_view<const T> in,
                                    matrix_view<T> out, std::span<const T> stats,
                                    std::span<T> result, index_t n, bool inverse) {
  o.rope(out, n, n, in, in, inverse);
  o.attention_forward(s, in, in, in, out, result);
  o.attention_backward(s, in, in, in, in, stats, in, out, out, out);
  o.attention_decode(s, in, in, in, n, out);
};

/// Attention ops for the two compute types.
template <class O>
concept attention_ops = attention_ops_of<O, float> && attention_ops_of<O, double>;

/// The reference implementation: one query row at a time, scores, softmax and the weighted sum as
/// loops (accumulating in T).
namespace reference {

namespace detail {
inline std::size_t at(index_t i) {
  return static_cast<std::size_t>(i);
}
}  // namespace detail

/// Turns each head [c, c + d) of row t of x by the angle of position first + t (by its negative
/// when `inverse`): (a, b) ↦ (a cos − b sin, b cos + a sin) for the pair (i, i + d/2).
template <class T>
void rope(matrix_view<T> x, index_t head_dim, index_t first, matrix_view<const T> cos,
          matrix_view<const T> sin, bool inverse) {
  const index_t half = head_dim / 2;
  for (index_t t = 0; t < x.rows(); ++t)
    for (index_t c0 = 0; c0 + head_dim <= x.cols(); c0 += head_dim)
      for (index_t i = 0; i < half; ++i) {
        const T c = cos(first + t, i), s = inverse ? -sin(first + t, i) : sin(first + t, i);
        const T a = x(t, c0 + i), b = x(t, c0 + half + i);
        x(t, c0 + i) = a * c - b * s;
        x(t, c0 + half + i) = b * c + a * s;
      }
}

/// One query row q over the keys at positions [from, to] (position j in row j % ring of keys and
/// values): out = Σ_j softmax(scale · q · k_j) v_j; returns log Σ_j exp(scale · q · k_j).
template <class T>
T attend_row(const attention_shape& s, const T* q, matrix_view<const T> keys,
             matrix_view<const T> values, index_t from, index_t to, index_t ring, T* out) {
  const index_t d = s.head_dim;
  std::vector<T> p(detail::at(to - from + 1));
  T top = -std::numeric_limits<T>::infinity();
  for (index_t j = from; j <= to; ++j) {
    T dot = 0;
    for (index_t e = 0; e < d; ++e) dot += q[e] * keys(j % ring, e);
    p[detail::at(j - from)] = s.capped(dot * static_cast<T>(s.scale));
    top = std::max(top, p[detail::at(j - from)]);
  }
  T sum = 0;
  for (T& x : p) sum += x = std::exp(x - top);
  for (index_t e = 0; e < d; ++e) out[e] = T(0);
  for (index_t j = from; j <= to; ++j)
    for (index_t e = 0; e < d; ++e) out[e] += p[detail::at(j - from)] / sum * values(j % ring, e);
  return top + std::log(sum);
}

/// Causal attention of n rows at positions 0 … n − 1: o and lse[h · n + i].
template <class T>
void attention_forward(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> k,
                       matrix_view<const T> v, matrix_view<T> o, std::span<T> lse) {
  const index_t n = q.rows(), d = s.head_dim;
  for (index_t h = 0; h < s.q_heads; ++h) {
    const index_t g = s.kv_of(h);
    for (index_t i = 0; i < n; ++i)
      lse[detail::at(h * n + i)] = attend_row(
          s, &q(i, s.q_col(h)), k.col_range(s.kv_col(g), s.kv_col(g) + d),
          v.col_range(s.kv_col(g), s.kv_col(g) + d), s.first_key(i), i, n, &o(i, s.q_col(h)));
  }
}

/// dq, dk and dv (overwritten) of `attention_forward` from its inputs, o, lse and do:
/// S = cap(scale · q·k), P = exp(S − lse), dv += Pᵀ do, dS = P ⊙ (do·vᵀ − rowsum(do ⊙ o)) ⊙ cap',
/// dq = scale · dS k, dk += scale · dSᵀ q.
template <class T>
void attention_backward(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> k,
                        matrix_view<const T> v, matrix_view<const T> o, std::span<const T> lse,
                        matrix_view<const T> dout, matrix_view<T> dq, matrix_view<T> dk,
                        matrix_view<T> dv) {
  const index_t n = q.rows(), d = s.head_dim;
  for (const matrix_view<T> m : {dq, dk, dv})
    for (index_t r = 0; r < m.rows(); ++r)
      for (index_t c = 0; c < m.cols(); ++c) m(r, c) = T(0);
  const T scale = static_cast<T>(s.scale);
  for (index_t h = 0; h < s.q_heads; ++h) {
    const index_t g = s.kv_of(h), qc = s.q_col(h), kc = s.kv_col(g);
    for (index_t i = 0; i < n; ++i) {
      T delta = 0;  // Σ_e do ⊙ o
      for (index_t e = 0; e < d; ++e) delta += dout(i, qc + e) * o(i, qc + e);
      for (index_t j = s.first_key(i); j <= i; ++j) {
        T score = 0, dp = 0;
        for (index_t e = 0; e < d; ++e) {
          score += q(i, qc + e) * k(j, kc + e);
          dp += dout(i, qc + e) * v(j, kc + e);
        }
        const T capped = s.capped(score * scale);
        const T p = std::exp(capped - lse[detail::at(h * n + i)]);
        const T ds = p * (dp - delta) * s.cap_slope(capped) * scale;
        for (index_t e = 0; e < d; ++e) {
          dv(j, kc + e) += p * dout(i, qc + e);
          dq(i, qc + e) += ds * k(j, kc + e);
          dk(j, kc + e) += ds * q(i, qc + e);
        }
      }
    }
  }
}

/// Rows of q at positions first … first + n − 1 of one sequence, over the keys and values a cache
/// ring holds (position p in row p % ring; every position a row sees is there): o.
template <class T>
void attention_decode(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> keys,
                      matrix_view<const T> values, index_t first, matrix_view<T> o) {
  const index_t d = s.head_dim;
  for (index_t h = 0; h < s.q_heads; ++h) {
    const index_t g = s.kv_of(h);
    for (index_t t = 0; t < q.rows(); ++t) {
      const index_t pos = first + t;
      attend_row(s, &q(t, s.q_col(h)), keys.col_range(s.kv_col(g), s.kv_col(g) + d),
                 values.col_range(s.kv_col(g), s.kv_col(g) + d), s.first_key(pos), pos, keys.rows(),
                 &o(t, s.q_col(h)));
    }
  }
}

/// The reference as an ops type (what the law tests hold the backends to).
struct attention {
  template <class T>
  void rope(matrix_view<T> x, index_t d, index_t first, matrix_view<const T> cos,
            matrix_view<const T> sin, bool inverse) const {
    reference::rope(x, d, first, cos, sin, inverse);
  }
  template <class T>
  void attention_forward(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> k,
                         matrix_view<const T> v, matrix_view<T> o, std::span<T> lse) const {
    reference::attention_forward(s, q, k, v, o, lse);
  }
  template <class T>
  void attention_backward(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> k,
                          matrix_view<const T> v, matrix_view<const T> o, std::span<const T> lse,
                          matrix_view<const T> dout, matrix_view<T> dq, matrix_view<T> dk,
                          matrix_view<T> dv) const {
    reference::attention_backward(s, q, k, v, o, lse, dout, dq, dk, dv);
  }
  template <class T>
  void attention_decode(const attention_shape& s, matrix_view<const T> q, matrix_view<const T> keys,
                        matrix_view<const T> values, index_t first, matrix_view<T> o) const {
    reference::attention_decode(s, q, keys, values, first, o);
  }
};

static_assert(attention_ops<attention>);

}  // namespace reference

}  // namespace tpx::inline v0::ops
