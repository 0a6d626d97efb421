#pragma once
/// \file
/// `attention_block<Mode, Backend, T>`: the attention of a decoder layer — q|k|v as one colwise
/// layer in whole heads (any tp ≤ n_heads; a KV head on every rank whose query heads use it), RoPE
/// + causal attention on the rank's heads (`causal_attention`), o rowwise over the query heads — in
/// either block mode.

#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/layer/attention.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/block.hpp"
#include "tpx/layer/kv_cache.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/shard/gqa.hpp"

namespace tpx::inline v0::layer {

/// The full weights of an attention block: q [nq·d, H], k and v [nkv·d, H], o [H, nq·d].
template <class T>
struct attention_weights {
  matrix_view<const T> q, k, v, o;
};

struct attention_config {
  shard::gqa heads;
  double rope_theta = 10000.0;
  std::vector<double> inv_freq = {};  ///< RoPE's frequencies; empty: rope_theta's defaults
  double rope_scale = 1.0;            ///< cos and sin multiplied by it (YaRN)
  index_t window = 0;                 ///< sliding-window attention (attention_options::window)
};

/// qkv colwise in whole heads (KV heads with the query heads that use them) → RoPE + attention → o
/// rowwise.
template <block_mode Mode, backend_with_ops Backend, class T = float>
class attention_block {
  using styles = block_styles<Mode>;

 public:
  using input = typename styles::column::input;
  using output = typename styles::row::output;
  using qkv_type = linear<typename styles::column, Backend, T>;
  using o_type = linear<typename styles::row, Backend, T>;
  static_assert(std::is_same_v<typename styles::column::output, style::layout::shard<1>> &&
                    std::is_same_v<typename styles::row::input, style::layout::shard<1>>,
                "tpx::attention_block: attention runs on feature (head) shards between the qkv "
                "and o projections");

  /// What the projections' weights are held as: T, or narrower under `weights_in`.
  using weight_type = weight_t<Backend, T>;

  attention_block(typename Backend::engine& engine, typename Backend::communicator& comm,
                  attention_weights<weight_type> w, attention_config cfg,
                  std::string name = "self_attn")
      : qkv_(make_qkv(engine, comm, w, cfg, name)),
        o_(engine, comm, w.o, {}, o_options(cfg, w.o.rows(), comm.size(), name)),
        core_(comm, core_options(cfg, comm, name)),
        comm_(&comm) {}

  /// Builds the block from this rank's shards, as a checkpoint reader gives them: `qkv` is the
  /// block `qkv_type::weight_placement(qkv_options(cfg, H, tp, name), tp).of(rank)` of the
  /// stacked [q; k; v] weight (this rank's q heads, then its k heads, then its v heads), `o` the
  /// block of `o_options(cfg, H, tp, name)`; biases likewise (empty: none).
  attention_block(shard::from_shard_t, typename Backend::engine& engine,
                  typename Backend::communicator& comm, matrix_view<const weight_type> qkv,
                  std::span<const T> qkv_bias, matrix_view<const weight_type> o,
                  std::span<const T> o_bias, attention_config cfg, std::string name = "self_attn")
      : qkv_(shard::from_shard, engine, comm, qkv, qkv_bias,
             qkv_options(cfg, qkv.cols(), comm.size(), name)),
        o_(shard::from_shard, engine, comm, o, o_bias, o_options(cfg, o.rows(), comm.size(), name)),
        core_(comm, core_options(cfg, comm, name)),
        comm_(&comm) {}

  /// The stacked q|k|v layer: colwise in whole heads (`shard::gqa::qkv_partition`). Errors when
  /// the heads cannot be split over tp.
  static linear_options qkv_options(const attention_config& cfg, index_t hidden, int tp,
                                    const std::string& name) {
    cfg.heads.expect_implementable(tp, name);
    return {.name = name + ".qkv_proj",
            .out_features = (cfg.heads.n_heads + 2 * cfg.heads.n_kv_heads) * cfg.heads.head_dim,
            .in_features = hidden,
            .partition = cfg.heads.qkv_partition(tp)};
  }
  /// o: rowwise, its input columns split with the query heads.
  static linear_options o_options(const attention_config& cfg, index_t hidden, int tp,
                                  const std::string& name) {
    cfg.heads.expect_implementable(tp, name);
    return {.name = name + ".o_proj",
            .out_features = hidden,
            .in_features = cfg.heads.n_heads * cfg.heads.head_dim,
            .partition = cfg.heads.q_partition(tp)};
  }

  qkv_type& qkv() noexcept { return qkv_; }
  o_type& o() noexcept { return o_; }
  causal_attention<Backend, T>& core() noexcept { return core_; }

