#pragma once
/// \file
/// `mla_attention<Backend, T, Mode>`: DeepSeek-V2/V3's multi-head latent attention (MLA), tensor
/// parallel in whole heads, with forward and backward — the layout transformers 5.25's plans
/// give it (`q_proj` / `q_b_proj` colwise, `kv_a_proj_with_mqa: mla_kv_a_proj`, `kv_b_proj`
/// colwise, `o_proj` rowwise):
///
///   q:  x ─ q_a_proj (replicated) ─ q_a_layernorm ─ q_b_proj (colwise, heads of qk_head_dim)
///       (or a full-rank q_proj, colwise, when q_lora_rank is 0) → [q_nope | q_rope] per head
///   kv: x ─ kv_a_proj_with_mqa (replicated) → [kv_lora part | rope part]
///       kv_lora part ─ kv_a_layernorm ─ kv_b_proj (colwise, heads of nope + v) → [k_nope | v]
///       rope part: one k_rope shared by every head
///   RoPE on q_rope and k_rope ─ causal attention per head on [q_nope | q_rope] · [k_nope |
///   k_rope], values v ─ o_proj (rowwise over the heads' v) ─ all-reduce ─ y
///
/// Each rank holds its heads' rows of q_b_proj / q_proj and kv_b_proj and columns of o_proj; the
/// latent projections and their norms are replicated. Forward moves one all-reduce ([T, hidden],
/// o_proj). Backward: q_b_proj's and kv_b_proj's dX all-reduces ([T, q_lora], [T, kv_lora]: the
/// heads' shares of the latents' gradients) and one of the k_rope gradient ([T, qk_rope]: each
/// rank's heads used the shared key; transformers' `mla_kv_a_proj`); the replicated projections
/// and norms then compute the same gradients on every rank, and dx is replicated.
///
/// RoPE turns the rope part only. With `rope_interleave` (DeepSeek's checkpoints) its features
/// come in pairs (x0, x1), (x2, x3), …: they are taken evens first, odds second and turned as
/// rotate_half pairs — transformers' `apply_rotary_pos_emb_interleave`. Scores are scaled by
/// `scale_factor` · qk_head_dim^−½ (a YaRN rope's mscale², which the caller gives). When v_head_dim
/// ≠ qk_head_dim the heads are padded with zeros to the larger, which changes no score and no
/// output. The latents' norms use `norm_eps` (transformers builds them with 1e-6 whatever the
/// config's rms_norm_eps).
///
/// Inference caches the compressed latent, not expanded keys and values (`make_cache`,
/// `forward_cached`): kv_lora_rank + qk_rope_head_dim numbers a token — the normed latent and the
/// rotated k_rope — the same on every rank, from which each step expands its heads' keys and
/// values over the cached prefix through kv_b_proj. (A per-head cache would hold
/// n_heads / tp · (qk_head_dim + v_head_dim) a token on each rank: DeepSeek-V3's 128 heads,
/// 192 + 128, against 512 + 64 — 71× less at tp 1, still 8.9× at tp 8.)
///
/// In either block mode (`Mode`). Tensor mode: x and y replicated [T, hidden], as above. Sequence
/// mode: x and y are the rank's balanced block of the T tokens. The replicated projections and
/// norms run on the rank's own tokens; q_b_proj (q_proj) and kv_b_proj are colwise_sp, gathering
/// their latent inputs ([T, q_lora] or [T, hidden], [T, kv_lora]), and the rotated k_rope is
/// gathered ([T, rope]); o_proj is rowwise_sp, reduce-scattering y. Backward mirrors it: dy
/// gathered ([T, hidden]), the latents' gradients reduce-scattered instead of all-reduced, and the
/// replicated parameters' gradients (their rank's tokens' share) all-reduced, as the SP norms' are.
/// Each all-reduce of tensor mode becomes an all-gather and a reduce-scatter of the same tensor
/// (the same bus bytes), the latents are gathered rather than x ([T, hidden]), and the replicated
/// projections are computed once per token instead of on every rank.

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/attention.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/block.hpp"
#include "tpx/layer/kv_cache.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/layer/norm.hpp"
#include "tpx/layer/tokens.hpp"
#include "tpx/ops/attention.hpp"
#include "tpx/shard/partition.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"

