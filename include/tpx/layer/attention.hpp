#pragma once
/// \file
/// `causal_attention<Backend, T>`: the attention core of a decoder layer on the heads a rank
/// holds — RoPE on q and k, then causal softmax attention with grouped-query heads — which needs no
/// communication: with q, k and v split in whole heads (`shard::gqa`), every query head sits on a
/// rank that holds its KV head. The arithmetic is the backend's ops (`ops::attention_ops`:
/// RoPE, attention forward, backward and decode; RMSNorm and copies from `ops::element_ops`); the
/// layer holds the buffers, the RoPE tables and the cache bookkeeping.
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
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/kv_cache.hpp"
#include "tpx/ops/attention.hpp"

namespace tpx::inline v0::layer {

struct attention_options {
  std::string name = "self_attn";
  index_t q_heads = 0;   ///< on this rank
  index_t kv_heads = 0;  ///< on this rank: those its query heads use
  index_t head_dim = 0;
  /// Query heads per KV head in the whole model; 0: q_heads / kv_heads (the rank's query heads
  /// form whole groups).
  index_t kv_group = 0;
  /// Where the rank's first query head sits in the group of its first KV head
  /// (shard::gqa::q_offset; 0 when its query heads form whole groups).
  index_t q_offset = 0;
  double rope_theta = 10000.0;
  /// RoPE's frequency of each of the head_dim / 2 pairs; empty: rope_theta^(−2i/head_dim).
  std::vector<double> inv_freq = {};
  /// cos and sin multiplied by it (YaRN's attention factor; 1 for every other rope type).
  double rope_scale = 1.0;
  /// Sliding-window attention: a query at position p attends to the keys at positions
  /// p − window + 1 … p (transformers' `kv_idx > q_idx − sliding_window`); 0: the whole prefix.
  index_t window = 0;
  /// Soft-capped scores (Gemma 2's `attn_logit_softcapping`): softcap · tanh(score / softcap);
  /// 0: none.
  double softcap = 0.0;
};

/// RoPE's cos and sin tables [positions × pairs] in the backend's memory, for the frequencies of
/// `pairs` feature pairs; `cover(n)` makes them reach positions [0, n) (grown by doubling, so
/// decode steps recompute them rarely).
template <backend_with_ops Backend, class T>
class rope_table {
 public:
  rope_table() = default;
  /// `scale` multiplies every cos and sin (YaRN's attention factor).
  explicit rope_table(std::vector<double> inv_freq, double scale = 1.0)
      : inv_freq_(std::move(inv_freq)), scale_(scale) {}

  void cover(index_t n) {
    if (n <= positions_) return;
    const index_t positions = std::max(n, 2 * positions_);
    std::vector<T> c, s;
    ops::rope_tables<T>(inv_freq_, positions, c, s, scale_);
    Backend::upload(std::span<const T>(c), cos_);
    Backend::upload(std::span<const T>(s), sin_);
    positions_ = positions;
  }
  matrix_view<const T> cos() const { return view(cos_); }
  matrix_view<const T> sin() const { return view(sin_); }

 private:
  using buffer = typename Backend::template buffer<T>;
  matrix_view<const T> view(const buffer& b) const {
    return make_matrix<const T>(b.data(), positions_, static_cast<index_t>(inv_freq_.size()));
  }

  std::vector<double> inv_freq_;
  double scale_ = 1.0;
  buffer cos_, sin_;
  index_t positions_ = 0;
};

template <backend_with_ops Backend, class T = float>
class causal_attention {
  static_assert(ops::attention_ops_of<typename Backend::ops, T>,
                "tpx::causal_attention: the backend's ops have no RoPE and attention "
                "(ops::attention_ops: rope, attention_forward, attention_backward, "
                "attention_decode); cuda::ops has none yet");

 public:
  using value_type = T;
  using buffer = typename Backend::template buffer<T>;

