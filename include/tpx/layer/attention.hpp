#pragma once
/// \file
/// `causal_attention<Backend, T>`: the attention core of a decoder layer on the heads a rank
/// holds — RoPE on q and k, then causal softmax attention with grouped-query heads — a plain
/// reference implementation (no flash tiling) that needs no communication: with q, k and v split
/// in whole heads (`shard::gqa`), every query head sits on a rank that holds its KV head.
///
///   qkv [T, (q_r + 2·kv_r)·d]   the rank's q heads, then its k heads, then its v heads
///                              (the column order of a colwise layer over `gqa::qkv_partition`)
///   o   [T, q_r·d]             the rank's query heads, the rowwise o_proj's input shard
///
/// With `set_qk_norm` (Qwen3), every q and k head is RMS-normalised over its head_dim with a
/// weight [head_dim] shared by the heads, before RoPE; the weights' gradients are this rank's
/// heads' share (the block all-reduces them).
///
/// `forward` and `backward` take one sequence at positions 0…T−1; `forward_cached` (inference)
/// takes the next tokens of a sequence whose earlier keys and values a `kv_cache` holds. RoPE pairs
/// feature i with i + d/2 of each head (Hugging Face's rotate_half) and turns the pair by position
/// · inv_freq[i]: by default inv_freq[i] = base^(−2i/d); a model's rope type (llama3, linear, …)
/// supplies its own table.

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/kv_cache.hpp"

namespace tpx::inline v0::layer {

struct attention_options {
  std::string name = "self_attn";
  index_t q_heads = 0;   ///< on this rank
  index_t kv_heads = 0;  ///< on this rank (each serves q_heads / kv_heads query heads)
  index_t head_dim = 0;
  double rope_theta = 10000.0;
  /// RoPE's frequency of each of the head_dim / 2 pairs; empty: rope_theta^(−2i/head_dim).
  std::vector<double> inv_freq = {};
  /// Sliding-window attention: a query at position p attends to the keys at positions
  /// p − window + 1 … p (transformers' `kv_idx > q_idx − sliding_window`); 0: the whole prefix.
  index_t window = 0;
};

/// RoPE's default frequencies: base^(−2i/d) for i < d / 2.
inline std::vector<double> default_inv_freq(double base, index_t head_dim) {
  std::vector<double> f;
  for (index_t i = 0; 2 * i < head_dim; ++i)
    f.push_back(std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)));
  return f;
}

template <backend Backend, class T = float>
class causal_attention {
  static_assert(
      host_memory<Backend>,
      "tpx::causal_attention: runs its element-wise work in host loops, so it needs a backend "
      "whose buffers the host reads (host_memory); on the cuda backend, linear, rms_norm, "
      "vocab_embedding, vocab_cross_entropy and experts run (their element-wise work "
      "is Backend::ops); this layer's is not an op yet");

 public:
  using value_type = T;

  explicit causal_attention(attention_options options) : opt_(std::move(options)) {
    expect(opt_.head_dim >= 2 && opt_.head_dim % 2 == 0,
           "{}: head_dim must be even for RoPE, got {}", opt_.name, opt_.head_dim);
    expect(opt_.q_heads == 0 ? opt_.kv_heads == 0
                             : opt_.kv_heads >= 1 && opt_.q_heads % opt_.kv_heads == 0,
           "{}: the rank holds {} query heads and {} KV heads; each KV head must serve a whole "
           "number of query heads",
           opt_.name, opt_.q_heads, opt_.kv_heads);
    if (opt_.inv_freq.empty()) opt_.inv_freq = default_inv_freq(opt_.rope_theta, opt_.head_dim);
    expect(opt_.window >= 0, "{}: the sliding window must be ≥ 0 (0: none), got {}", opt_.name,
           opt_.window);
    expect(static_cast<index_t>(opt_.inv_freq.size()) == opt_.head_dim / 2,
           "{}: RoPE needs {} frequencies (head_dim / 2) but was given {}", opt_.name,
           opt_.head_dim / 2, opt_.inv_freq.size());
  }