  /// Per-head RMSNorm of q and k before RoPE (Qwen3): `q`, `k` [head_dim], replicated; their
  /// gradients are all-reduced in backward (each rank saw its own heads).
  void set_qk_norm(std::span<const T> q, std::span<const T> k, double eps) {
    core_.set_qk_norm(q, k, eps);
  }

  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    const matrix_view<T> qkv = detail::sized(qkv_out_, tokens, core_.qkv_cols());
    const matrix_view<T> attn = detail::sized(attn_, tokens, core_.out_cols());
    qkv_.forward(x, qkv);
    core_.forward(qkv, attn);
    o_.forward(attn, y);
  }

  /// A cache for this rank's KV heads: `sequences` sequences of up to `capacity` tokens (holding
  /// only the last `window` of them under a sliding window).
  kv_cache<T> make_cache(index_t sequences, index_t capacity) const {
    return kv_cache<T>(sequences, capacity, core_.kv_cols(), core_.window());
  }

  /// Forward for inference: the `tokens` next tokens of the sequences `segments` (packed, in
  /// row order), whose earlier keys and values `cache` holds (see
  /// causal_attention::forward_cached); keeps nothing for backward.
  void forward_cached(matrix_view<const T> x, matrix_view<T> y, index_t tokens, kv_cache<T>& cache,
                      std::span<const segment> segments) {
    const matrix_view<T> qkv = detail::sized(qkv_out_, tokens, core_.qkv_cols());
    const matrix_view<T> attn = detail::sized(attn_, tokens, core_.out_cols());
    qkv_.forward(x, qkv);
    core_.forward_cached(qkv, attn, cache, segments);
    o_.forward(attn, y);
  }

  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    const matrix_view<const T> qkv =
        make_matrix<const T>(qkv_out_.data(), tokens, core_.qkv_cols());
    const matrix_view<const T> attn = make_matrix<const T>(attn_.data(), tokens, core_.out_cols());
    const matrix_view<T> dattn = detail::sized(dattn_, tokens, core_.out_cols());
    const matrix_view<T> dqkv = detail::sized(dqkv_, tokens, core_.qkv_cols());
    o_.backward(attn, dy, dattn);
    core_.backward(qkv, dattn, dqkv);
    if (core_.has_qk_norm()) {
      comm_->all_reduce(core_.q_norm_grad());
      comm_->all_reduce(core_.k_norm_grad());
    }
    qkv_.backward(x, dqkv, dx);
  }

 private:
  static qkv_type make_qkv(typename Backend::engine& engine, typename Backend::communicator& comm,
                           const attention_weights<weight_type>& w, const attention_config& cfg,
                           const std::string& name) {
    cfg.heads.expect_implementable(comm.size(), name);
    const index_t d = cfg.heads.head_dim, h = w.q.cols();
    expect(w.q.rows() == cfg.heads.n_heads * d && w.k.rows() == cfg.heads.n_kv_heads * d &&
               w.v.rows() == w.k.rows() && w.k.cols() == h && w.v.cols() == h &&
               w.o.cols() == w.q.rows() && w.o.rows() == h,
           "{}: q [{} × {}], k [{} × {}], v [{} × {}] and o [{} × {}] do not fit {} query and {} "
           "KV heads of dim {} over hidden {}",
           name, w.q.rows(), w.q.cols(), w.k.rows(), w.k.cols(), w.v.rows(), w.v.cols(), w.o.rows(),
           w.o.cols(), cfg.heads.n_heads, cfg.heads.n_kv_heads, d, h);
    const std::vector<weight_type> rows = detail::stack_rows<weight_type>({w.q, w.k, w.v});
    const linear_options o = qkv_options(cfg, h, comm.size(), name);
    return qkv_type(engine, comm, make_matrix(rows.data(), o.out_features, h), {}, o);
  }

  static attention_options core_options(const attention_config& cfg,
                                        typename Backend::communicator& comm,
                                        const std::string& name) {
    const int tp = comm.size(), rank = comm.rank();
    return {.name = name,
            .q_heads = cfg.heads.q_heads(tp, rank).size(),
            .kv_heads = cfg.heads.kv_heads(tp, rank).size(),
            .head_dim = cfg.heads.head_dim,
            .kv_group = cfg.heads.group(),
            .q_offset = cfg.heads.q_offset(tp, rank),
            .rope_theta = cfg.rope_theta,
            .inv_freq = cfg.inv_freq,
            .rope_scale = cfg.rope_scale,
            .window = cfg.window};
  }

  qkv_type qkv_;
  o_type o_;
  causal_attention<Backend, T> core_;
  typename Backend::communicator* comm_;
  typename Backend::template buffer<T> qkv_out_, attn_, dattn_, dqkv_;
};

}  // namespace tpx::inline v0::layer