  explicit causal_attention(typename Backend::communicator& comm, attention_options options)
      : ops_(comm), opt_(std::move(options)) {
    expect(opt_.head_dim >= 2 && opt_.head_dim % 2 == 0,
           "{}: head_dim must be even for RoPE, got {}", opt_.name, opt_.head_dim);
    if (opt_.kv_group == 0)
      expect(opt_.q_heads == 0
                 ? opt_.kv_heads == 0
                 : opt_.kv_heads >= 1 && opt_.q_heads % opt_.kv_heads == 0 && opt_.q_offset == 0,
             "{}: the rank holds {} query heads and {} KV heads (query offset {}); without a "
             "kv_group each KV head must serve a whole number of query heads",
             opt_.name, opt_.q_heads, opt_.kv_heads, opt_.q_offset);
    else
      expect(opt_.kv_group >= 1 && 0 <= opt_.q_offset && opt_.q_offset < opt_.kv_group &&
                 opt_.kv_heads ==
                     (opt_.q_heads == 0
                          ? 0
                          : (opt_.q_offset + opt_.q_heads + opt_.kv_group - 1) / opt_.kv_group),
             "{}: the rank holds {} query heads from position {} of a group of {} query heads per "
             "KV head, so it needs {} KV heads, not {}",
             opt_.name, opt_.q_heads, opt_.q_offset, opt_.kv_group,
             opt_.kv_group < 1 ? 0
                               : (opt_.q_offset + opt_.q_heads + opt_.kv_group - 1) / opt_.kv_group,
             opt_.kv_heads);
    if (opt_.inv_freq.empty())
      opt_.inv_freq = ops::default_inv_freq(opt_.rope_theta, opt_.head_dim);
    expect(opt_.window >= 0, "{}: the sliding window must be ≥ 0 (0: none), got {}", opt_.name,
           opt_.window);
    expect(opt_.softcap >= 0 && std::isfinite(opt_.softcap),
           "{}: the attention soft-cap must be a finite number ≥ 0 (0: none), got {}", opt_.name,
           opt_.softcap);
    expect(static_cast<index_t>(opt_.inv_freq.size()) == opt_.head_dim / 2,
           "{}: RoPE needs {} frequencies (head_dim / 2) but was given {}", opt_.name,
           opt_.head_dim / 2, opt_.inv_freq.size());
    rope_ = rope_table<Backend, T>(opt_.inv_freq, opt_.rope_scale);
  }

  /// Normalises every q head with `q` and every k head with `k` (each [head_dim]) before RoPE.
  void set_qk_norm(std::span<const T> q, std::span<const T> k, double eps) {
    expect(static_cast<index_t>(q.size()) == opt_.head_dim &&
               static_cast<index_t>(k.size()) == opt_.head_dim && eps >= 0,
           "{}: q_norm has {} and k_norm {} weights but head_dim is {} (eps {})", opt_.name,
           q.size(), k.size(), opt_.head_dim, eps);
    Backend::upload(q, q_norm_);
    Backend::upload(k, k_norm_);
    norm_eps_ = eps;
  }
  bool has_qk_norm() const noexcept { return q_norm_.size() != 0; }
  std::span<const T> q_norm() const noexcept { return {q_norm_.data(), q_norm_.size()}; }
  std::span<const T> k_norm() const noexcept { return {k_norm_.data(), k_norm_.size()}; }
  /// This rank's share of the q_norm / k_norm gradients of the last backward (empty before).
  std::span<T> q_norm_grad() noexcept { return {dq_norm_.data(), dq_norm_.size()}; }
  std::span<T> k_norm_grad() noexcept { return {dk_norm_.data(), dk_norm_.size()}; }

  index_t qkv_cols() const noexcept { return (opt_.q_heads + 2 * opt_.kv_heads) * opt_.head_dim; }
  index_t out_cols() const noexcept { return opt_.q_heads * opt_.head_dim; }
  /// Key (and value) columns per token a cache of this rank's KV heads holds.
  index_t kv_cols() const noexcept { return opt_.kv_heads * opt_.head_dim; }
  /// The sliding window (0: none).
  index_t window() const noexcept { return opt_.window; }