  /// Normalises every q head with `q` and every k head with `k` (each [head_dim]) before RoPE.
  void set_qk_norm(std::span<const T> q, std::span<const T> k, double eps) {
    expect(static_cast<index_t>(q.size()) == opt_.head_dim &&
               static_cast<index_t>(k.size()) == opt_.head_dim && eps >= 0,
           "{}: q_norm has {} and k_norm {} weights but head_dim is {} (eps {})", opt_.name,
           q.size(), k.size(), opt_.head_dim, eps);
    q_norm_.assign(q.begin(), q.end());
    k_norm_.assign(k.begin(), k.end());
    norm_eps_ = eps;
  }
  bool has_qk_norm() const noexcept { return !q_norm_.empty(); }
  std::span<const T> q_norm() const noexcept { return q_norm_; }
  std::span<const T> k_norm() const noexcept { return k_norm_; }
  /// This rank's share of the q_norm / k_norm gradients of the last backward (empty before).
  std::span<T> q_norm_grad() noexcept { return dq_norm_; }
  std::span<T> k_norm_grad() noexcept { return dk_norm_; }

  index_t qkv_cols() const noexcept { return (opt_.q_heads + 2 * opt_.kv_heads) * opt_.head_dim; }
  index_t out_cols() const noexcept { return opt_.q_heads * opt_.head_dim; }
  /// Key (and value) columns per token a cache of this rank's KV heads holds.
  index_t kv_cols() const noexcept { return opt_.kv_heads * opt_.head_dim; }
  /// The sliding window (0: none).
  index_t window() const noexcept { return opt_.window; }

  void forward(matrix_view<const T> qkv, matrix_view<T> o) {
    const index_t n = qkv.rows(), d = opt_.head_dim;
    expect_shapes(qkv, o, "output");
    // Rotated q and k, kept for backward.
    const index_t qk = (opt_.q_heads + opt_.kv_heads) * d;
    rotated_.resize(static_cast<std::size_t>(n * qk));
    const matrix_view<T> r = make_matrix(rotated_.data(), n, qk);
    angles(n);
    if (has_qk_norm()) rstd_.resize(static_cast<std::size_t>(n * (opt_.q_heads + opt_.kv_heads)));
    for (index_t t = 0; t < n; ++t) {
      for (index_t c = 0; c < qk; ++c) r(t, c) = qkv(t, c);
      if (has_qk_norm()) normalise_heads(r, t);
      for (index_t h = 0; h < opt_.q_heads + opt_.kv_heads; ++h) rope(r, t, h * d, false);
    }
    probs_.resize(static_cast<std::size_t>(opt_.q_heads * n * n));
    for (index_t h = 0; h < opt_.q_heads; ++h) {
      const index_t kv = h / group(), q0 = h * d, k0 = (opt_.q_heads + kv) * d,
                    v0 = (opt_.q_heads + opt_.kv_heads + kv) * d;
      for (index_t i = 0; i < n; ++i)
        attend(&r(i, q0), r.col_range(k0, k0 + d), qkv.col_range(v0, v0 + d), first_key(i), i + 1,
               n, probs_.data() + (h * n + i) * n, &o(i, q0));
    }
  }