namespace tpx::inline v0::layer {

/// The dims of an MLA attention (DeepseekV3Config's names).
struct mla_options {
  std::string name = "self_attn";
  index_t hidden = 0;
  index_t n_heads = 0;
  index_t q_lora_rank = 0;  ///< 0: a full-rank q_proj
  index_t kv_lora_rank = 0;
  index_t qk_nope_head_dim = 0;
  index_t qk_rope_head_dim = 0;
  index_t v_head_dim = 0;
  double norm_eps = 1e-6;  ///< q_a_layernorm and kv_a_layernorm
  bool rope_interleave = true;
  double rope_theta = 10000.0;
  /// RoPE's frequency of each of the qk_rope_head_dim / 2 pairs; empty: rope_theta's defaults.
  std::vector<double> inv_freq = {};
  double rope_scale = 1.0;  ///< cos and sin multiplied by it (YaRN's attention factor)
  /// The scores' scale is scale_factor · qk_head_dim^−½ (YaRN: mscale(factor, mscale_all_dim)²).
  double scale_factor = 1.0;
  shard::split_kind split = shard::split_kind::balanced;

  index_t qk_head_dim() const noexcept { return qk_nope_head_dim + qk_rope_head_dim; }
};

/// The full weights, as every rank passes them: GEMM weights W [out, in], norms and biases T
/// (a bias empty: none). `q_proj` when q_lora_rank is 0, else `q_a_proj`, `q_a_norm`, `q_b_proj`.
template <class T, class W = T>
struct mla_weights {
  matrix_view<const W> q_proj = {}, q_a_proj = {}, q_b_proj = {};
  std::span<const T> q_a_norm = {}, q_a_bias = {};
  matrix_view<const W> kv_a_proj = {};  ///< kv_a_proj_with_mqa [kv_lora + qk_rope, hidden]
  std::span<const T> kv_a_norm = {}, kv_a_bias = {};
  matrix_view<const W> kv_b_proj = {}, o_proj = {};
  std::span<const T> o_bias = {};
};

template <backend_with_ops Backend, class T = float, block_mode Mode = block_mode::tensor>
class mla_attention {
  static_assert(ops::attention_ops_of<typename Backend::ops, T>,
                "tpx::mla_attention: the backend's ops have no RoPE and attention "
                "(ops::attention_ops); cuda::ops has none yet");

 public:
  using value_type = T;
  using weight_type = weight_t<Backend, T>;
  using buffer = typename Backend::template buffer<T>;
  using comm_type = typename Backend::communicator;
  static constexpr bool sp = block_styles<Mode>::sp;
  using column = linear<typename block_styles<Mode>::column, Backend, T>;
  /// On the rank's tokens under SP: their share of the gradients, all-reduced.
  using replicated =
      linear<std::conditional_t<sp, style::replicate_grad_all_reduce, style::replicate<>>, Backend,
             T>;
  using row = linear<typename block_styles<Mode>::row, Backend, T>;
  /// The latents' norms: replicated, or on the rank's tokens under SP (dW all-reduced).
  using norm_type = rms_norm<typename block_styles<Mode>::norm, Backend, T>;

  /// x and y: replicated [T, hidden] (tensor mode) or the rank's tokens (sequence mode).
  using input = typename block_styles<Mode>::column::input;
  using output = typename block_styles<Mode>::row::output;

  /// Builds the layer from the full weights, every rank passing all of them.
  mla_attention(typename Backend::engine& engine, typename Backend::communicator& comm,
                const mla_weights<T, weight_type>& w, mla_options options)
      : mla_attention(std::false_type{}, engine, comm, w, std::move(options)) {}

  /// Builds the layer from this rank's shards, as a checkpoint reader gives them: q_proj /
  /// q_b_proj and kv_b_proj the blocks of `q_options`, `kv_b_options` (the rank's heads' rows),
  /// o_proj the block of `o_options` (their columns); the latent projections, norms and biases
  /// whole (`q_a_options`, `kv_a_options`).
  mla_attention(shard::from_shard_t, typename Backend::engine& engine,
                typename Backend::communicator& comm, const mla_weights<T, weight_type>& w,
                mla_options options)
      : mla_attention(std::true_type{}, engine, comm, w, std::move(options)) {}