  void forward(matrix_view<const T> qkv, matrix_view<T> o) {
    const index_t n = qkv.rows();
    expect_shapes(qkv, o, "output");
    rope_.cover(n);
    const auto [q, k] = rotated(qkv, n, [&](matrix_view<T> m) { rope(m, 0); });
    ops_.attention_forward(shape(), read_only(q), read_only(k), v_of(qkv), o,
                           detail::scratch(lse_, opt_.q_heads * n));
    ops_.copy(read_only(o), detail::sized(o_, n, out_cols()));
    forward_rows_ = n;
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
    const index_t n = qkv.rows(), kv_cols = this->kv_cols();
    expect_shapes(qkv, o, "output");
    expect(cache.kv_cols() == kv_cols,
           "{}: the cache holds {} key columns per token but the rank's {} KV heads of dim {} "
           "need {}",
           opt_.name, cache.kv_cols(), opt_.kv_heads, opt_.head_dim, kv_cols);
    rope_.cover(expect_segments(cache, segments, n, opt_.name, "qkv"));
    // Each segment's rows turn by their own positions (its cache's length before this step).
    const auto [q, k] = rotated(qkv, n, [&](matrix_view<T> m) {
      index_t row = 0;
      for (const segment& g : segments) {
        rope(m.row_range(row, row + g.tokens), cache.length(g.seq));
        row += g.tokens;
      }
    });
    const matrix_view<const T> v = v_of(qkv);
    index_t row = 0;
    for (const segment& g : segments) {
      const index_t start = cache.reserve(g.seq, g.tokens, opt_.name), ring = cache.rows();
      const matrix_view<T> keys = cache.keys(g.seq), values = cache.values(g.seq);
      // Tokens go in chunks whose keys evict none a query of the chunk still sees: the whole run
      // when the ring has room for it, else ring − window + 1 tokens at a time (one when the
      // ring is the window).
      const index_t chunk = start + g.tokens <= ring ? std::max<index_t>(g.tokens, 1)
                                                     : std::max<index_t>(1, ring - opt_.window + 1);
      for (index_t a = 0; a < g.tokens; a += chunk) {
        const index_t b = std::min(g.tokens, a + chunk);
        for (index_t t = a; t < b;) {  // the chunk's keys and values, in at most two runs
          const index_t slot = (start + t) % ring, len = std::min(b - t, ring - slot);
          ops_.copy(read_only(k.row_range(row + t, row + t + len)),
                    keys.row_range(slot, slot + len));
          ops_.copy(v.row_range(row + t, row + t + len), values.row_range(slot, slot + len));
          t += len;
        }
        ops_.attention_decode(shape(), read_only(q.row_range(row + a, row + b)), read_only(keys),
                              read_only(values), start + a, o.row_range(row + a, row + b));
      }
      row += g.tokens;
    }
    forward_rows_ = -1;
  }

  /// dqkv (overwritten) from qkv (the forward's input) and do.
  void backward(matrix_view<const T> qkv, matrix_view<const T> dout, matrix_view<T> dqkv) {
    const index_t n = qkv.rows(), d = opt_.head_dim, qc = out_cols(), kc = kv_cols();
    expect_shapes(qkv, dout, "output gradient");
    expect(dqkv.rows() == n && dqkv.cols() == qkv.cols(),
           "{}: dqkv is [{} × {}] but qkv is [{} × {}]", opt_.name, dqkv.rows(), dqkv.cols(), n,
           qkv.cols());
    expect(forward_rows_ == n, "{}: backward for {} tokens needs a forward on as many", opt_.name,
           n);
    const matrix_view<T> dq = dqkv.col_range(0, qc), dk = dqkv.col_range(qc, qc + kc),
                         dv = dqkv.col_range(qc + kc, qc + 2 * kc);
    ops_.attention_backward(shape(), view(q_, n, qc), view(k_, n, kc), v_of(qkv), view(o_, n, qc),
                            std::span<const T>(lse_.data(), lse_.size()), dout, dq, dk, dv);
    ops_.rope(dq, d, 0, rope_.cos(), rope_.sin(), true);  // back through RoPE: the transpose
    ops_.rope(dk, d, 0, rope_.cos(), rope_.sin(), true);
    if (has_qk_norm()) {  // back through the per-head norms
      norm_backward(qkv.col_range(0, qc), q_norm_, dq, dq_norm_);
      norm_backward(qkv.col_range(qc, qc + kc), k_norm_, dk, dk_norm_);
    }
  }

 private:
  ops::attention_shape shape() const noexcept {
    return {.q_heads = opt_.q_heads,
            .kv_heads = opt_.kv_heads,
            .head_dim = opt_.head_dim,
            .scale = 1.0 / std::sqrt(static_cast<double>(opt_.head_dim)),
            .window = opt_.window,
            .softcap = opt_.softcap,
            .kv_group = opt_.kv_group,
            .q_offset = opt_.q_offset};
  }