  /// Forward for inference over `cache`: qkv [n, qkv_cols()] holds the next tokens of one or
  /// more sequences, packed (`segments`: each sequence's slot in the cache and its token count,
  /// in row order; the counts add up to n). Each sequence's tokens sit at its positions
  /// cache.length(seq) … + count − 1; their rotated keys and their values are appended to its
  /// cache, and each query attends over its own sequence's cached prefix up to its position —
  /// never another sequence's. Computes what `forward` on each whole prefix gives for these rows,
  /// and keeps nothing for backward.
  void forward_cached(matrix_view<const T> qkv, matrix_view<T> o, kv_cache<T>& cache,
                      std::span<const segment> segments) {
    const index_t n = qkv.rows(), d = opt_.head_dim, kv_cols = this->kv_cols();
    expect_shapes(qkv, o, "output");
    expect(cache.kv_cols() == kv_cols,
           "{}: the cache holds {} key columns per token but the rank's {} KV heads of dim {} "
           "need {}",
           opt_.name, cache.kv_cols(), opt_.kv_heads, d, kv_cols);
    index_t total = 0, longest = 0;
    for (const segment& g : segments) {
      expect(g.tokens >= 0, "{}: sequence {} has {} tokens", opt_.name, g.seq, g.tokens);
      expect(std::count_if(segments.begin(), segments.end(),
                           [&](const segment& other) { return other.seq == g.seq; }) == 1,
             "{}: sequence {} appears twice in one step; give each sequence one run of tokens",
             opt_.name, g.seq);
      total += g.tokens;
      longest = std::max(longest, cache.length(g.seq) + g.tokens);
    }
    expect(total == n, "{}: the segments hold {} tokens but qkv has {} rows", opt_.name, total, n);
    angles(longest);
    const index_t qk = (opt_.q_heads + opt_.kv_heads) * d;
    rotated_.resize(static_cast<std::size_t>(n * qk));
    const matrix_view<T> r = make_matrix(rotated_.data(), n, qk);
    if (has_qk_norm()) rstd_.resize(static_cast<std::size_t>(n * (opt_.q_heads + opt_.kv_heads)));
    probs_.resize(static_cast<std::size_t>(longest));
    index_t row = 0;
    for (const segment& g : segments) {
      const index_t start = cache.reserve(g.seq, g.tokens, opt_.name), ring = cache.rows();
      const matrix_view<T> keys = cache.keys(g.seq), values = cache.values(g.seq);
      // Token by token: its key and value into the cache (evicting the one a window no longer
      // reaches), then its queries over the window it sees.
      for (index_t t = row; t < row + g.tokens; ++t) {
        const index_t pos = start + t - row, slot = pos % ring;
        for (index_t c = 0; c < qk; ++c) r(t, c) = qkv(t, c);
        if (has_qk_norm()) normalise_heads(r, t);
        for (index_t h = 0; h < opt_.q_heads + opt_.kv_heads; ++h) rope(r, t, h * d, false, pos);
        for (index_t c = 0; c < kv_cols; ++c) {
          keys(slot, c) = r(t, opt_.q_heads * d + c);
          values(slot, c) = qkv(t, qk + c);
        }
        for (index_t h = 0; h < opt_.q_heads; ++h) {
          const index_t kv = h / group(), q0 = h * d;
          attend(&r(t, q0), keys.col_range(kv * d, (kv + 1) * d),
                 values.col_range(kv * d, (kv + 1) * d), first_key(pos), pos + 1, ring,
                 probs_.data(), &o(t, q0));
        }
      }
      row += g.tokens;
    }
  }