  /// q_proj (q_lora_rank 0) or q_b_proj: colwise in whole heads of qk_head_dim.
  static linear_options q_options(const mla_options& o, int tp) {
    const bool full = o.q_lora_rank == 0;
    return {.name = o.name + (full ? ".q_proj" : ".q_b_proj"),
            .out_features = o.n_heads * o.qk_head_dim(),
            .in_features = full ? o.hidden : o.q_lora_rank,
            .partition = heads(checked(o, tp), o.qk_head_dim(), tp)};
  }
  /// q_a_proj, replicated (under a q LoRA rank).
  static linear_options q_a_options(const mla_options& o) {
    return {.name = o.name + ".q_a_proj", .out_features = o.q_lora_rank, .in_features = o.hidden};
  }
  /// kv_a_proj_with_mqa, replicated: [kv_lora_rank + qk_rope_head_dim, hidden].
  static linear_options kv_a_options(const mla_options& o) {
    return {.name = o.name + ".kv_a_proj_with_mqa",
            .out_features = o.kv_lora_rank + o.qk_rope_head_dim,
            .in_features = o.hidden};
  }
  /// kv_b_proj: colwise in whole heads of qk_nope_head_dim + v_head_dim.
  static linear_options kv_b_options(const mla_options& o, int tp) {
    const index_t unit = o.qk_nope_head_dim + o.v_head_dim;
    return {.name = o.name + ".kv_b_proj",
            .out_features = o.n_heads * unit,
            .in_features = o.kv_lora_rank,
            .partition = heads(checked(o, tp), unit, tp)};
  }
  /// o_proj: rowwise, its input columns split with the heads (v_head_dim each).
  static linear_options o_options(const mla_options& o, int tp) {
    return {.name = o.name + ".o_proj",
            .out_features = o.hidden,
            .in_features = o.n_heads * o.v_head_dim,
            .partition = heads(checked(o, tp), o.v_head_dim, tp)};
  }

  const mla_options& options() const noexcept { return opt_; }
  /// Query heads on this rank.
  index_t local_heads() const noexcept { return local_heads_; }

  /// The projections: q_proj (the full-rank one, or q_b_proj under a q LoRA rank), q_a_proj
  /// (empty without one), kv_a_proj_with_mqa, kv_b_proj, o_proj.
  column& q_proj() noexcept { return *q_proj_; }
  std::optional<replicated>& q_a_proj() noexcept { return q_a_; }
  replicated& kv_a_proj() noexcept { return *kv_a_; }
  column& kv_b_proj() noexcept { return *kv_b_; }
  row& o_proj() noexcept { return *o_; }
  /// The latents' norm weights (q_a_layernorm's empty without a q LoRA rank).
  std::span<const T> q_a_norm() const noexcept {
    return q_a_norm_ ? q_a_norm_->weight() : std::span<const T>{};
  }
  std::span<const T> kv_a_norm() const noexcept { return kv_a_norm_->weight(); }
  /// The latents' norm weights' gradients of the last backward (the same on every rank).
  std::span<const T> q_a_norm_grad() const noexcept {
    return q_a_norm_ ? q_a_norm_->weight_grad() : std::span<const T>{};
  }
  std::span<const T> kv_a_norm_grad() const noexcept { return kv_a_norm_->weight_grad(); }

  /// y = o_proj(attention(x)) for `tokens` tokens at positions 0…T−1; x and y in the block's
  /// layout (all T rows, or the rank's block of them under SP).
  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    const index_t n = tokens, h = local_heads_, nope = opt_.qk_nope_head_dim,
                  r = opt_.qk_rope_head_dim, v = opt_.v_head_dim, dim = padded(),
                  lora = opt_.kv_lora_rank;
    expect_io(x, y, n);
    rope_.cover(n);
    const matrix_view<T> q = query(x, n);
    // The latent, expanded to the heads' [k_nope | v].
    const auto [ckv, kvn] = latent(x);
    const matrix_view<T> kvb = detail::sized(kvb_, n, h * (nope + v));
    kv_b_->forward(read_only(kvn), kvb);
    // The heads, padded to `dim`: q = [q_nope | RoPE(q_rope)], k = [k_nope | RoPE(k_rope)], v.
    const matrix_view<T> qf = zeroed(qf_, n, h * dim), kf = zeroed(kf_, n, h * dim),
                         vf = zeroed(vf_, n, h * dim);
    const auto [mine, kr] = token_rows(krope_local_, krope_, n, x.rows(), r);
    take_rope(read_only(ckv.col_range(lora, lora + r)), mine);
    gather_tokens(mine, kr);
    ops_.rope(kr, r, 0, rope_.cos(), rope_.sin(), false);
    pad_heads(read_only(q), 0, read_only(kvb), read_only(kr), qf, kf, vf);
    const matrix_view<T> of = detail::sized(of_, n, h * dim);
    ops_.attention_forward(shape(), read_only(qf), read_only(kf), read_only(vf), of,
                           detail::scratch(lse_, h * n));
    const matrix_view<T> attn = detail::sized(attn_, n, h * v);
    take_values(read_only(of), attn);
    o_->forward(read_only(attn), y);
    rows_ = n;
  }