  /// q and k of qkv, copied out (RMS-normalised per head with set_qk_norm) and turned by `turn`
  /// (RoPE at each row's position), into q_ [n, q_r·d] and k_ [n, kv_r·d].
  template <class Turn>
  std::pair<matrix_view<T>, matrix_view<T>> rotated(matrix_view<const T> qkv, index_t n,
                                                    Turn turn) {
    const index_t qc = out_cols(), kc = kv_cols();
    const matrix_view<T> q = detail::sized(q_, n, qc), k = detail::sized(k_, n, kc);
    const matrix_view<const T> q_in = qkv.col_range(0, qc), k_in = qkv.col_range(qc, qc + kc);
    if (has_qk_norm()) {  // a head is a row of a [n · heads, d] view of the contiguous copy
      const matrix_view<T> qn = detail::sized(normed_, n, qc);
      ops_.copy(q_in, qn);
      ops_.rms_norm_forward(read_only(heads(qn)), q_norm(), norm_eps_, heads(q));
      const matrix_view<T> kn = detail::sized(normed_, n, kc);
      ops_.copy(k_in, kn);
      ops_.rms_norm_forward(read_only(heads(kn)), k_norm(), norm_eps_, heads(k));
    } else {
      ops_.copy(q_in, q);
      ops_.copy(k_in, k);
    }
    turn(q);
    turn(k);
    return {q, k};
  }

  /// dx of a per-head norm (x: q or k of qkv; dy: its columns of dqkv, overwritten with dx)
  /// and the weight's gradient dw (overwritten).
  void norm_backward(matrix_view<const T> x_in, const buffer& w, matrix_view<T> dy, buffer& dw) {
    const index_t n = x_in.rows(), c = x_in.cols();
    const matrix_view<T> x = detail::sized(normed_, n, c), g = detail::sized(dnormed_, n, c),
                         dx = detail::sized(dx_, n, c);
    ops_.copy(x_in, x);
    ops_.copy(read_only(dy), g);
    ops_.rms_norm_backward(read_only(heads(x)), std::span<const T>(w.data(), w.size()), norm_eps_,
                           read_only(heads(g)), heads(dx), detail::scratch(dw, opt_.head_dim));
    ops_.copy(read_only(dx), dy);
  }

  /// A contiguous [n, heads · d] matrix as [n · heads, d]: one head per row.
  matrix_view<T> heads(matrix_view<T> m) const {
    return make_matrix(m.data(), m.rows() * (m.cols() / opt_.head_dim), opt_.head_dim);
  }

  /// RoPE on every head of `m`, row t at position first + t.
  void rope(matrix_view<T> m, index_t first) {
    ops_.rope(m, opt_.head_dim, first, rope_.cos(), rope_.sin(), false);
  }

  matrix_view<const T> v_of(matrix_view<const T> qkv) const {
    const index_t from = out_cols() + kv_cols();
    return qkv.col_range(from, from + kv_cols());
  }
  static matrix_view<const T> view(const buffer& b, index_t rows, index_t cols) {
    return make_matrix<const T>(b.data(), rows, cols);
  }

  template <class V>
  void expect_shapes(matrix_view<const T> qkv, const V& o, std::string_view what) const {
    expect(qkv.cols() == qkv_cols() && o.rows() == qkv.rows() && o.cols() == out_cols(),
           "{}: qkv is [{} × {}] and the {} [{} × {}], but the rank's {} query and {} KV heads of "
           "dim {} need [T × {}] and [T × {}]",
           opt_.name, qkv.rows(), qkv.cols(), what, o.rows(), o.cols(), opt_.q_heads, opt_.kv_heads,
           opt_.head_dim, qkv_cols(), out_cols());
  }

  typename Backend::ops ops_;
  attention_options opt_;
  /// Rotated q and k, the output and the log-sum-exp of the last forward (kept for backward).
  buffer q_, k_, o_, lse_;
  rope_table<Backend, T> rope_;
  /// Rows of the last forward (−1 after a cached one: nothing kept for backward).
  index_t forward_rows_ = -1;
  buffer q_norm_, k_norm_, dq_norm_, dk_norm_, normed_, dnormed_, dx_;
  double norm_eps_ = 0;
};

}  // namespace tpx::inline v0::layer