  /// dqkv (overwritten) from qkv (the forward's input) and do.
  void backward(matrix_view<const T> qkv, matrix_view<const T> dout, matrix_view<T> dqkv) {
    const index_t n = qkv.rows(), d = opt_.head_dim;
    expect_shapes(qkv, dout, "output gradient");
    expect(dqkv.rows() == n && dqkv.cols() == qkv.cols(),
           "{}: dqkv is [{} × {}] but qkv is [{} × {}]", opt_.name, dqkv.rows(), dqkv.cols(), n,
           qkv.cols());
    const index_t qk = (opt_.q_heads + opt_.kv_heads) * d;
    expect(static_cast<index_t>(probs_.size()) == opt_.q_heads * n * n,
           "{}: backward for {} tokens needs a forward on as many", opt_.name, n);
    const matrix_view<const T> r = make_matrix<const T>(rotated_.data(), n, qk);
    for (index_t t = 0; t < n; ++t)
      for (index_t c = 0; c < dqkv.cols(); ++c) dqkv(t, c) = T(0);
    std::vector<T> dp(static_cast<std::size_t>(n));
    for (index_t h = 0; h < opt_.q_heads; ++h) {
      const index_t kv = h / group(), q0 = h * d, k0 = (opt_.q_heads + kv) * d,
                    v0 = (opt_.q_heads + opt_.kv_heads + kv) * d;
      const matrix_view<const T> p = make_matrix<const T>(probs_.data() + h * n * n, n, n);
      for (index_t i = 0; i < n; ++i) {
        T row = 0;  // Σ_j P dP
        for (index_t j = first_key(i); j <= i; ++j) {
          T g = 0;
          for (index_t e = 0; e < d; ++e) {
            g += dout(i, q0 + e) * qkv(j, v0 + e);
            dqkv(j, v0 + e) += p(i, j) * dout(i, q0 + e);
          }
          dp[static_cast<std::size_t>(j)] = g;
          row += p(i, j) * g;
        }
        for (index_t j = first_key(i); j <= i; ++j) {
          const T ds = p(i, j) * (dp[static_cast<std::size_t>(j)] - row) * scale();
          for (index_t e = 0; e < d; ++e) {
            dqkv(i, q0 + e) += ds * r(j, k0 + e);  // d(rotated q)
            dqkv(j, k0 + e) += ds * r(i, q0 + e);  // d(rotated k)
          }
        }
      }
    }
    for (index_t t = 0; t < n; ++t)  // back through RoPE: the transpose rotation
      for (index_t h = 0; h < opt_.q_heads + opt_.kv_heads; ++h) rope(dqkv, t, h * d, true);
    if (has_qk_norm()) {  // back through the per-head norms
      dq_norm_.assign(q_norm_.size(), T(0));
      dk_norm_.assign(k_norm_.size(), T(0));
      for (index_t t = 0; t < n; ++t) normalise_heads_backward(qkv, dqkv, t);
    }
  }

 private:
  index_t group() const noexcept { return opt_.q_heads / opt_.kv_heads; }
  T scale() const { return T(1) / std::sqrt(static_cast<T>(opt_.head_dim)); }