  /// A latent cache for `sequences` sequences of up to `capacity` tokens: kv_lora_rank +
  /// qk_rope_head_dim key columns a token and no values (every token's, on every rank).
  kv_cache<T> make_cache(index_t sequences, index_t capacity) const {
    return kv_cache<T>(sequences, capacity, opt_.kv_lora_rank + opt_.qk_rope_head_dim, 0, 0);
  }

  /// Forward for inference over `cache`: the `tokens` next tokens of one or more sequences,
  /// packed (`segments`: each sequence's slot and token count, in row order; x and y in the
  /// block's layout). Each sequence's tokens sit at positions cache.length(seq) … + count − 1;
  /// their latents are appended to its cache, and its queries attend over its own cached prefix,
  /// whose keys and values are expanded from the latents. Gives what `forward` on each whole
  /// prefix gives for these rows; keeps nothing for backward.
  void forward_cached(matrix_view<const T> x, matrix_view<T> y, index_t tokens, kv_cache<T>& cache,
                      std::span<const segment> segments) {
    const index_t n = tokens, h = local_heads_, nope = opt_.qk_nope_head_dim,
                  r = opt_.qk_rope_head_dim, v = opt_.v_head_dim, dim = padded(),
                  lora = opt_.kv_lora_rank;
    expect_io(x, y, n);
    expect(cache.kv_cols() == lora + r && cache.value_cols() == 0,
           "{}: the cache holds {} key and {} value columns a token, but this layer caches its "
           "latent: {} (kv_lora_rank + qk_rope_head_dim) and none (make it with make_cache)",
           opt_.name, cache.kv_cols(), cache.value_cols(), lora + r);
    rope_.cover(expect_segments(cache, segments, n, opt_.name, "x"));
    const matrix_view<T> q = query(x, n);
    // The new tokens' latents [n, kv_lora + rope]: the normed kv part and the k_rope part in
    // rotate_half order (every rank's tokens under SP).
    const auto [ckv, kvn] = latent(x);
    const auto [mine, fresh] = token_rows(fresh_local_, fresh_, n, x.rows(), lora + r);
    ops_.copy(read_only(kvn), mine.col_range(0, lora));
    take_rope(read_only(ckv.col_range(lora, lora + r)), mine.col_range(lora, lora + r));
    gather_tokens(mine, fresh);
    const matrix_view<T> attn = detail::sized(attn_, n, h * v);
    index_t row = 0;
    for (const segment& g : segments) {
      const index_t start = cache.reserve(g.seq, g.tokens, opt_.name), end = start + g.tokens;
      const matrix_view<T> rows = fresh.row_range(row, row + g.tokens);
      ops_.rope(rows.col_range(lora, lora + r), r, start, rope_.cos(), rope_.sin(), false);
      const matrix_view<T> latent = cache.keys(g.seq);
      ops_.copy(read_only(rows), latent.row_range(start, end));
      // The prefix's keys and values, expanded from its latents (this rank's GEMM alone: every
      // rank holds the whole prefix), and the segment's queries.
      const matrix_view<T> lat = detail::sized(latent_, end, lora);
      ops_.copy(read_only(latent.row_range(0, end).col_range(0, lora)), lat);
      const matrix_view<T> kvb = detail::sized(kvb_, end, h * (nope + v));
      kv_b_->forward_local(read_only(lat), kvb);
      const matrix_view<T> qf = zeroed(qf_, g.tokens, h * dim), kf = zeroed(kf_, end, h * dim),
                           vf = zeroed(vf_, end, h * dim);
      pad_heads(read_only(q.row_range(row, row + g.tokens)), start, read_only(kvb),
                read_only(latent.row_range(0, end).col_range(lora, lora + r)), qf, kf, vf);
      const matrix_view<T> of = detail::sized(of_, g.tokens, h * dim);
      ops_.attention_decode(shape(), read_only(qf), read_only(kf), read_only(vf), start, of);
      take_values(read_only(of), attn.row_range(row, row + g.tokens));
      row += g.tokens;
    }
    o_->forward(read_only(attn), y);
    rows_ = -1;
  }