  /// RMS-normalises the q and k heads of row t of `r` in place (y = x · rstd · w), keeping rstd.
  void normalise_heads(matrix_view<T> r, index_t t) {
    const index_t d = opt_.head_dim, heads = opt_.q_heads + opt_.kv_heads;
    for (index_t h = 0; h < heads; ++h) {
      const std::vector<T>& w = h < opt_.q_heads ? q_norm_ : k_norm_;
      double ss = 0;
      for (index_t e = 0; e < d; ++e) ss += static_cast<double>(r(t, h * d + e)) * r(t, h * d + e);
      const T rstd = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(d) + norm_eps_));
      rstd_[static_cast<std::size_t>(t * heads + h)] = rstd;
      for (index_t e = 0; e < d; ++e)
        r(t, h * d + e) = r(t, h * d + e) * rstd * w[static_cast<std::size_t>(e)];
    }
  }

  /// dqkv's q and k columns of row t hold d(normalised head); turns them into d(head) and adds
  /// to the weights' gradients: dw += dy · x̂, dx = rstd · (dy·w − x̂ · mean(dy·w · x̂)).
  void normalise_heads_backward(matrix_view<const T> qkv, matrix_view<T> dqkv, index_t t) {
    const index_t d = opt_.head_dim, heads = opt_.q_heads + opt_.kv_heads;
    for (index_t h = 0; h < heads; ++h) {
      const bool q = h < opt_.q_heads;
      const std::vector<T>& w = q ? q_norm_ : k_norm_;
      std::vector<T>& dw = q ? dq_norm_ : dk_norm_;
      const T rstd = rstd_[static_cast<std::size_t>(t * heads + h)];
      double dot = 0;
      for (index_t e = 0; e < d; ++e) {
        const T xh = qkv(t, h * d + e) * rstd, dy = dqkv(t, h * d + e);
        dw[static_cast<std::size_t>(e)] += dy * xh;
        dot += static_cast<double>(dy * w[static_cast<std::size_t>(e)]) * xh;
      }
      const T mean = static_cast<T>(dot / static_cast<double>(d));
      for (index_t e = 0; e < d; ++e) {
        const T xh = qkv(t, h * d + e) * rstd;
        dqkv(t, h * d + e) =
            rstd * (dqkv(t, h * d + e) * w[static_cast<std::size_t>(e)] - xh * mean);
      }
    }
  }

  /// The first key position a query at position `pos` attends to.
  index_t first_key(index_t pos) const noexcept {
    return opt_.window > 0 ? std::max<index_t>(0, pos - opt_.window + 1) : 0;
  }

  /// One query row q [d] over positions [from, count) of keys and values [·, d] (position j in
  /// row j % ring): the softmax weights into p[from … count), the weighted values into out [d].
  /// forward and forward_cached share it, so a cached step computes exactly what the whole prefix
  /// does.
  void attend(const T* q, matrix_view<const T> keys, matrix_view<const T> values, index_t from,
              index_t count, index_t ring, T* p, T* out) const {
    const index_t d = opt_.head_dim;
    T top = -INFINITY;
    for (index_t j = from; j < count; ++j) {
      const index_t at = j % ring;
      T s = 0;
      for (index_t e = 0; e < d; ++e) s += q[e] * keys(at, e);
      p[j] = s * scale();
      top = std::max(top, p[j]);
    }
    T sum = 0;
    for (index_t j = from; j < count; ++j) sum += p[j] = std::exp(p[j] - top);
    for (index_t e = 0; e < d; ++e) out[e] = T(0);
    for (index_t j = from; j < count; ++j) {
      p[j] /= sum;
      const index_t at = j % ring;
      for (index_t e = 0; e < d; ++e) out[e] += p[j] * values(at, e);
    }
  }

  /// cos and sin of position · inv_freq[i] for positions 0…n−1 (at least), computed once per
  /// length.
  void angles(index_t n) {
    const index_t half = opt_.head_dim / 2;
    if (static_cast<index_t>(cos_.size()) >= n * half) return;
    cos_.resize(static_cast<std::size_t>(n * half));
    sin_.resize(cos_.size());
    for (index_t t = 0; t < n; ++t)
      for (index_t i = 0; i < half; ++i) {
        const double theta = static_cast<double>(t) * opt_.inv_freq[static_cast<std::size_t>(i)];
        cos_[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::cos(theta));
        sin_[static_cast<std::size_t>(t * half + i)] = static_cast<T>(std::sin(theta));
      }
  }

  /// Rotates the head at columns [c0, c0 + d) of row t in place by the angles of position
  /// `pos` (−1: t) (inverse: by −θ).
  void rope(matrix_view<T> m, index_t t, index_t c0, bool inverse, index_t pos = -1) const {
    const index_t half = opt_.head_dim / 2, at = pos < 0 ? t : pos;
    for (index_t i = 0; i < half; ++i) {
      const T c = cos_[static_cast<std::size_t>(at * half + i)],
              s = inverse ? -sin_[static_cast<std::size_t>(at * half + i)]
                          : sin_[static_cast<std::size_t>(at * half + i)];
      const T a = m(t, c0 + i), b = m(t, c0 + half + i);
      m(t, c0 + i) = a * c - b * s;
      m(t, c0 + half + i) = b * c + a * s;
    }
  }

  template <class V>
  void expect_shapes(matrix_view<const T> qkv, const V& o, std::string_view what) const {
    expect(qkv.cols() == qkv_cols() && o.rows() == qkv.rows() && o.cols() == out_cols(),
           "{}: qkv is [{} × {}] and the {} [{} × {}], but the rank's {} query and {} KV heads of "
           "dim {} need [T × {}] and [T × {}]",
           opt_.name, qkv.rows(), qkv.cols(), what, o.rows(), o.cols(), opt_.q_heads, opt_.kv_heads,
           opt_.head_dim, qkv_cols(), out_cols());
  }

  attention_options opt_;
  std::vector<T> rotated_, probs_, cos_, sin_;
  std::vector<T> q_norm_, k_norm_, dq_norm_, dk_norm_, rstd_;
  double norm_eps_ = 0;
};

}  // namespace tpx::inline v0::layer