  /// dx (overwritten, in the block's layout) from x (forward's input) and dy; leaves every
  /// projection's and norm's gradient (the same on every rank).
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    const index_t n = tokens, h = local_heads_, nope = opt_.qk_nope_head_dim,
                  r = opt_.qk_rope_head_dim, v = opt_.v_head_dim, qk = opt_.qk_head_dim(),
                  dim = padded(), lora = opt_.kv_lora_rank, m = x.rows();
    expect(rows_ == n, "{}: backward for {} tokens needs the forward of as many (last: {})",
           opt_.name, n, rows_);
    expect_io(x, dy, n);
    expect_io(x, dx, n);
    const matrix_view<T> dattn = detail::sized(dattn_, n, h * v);
    o_->backward(view(attn_, n, h * v), dy, dattn);
    const matrix_view<T> dof = zeroed(dof_, n, h * dim);
    for (index_t j = 0; j < h; ++j)
      ops_.copy(read_only(dattn.col_range(j * v, (j + 1) * v)),
                dof.col_range(j * dim, j * dim + v));
    const matrix_view<T> dqf = detail::sized(dqf_, n, h * dim),
                         dkf = detail::sized(dkf_, n, h * dim),
                         dvf = detail::sized(dvf_, n, h * dim);
    ops_.attention_backward(shape(), view(qf_, n, h * dim), view(kf_, n, h * dim),
                            view(vf_, n, h * dim), view(of_, n, h * dim),
                            std::span<const T>(lse_.data(), static_cast<std::size_t>(h * n)),
                            read_only(dof), dqf, dkf, dvf);
    // Back through RoPE (its transpose) and the interleave, head by head; the shared k_rope's
    // gradient is the sum over the rank's heads, then over the ranks.
    const matrix_view<T> dq = detail::sized(dq_, n, h * qk),
                         dkvb = detail::sized(dkvb_, n, h * (nope + v));
    const matrix_view<T> dkr = detail::sized(dkrope_, n, r);
    for (index_t j = 0; j < h; ++j) {
      const index_t at = j * dim, kv = j * (nope + v);
      ops_.copy(read_only(dqf.col_range(at, at + nope)), dq.col_range(j * qk, j * qk + nope));
      const matrix_view<T> dqr = dqf.col_range(at + nope, at + qk);
      ops_.rope(dqr, r, 0, rope_.cos(), rope_.sin(), true);
      put_rope(read_only(dqr), dq.col_range(j * qk + nope, (j + 1) * qk));
      ops_.copy(read_only(dkf.col_range(at, at + nope)), dkvb.col_range(kv, kv + nope));
      ops_.copy(read_only(dvf.col_range(at, at + v)), dkvb.col_range(kv + nope, kv + nope + v));
      if (j == 0)
        ops_.copy(read_only(dkf.col_range(at + nope, at + qk)), dkr);
      else
        ops_.add(dkr, read_only(dkf.col_range(at + nope, at + qk)));
    }
    ops_.rope(dkr, r, 0, rope_.cos(), rope_.sin(), true);
    // The latent's gradient on the rank's tokens: [d kv_lora | d k_rope].
    const matrix_view<T> dckv = detail::sized(dckv_, m, lora + r),
                         dkvn = detail::sized(dkvn_, m, lora),
                         dkpass = detail::sized(dkpass_, m, lora);
    kv_b_->backward(view(kvn_, m, lora), read_only(dkvb), dkvn);
    kv_a_norm_->backward(view(kpass_, m, lora), read_only(dkvn), dkpass);
    ops_.copy(read_only(dkpass), dckv.col_range(0, lora));
    if constexpr (sp) {
      const matrix_view<T> mine = detail::sized(dkrope_local_, m, r);
      comm::gather_from_sequence::backward<comm_type, T>(*comm_, read_only(dkr), mine,
                                                         tokens_.counts(n, comm_->size()));
      put_rope(read_only(mine), dckv.col_range(lora, lora + r));
    } else {
      comm_->all_reduce(std::span<T>(dkr.data(), static_cast<std::size_t>(dkr.size())));
      put_rope(read_only(dkr), dckv.col_range(lora, lora + r));
    }
    const matrix_view<T> dx_kv = detail::sized(dx_kv_, m, opt_.hidden);
    kv_a_->backward(x, read_only(dckv), dx_kv);
    // The query path, then dx = its dx + the latent's.
    if (q_a_) {
      const index_t ql = opt_.q_lora_rank;
      const matrix_view<T> dqn = detail::sized(dqn_, m, ql), dqa = detail::sized(dqa_, m, ql);
      q_proj_->backward(view(qn_, m, ql), read_only(dq), dqn);
      q_a_norm_->backward(view(qa_, m, ql), read_only(dqn), dqa);
      q_a_->backward(x, read_only(dqa), dx);
    } else {
      q_proj_->backward(x, read_only(dq), dx);
    }
    ops_.add(dx, read_only(dx_kv));
  }

  /// Tensor mode's calls with T the rows of x.
  void forward(matrix_view<const T> x, matrix_view<T> y) requires(!sp) { forward(x, y, x.rows()); }
  void forward_cached(matrix_view<const T> x, matrix_view<T> y, kv_cache<T>& cache,
                      std::span<const segment> segments) requires(!sp) {
    forward_cached(x, y, x.rows(), cache, segments);
  }
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) requires(!sp) {
    backward(x, dy, dx, x.rows());
  }

 private:
  /// Both constructors: `FromShard` says whether `w`'s split projections are this rank's
  /// blocks or the full weights.
  template <bool FromShard>
  mla_attention(std::bool_constant<FromShard>, typename Backend::engine& engine,
                typename Backend::communicator& comm, const mla_weights<T, weight_type>& w,
                mla_options options)
      : comm_(&comm), ops_(comm), opt_(checked(std::move(options), comm.size())) {
    const int tp = comm.size();
    const auto make = [&]<class Layer>(std::optional<Layer>& into, matrix_view<const weight_type> m,
                                       std::span<const T> bias, linear_options lo) {
      if constexpr (FromShard)
        into.emplace(shard::from_shard, engine, comm, m, bias, std::move(lo));
      else
        into.emplace(engine, comm, m, bias, std::move(lo));
    };
    if (opt_.q_lora_rank == 0) {
      make(q_proj_, w.q_proj, {}, q_options(opt_, tp));
    } else {
      q_a_.emplace(engine, comm, w.q_a_proj, w.q_a_bias, q_a_options(opt_));
      make(q_proj_, w.q_b_proj, {}, q_options(opt_, tp));
      make_norm(w.q_a_norm, opt_.q_lora_rank, "q_a_layernorm", q_a_norm_);
    }
    kv_a_.emplace(engine, comm, w.kv_a_proj, w.kv_a_bias, kv_a_options(opt_));
    make_norm(w.kv_a_norm, opt_.kv_lora_rank, "kv_a_layernorm", kv_a_norm_);
    make(kv_b_, w.kv_b_proj, {}, kv_b_options(opt_, tp));
    make(o_, w.o_proj, w.o_bias, o_options(opt_, tp));
    local_heads_ = o_->pieces().size() / opt_.v_head_dim;
    const index_t r = opt_.qk_rope_head_dim;
    if (opt_.inv_freq.empty()) opt_.inv_freq = ops::default_inv_freq(opt_.rope_theta, r);
    expect(static_cast<index_t>(opt_.inv_freq.size()) == r / 2,
           "{}: RoPE needs {} frequencies (qk_rope_head_dim / 2) but was given {}", opt_.name,
           r / 2, opt_.inv_freq.size());
    scale_ = opt_.scale_factor / std::sqrt(static_cast<double>(opt_.qk_head_dim()));
    rope_ = rope_table<Backend, T>(opt_.inv_freq, opt_.rope_scale);
  }

  /// The heads over tp, `unit` features each.
  static shard::partition heads(const mla_options& o, index_t unit, int tp) {
    return shard::partition::heads(o.n_heads, unit, tp, o.split, {o.name, 0});
  }

  /// The rank's heads padded to the attention's head dim: qf = [q_nope | RoPE(q_rope)] of the
  /// queries `q` [·, heads · qk] at positions first…, kf = [k_nope | k_rope] and vf = v of the
  /// expanded latents `kvb` [·, heads · (nope + v)] with the rotated shared `k_rope` [·, rope].
  void pad_heads(matrix_view<const T> q, index_t first, matrix_view<const T> kvb,
                 matrix_view<const T> k_rope, matrix_view<T> qf, matrix_view<T> kf,
                 matrix_view<T> vf) {
    const index_t nope = opt_.qk_nope_head_dim, r = opt_.qk_rope_head_dim, v = opt_.v_head_dim,
                  qk = opt_.qk_head_dim(), dim = padded();
    for (index_t j = 0; j < local_heads_; ++j) {
      const index_t at = j * dim, kv = j * (nope + v);
      ops_.copy(q.col_range(j * qk, j * qk + nope), qf.col_range(at, at + nope));
      const matrix_view<T> qr = qf.col_range(at + nope, at + qk);
      take_rope(q.col_range(j * qk + nope, (j + 1) * qk), qr);
      ops_.rope(qr, r, first, rope_.cos(), rope_.sin(), false);
      ops_.copy(kvb.col_range(kv, kv + nope), kf.col_range(at, at + nope));
      ops_.copy(k_rope, kf.col_range(at + nope, at + qk));
      ops_.copy(kvb.col_range(kv + nope, kv + nope + v), vf.col_range(at, at + v));
    }
  }
  /// The heads' v columns of the padded attention output `of` into `attn` [·, heads · v].
  void take_values(matrix_view<const T> of, matrix_view<T> attn) {
    const index_t v = opt_.v_head_dim, dim = padded();
    for (index_t j = 0; j < local_heads_; ++j)
      ops_.copy(of.col_range(j * dim, j * dim + v), attn.col_range(j * v, (j + 1) * v));
  }

  /// x and y (or dy, dx) for `tokens` tokens: [T × hidden], or the rank's block of T under SP.
  template <class Y>
  void expect_io(matrix_view<const T> x, matrix_view<Y> y, index_t tokens) {
    const index_t rows = sp ? tokens_.of(tokens, comm_->size(), comm_->rank()) : tokens;
    expect(
        x.rows() == rows && x.cols() == opt_.hidden && y.rows() == rows && y.cols() == opt_.hidden,
        "{} (rank {}): x is [{} × {}] and y [{} × {}], but for {} tokens the layer maps "
        "[{} × {}] to [{} × {}] ({})",
        opt_.name, comm_->rank(), x.rows(), x.cols(), y.rows(), y.cols(), tokens, rows, opt_.hidden,
        rows, opt_.hidden,
        sp ? "sequence mode: the rank's balanced block of the tokens"
           : "tensor mode: every rank holds every token");
  }

  /// A token matrix [n, cols] (`all`) and where the rank's rows of it are written before
  /// `gather_tokens`: `all` itself in tensor mode, `stage` [rank's rows, cols] under SP.
  std::pair<matrix_view<T>, matrix_view<T>> token_rows(buffer& stage, buffer& all, index_t n,
                                                       index_t mine, index_t cols) {
    const matrix_view<T> whole = detail::sized(all, n, cols);
    if constexpr (sp)
      return {detail::sized(stage, mine, cols), whole};
    else
      return {whole, whole};
  }
  /// Under SP, every rank's rows `mine` all-gathered into `all`; in tensor mode they are `all`.
  void gather_tokens(matrix_view<T> mine, matrix_view<T> all) {
    if constexpr (sp)
      comm::gather_from_sequence::forward<comm_type, T>(*comm_, read_only(mine), all,
                                                        tokens_.counts(all.rows(), comm_->size()));
  }

  /// The rank's heads' queries [n, heads · qk_head_dim] for all n tokens (q_a_proj's output and
  /// its norm, on x's rows, kept).
  matrix_view<T> query(matrix_view<const T> x, index_t n) {
    const matrix_view<T> q = detail::sized(q_, n, local_heads_ * opt_.qk_head_dim());
    if (q_a_) {
      const matrix_view<T> qa = detail::sized(qa_, x.rows(), opt_.q_lora_rank),
                           qn = detail::sized(qn_, x.rows(), opt_.q_lora_rank);
      q_a_->forward(x, qa);
      q_a_norm_->forward(read_only(qa), qn);
      q_proj_->forward(read_only(qn), q);
    } else {
      q_proj_->forward(x, q);
    }
    return q;
  }

  /// The latent [rows, kv_lora + rope] = kv_a_proj_with_mqa(x) of x's rows, and its kv_lora part
  /// normed [rows, kv_lora] (the part itself kept contiguous for backward).
  std::pair<matrix_view<T>, matrix_view<T>> latent(matrix_view<const T> x) {
    const index_t lora = opt_.kv_lora_rank, n = x.rows();
    const matrix_view<T> ckv = detail::sized(ckv_, n, lora + opt_.qk_rope_head_dim);
    kv_a_->forward(x, ckv);
    const matrix_view<T> kpass = detail::sized(kpass_, n, lora), kvn = detail::sized(kvn_, n, lora);
    ops_.copy(read_only(ckv.col_range(0, lora)), kpass);
    kv_a_norm_->forward(read_only(kpass), kvn);
    return {ckv, kvn};
  }

  static mla_options checked(mla_options o, int tp) {
    expect(o.hidden >= 1 && o.n_heads >= 1 && o.kv_lora_rank >= 1 && o.qk_nope_head_dim >= 0 &&
               o.qk_rope_head_dim >= 2 && o.qk_rope_head_dim % 2 == 0 && o.v_head_dim >= 1 &&
               o.q_lora_rank >= 0,
           "{}: MLA needs hidden, n_heads, kv_lora_rank and v_head_dim ≥ 1, qk_nope_head_dim ≥ 0, "
           "an even qk_rope_head_dim ≥ 2 and q_lora_rank ≥ 0 (0: a full-rank q_proj); got {}, {}, "
           "{}, {}, {}, {}, {}",
           o.name, o.hidden, o.n_heads, o.kv_lora_rank, o.v_head_dim, o.qk_nope_head_dim,
           o.qk_rope_head_dim, o.q_lora_rank);
    expect(tp >= 1 && tp <= o.n_heads,
           "{}: {} heads cannot be split over tp = {}; MLA is split in whole heads, so tp must be "
           "between 1 and n_heads = {}",
           o.name, o.n_heads, tp, o.n_heads);
    return o;
  }

  void make_norm(std::span<const T> w, index_t size, const char* what,
                 std::optional<norm_type>& into) {
    expect(static_cast<index_t>(w.size()) == size, "{}.{}: the norm weight has {} elements, not {}",
           opt_.name, what, w.size(), size);
    into.emplace(*comm_, w, opt_.norm_eps, opt_.name + "." + what);
  }

  index_t padded() const noexcept { return std::max(opt_.qk_head_dim(), opt_.v_head_dim); }
  ops::attention_shape shape() const noexcept {
    return {
        .q_heads = local_heads_, .kv_heads = local_heads_, .head_dim = padded(), .scale = scale_};
  }

  /// A [rows × cols] view of `b` whose elements this layer never writes stay zero: `b` is
  /// refilled with zeros whenever it grows (the pads of the heads).
  matrix_view<T> zeroed(buffer& b, index_t rows, index_t cols) {
    const index_t need = rows * cols;
    if (static_cast<index_t>(b.size()) < need) {
      const std::vector<T> zeros(static_cast<std::size_t>(need), T(0));
      Backend::upload(std::span<const T>(zeros), b);
    }
    return make_matrix(b.data(), rows, cols);
  }

  /// A rope part [n, r] into rotate_half order: as it is, or evens then odds (interleave).
  void take_rope(matrix_view<const T> from, matrix_view<T> to) {
    if (!opt_.rope_interleave) return ops_.copy(from, to);
    const index_t half = opt_.qk_rope_head_dim / 2;
    for (index_t i = 0; i < half; ++i) {
      ops_.copy(from.col_range(2 * i, 2 * i + 1), to.col_range(i, i + 1));
      ops_.copy(from.col_range(2 * i + 1, 2 * i + 2), to.col_range(half + i, half + i + 1));
    }
  }
  /// The inverse: a gradient in rotate_half order back to the rope part's own order.
  void put_rope(matrix_view<const T> from, matrix_view<T> to) {
    if (!opt_.rope_interleave) return ops_.copy(from, to);
    const index_t half = opt_.qk_rope_head_dim / 2;
    for (index_t i = 0; i < half; ++i) {
      ops_.copy(from.col_range(i, i + 1), to.col_range(2 * i, 2 * i + 1));
      ops_.copy(from.col_range(half + i, half + i + 1), to.col_range(2 * i + 1, 2 * i + 2));
    }
  }

  static matrix_view<const T> view(const buffer& b, index_t rows, index_t cols) {
    return make_matrix<const T>(b.data(), rows, cols);
  }

  typename Backend::communicator* comm_;
  typename Backend::ops ops_;
  mla_options opt_;
  std::optional<column> q_proj_;  // q_proj, or q_b_proj under a q LoRA rank
  std::optional<replicated> q_a_, kv_a_;
  std::optional<column> kv_b_;
  std::optional<row> o_;
  index_t local_heads_ = 0;
  double scale_ = 0;  // the scores' scale
  detail::token_shards tokens_;
  std::optional<norm_type> q_a_norm_, kv_a_norm_;  // q_a_layernorm (under a q LoRA rank)
  /// Kept from forward for backward.
  buffer qa_, qn_, q_, ckv_, kpass_, kvn_, kvb_, qf_, kf_, vf_, of_, lse_, attn_, krope_;
  buffer krope_local_;          // SP: the rank's tokens' k_rope, before the gather
  buffer fresh_, fresh_local_;  // forward_cached: the step's latents (the rank's, under SP)
  buffer latent_;               // forward_cached: a prefix's latents, contiguous
  index_t rows_ = -1;
  /// Backward's scratch.
  buffer dattn_, dof_, dqf_, dkf_, dvf_, dq_, dkvb_, dkrope_, dckv_, dkvn_, dkpass_, dx_kv_, dqn_,
      dqa_, dkrope_local_;
  rope_table<Backend, T> rope_;
};

}  // namespace tpx::inline v0::layer
