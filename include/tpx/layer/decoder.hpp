#pragma once
/// \file
/// Decoder blocks composed from tpx layers: a Llama-style layer (attention + SwiGLU MLP) and a
/// Mixtral-style layer (attention + mixture of experts), in tensor-parallel (TP) or
/// tensor + sequence-parallel (SP) mode.
///
///   x ─ rms_norm ─ qkv (colwise, whole heads) ─ RoPE + causal attention ─ o (rowwise) ─(+x)─ h
///   h ─ rms_norm ─ ffn: gate|up (colwise, packed) ─ SwiGLU ─ down (rowwise)          ─(+h)─ y
///                  or moe: router ─ top-k ─ experts
///
///   mode        x, h, y     norms               qkv, gate|up   o, down       per layer
///   tensor      replicate   replicate           colwise        rowwise       fwd 2 AR, bwd 2 AR
///   sequence    shard<0>    sequence_parallel   colwise_sp     rowwise_sp    fwd 2 AG + 2 RS,
///                                                                            bwd 2 AG + 2 RS
///                                                                            + AR of the norms
///
/// Layouts are checked at compile time: each layer's output layout must be the next one's input.
/// Under SP every rank holds its balanced block of the T tokens, and forward and backward take T.

#include <initializer_list>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/ops/elementwise.hpp"
#include "tpx/layer/attention.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/layer/moe.hpp"
#include "tpx/layer/norm.hpp"
#include "tpx/shard/gqa.hpp"

namespace tpx::inline v0::layer {

/// How a block splits its work.
enum class block_mode { tensor, sequence };

/// The styles of a block's parts in each mode.
template <block_mode Mode>
struct block_styles {
  static constexpr bool sp = Mode == block_mode::sequence;
  using norm = std::conditional_t<sp, style::sequence_parallel, style::replicate<>>;
  using column = std::conditional_t<sp, style::colwise_sp, style::colwise<>>;
  using row = std::conditional_t<sp, style::rowwise_sp, style::rowwise<>>;
  using moe_tp = std::conditional_t<sp, style::moe_tensor_sp, style::moe_tensor>;
  using residual = typename norm::input;  // where x, h and y live
};

namespace detail {
/// The rows of `parts`, one matrix after the other, row-major (a fused [q; k; v] or [gate; up]
/// weight). The parts must have the same number of columns.
template <class T>
std::vector<T> stack_rows(std::initializer_list<matrix_view<const T>> parts) {
  std::vector<T> rows;
  for (const matrix_view<const T> m : parts)
    for (index_t r = 0; r < m.rows(); ++r)
      for (index_t c = 0; c < m.cols(); ++c) rows.push_back(m(r, c));
  return rows;
}
}  // namespace detail

/// The full weights of a SwiGLU MLP: gate and up [I, H], down [H, I].
template <class T>
struct mlp_weights {
  matrix_view<const T> gate, up, down;
};

/// gate|up packed colwise → silu(gate) ⊙ up → down rowwise.
template <block_mode Mode, backend_with_ops Backend, class T = float>
class swiglu_mlp {
  using styles = block_styles<Mode>;

 public:
  using style_type = styles;
  using input = typename styles::column::input;
  using output = typename styles::row::output;
  using value_type = T;
  using gate_up_type = linear<typename styles::column, Backend, T>;
  using down_type = linear<typename styles::row, Backend, T>;
  static_assert(std::is_same_v<typename styles::column::output, typename styles::row::input>,
                "tpx::swiglu_mlp: the gate|up output layout must be the down input layout");

  swiglu_mlp(typename Backend::engine& engine, typename Backend::communicator& comm,
             mlp_weights<T> w, std::string name = "mlp")
      : gate_up_(make_gate_up(engine, comm, w, name)),
        down_(engine, comm, w.down, {}, down_options(w.down.cols(), w.down.rows(), name)),
        ops_(comm) {}

  /// Builds the MLP from this rank's shards, as a checkpoint reader gives them: `gate_up` is the
  /// block `gate_up_type::weight_placement(gate_up_options(I, H, name), tp).of(rank)` of the
  /// stacked [gate; up] weight [2I, H] (this rank's gate rows, then its up rows), `down` the block
  /// of `down_options(I, H, name)` of down [H, I]; biases likewise (empty: none).
  swiglu_mlp(shard::from_shard_t, typename Backend::engine& engine,
             typename Backend::communicator& comm, index_t inter, matrix_view<const T> gate_up,
             std::span<const T> gate_up_bias, matrix_view<const T> down,
             std::span<const T> down_bias, std::string name = "mlp")
      : gate_up_(shard::from_shard, engine, comm, gate_up, gate_up_bias,
                 gate_up_options(inter, gate_up.cols(), name)),
        down_(shard::from_shard, engine, comm, down, down_bias,
              down_options(inter, down.rows(), name)),
        ops_(comm) {}

  /// The stacked gate|up layer over intermediate size `inter` and hidden size `hidden`: packed
  /// colwise, each of the two blocks split on its own.
  static linear_options gate_up_options(index_t inter, index_t hidden, const std::string& name) {
    return {.name = name + ".gate_up_proj",
            .out_features = 2 * inter,
            .in_features = hidden,
            .blocks = {{inter, 1}, {inter, 1}}};
  }
  static linear_options down_options(index_t inter, index_t hidden, const std::string& name) {
    return {.name = name + ".down_proj", .out_features = hidden, .in_features = inter};
  }

  gate_up_type& gate_up() noexcept { return gate_up_; }
  down_type& down() noexcept { return down_; }

  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    const index_t i = gate_up_.output_cols() / 2;
    const matrix_view<T> h = detail::sized(h_, tokens, 2 * i), a = detail::sized(a_, tokens, i);
    gate_up_.forward(x, h);
    ops_.swiglu_forward(const_view(h), a);
    down_.forward(a, y);
  }

  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    const index_t i = gate_up_.output_cols() / 2;
    const matrix_view<const T> h = make_matrix<const T>(h_.data(), tokens, 2 * i),
                               a = make_matrix<const T>(a_.data(), tokens, i);
    const matrix_view<T> da = detail::sized(da_, tokens, i), dh = detail::sized(dh_, tokens, 2 * i);
    down_.backward(a, dy, da);
    ops_.swiglu_backward(h, const_view(da), dh);
    gate_up_.backward(x, dh, dx);
  }

 private:
  /// Checks the three shapes, then builds gate|up as one packed colwise layer.
  static gate_up_type make_gate_up(typename Backend::engine& engine,
                                   typename Backend::communicator& comm, const mlp_weights<T>& w,
                                   const std::string& name) {
    expect(w.gate.rows() == w.up.rows() && w.gate.cols() == w.up.cols() &&
               w.down.cols() == w.gate.rows() && w.down.rows() == w.gate.cols(),
           "{}: gate [{} × {}], up [{} × {}] and down [{} × {}] must be [I × H], [I × H], [H × I]",
           name, w.gate.rows(), w.gate.cols(), w.up.rows(), w.up.cols(), w.down.rows(),
           w.down.cols());
    const std::vector<T> rows = detail::stack_rows<T>({w.gate, w.up});
    return gate_up_type(engine, comm, make_matrix(rows.data(), 2 * w.gate.rows(), w.gate.cols()),
                        {}, gate_up_options(w.gate.rows(), w.gate.cols(), name));
  }

  static matrix_view<const T> const_view(matrix_view<T> m) { return m; }

  gate_up_type gate_up_;
  down_type down_;
  typename Backend::ops ops_;
  typename Backend::template buffer<T> h_, a_, da_, dh_;
};

/// The MoE feed-forward of a block: `moe` with the block's TP-inside-experts style, or an
/// expert-parallel style whose token layout matches the block's.
template <class Style, backend_with_ops Backend, class T = float>
class moe_ffn : public moe<Style, Backend, T> {
 public:
  using moe<Style, Backend, T>::moe;
  using input = typename Style::input;
  using output = typename Style::output;
  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    moe<Style, Backend, T>::forward(x, y, tokens);
  }
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    moe<Style, Backend, T>::backward(x, dy, dx, tokens);
  }
};

/// The full weights of an attention block: q [nq·d, H], k and v [nkv·d, H], o [H, nq·d].
template <class T>
struct attention_weights {
  matrix_view<const T> q, k, v, o;
};

struct attention_config {
  shard::gqa heads;
  double rope_theta = 10000.0;
  std::vector<double> inv_freq = {};  ///< RoPE's frequencies; empty: rope_theta's defaults
  index_t window = 0;                 ///< sliding-window attention (attention_options::window)
};

/// qkv colwise in whole heads (KV heads replicated past n_kv) → RoPE + attention → o rowwise.
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

  attention_block(typename Backend::engine& engine, typename Backend::communicator& comm,
                  attention_weights<T> w, attention_config cfg, std::string name = "self_attn")
      : qkv_(make_qkv(engine, comm, w, cfg, name)),
        o_(engine, comm, w.o, {}, o_options(cfg, w.o.rows(), comm.size(), name)),
        core_(comm, core_options(cfg, comm, name)),
        comm_(&comm) {}

  /// Builds the block from this rank's shards, as a checkpoint reader gives them: `qkv` is the
  /// block `qkv_type::weight_placement(qkv_options(cfg, H, tp, name), tp).of(rank)` of the
  /// stacked [q; k; v] weight (this rank's q heads, then its k heads, then its v heads), `o` the
  /// block of `o_options(cfg, H, tp, name)`; biases likewise (empty: none).
  attention_block(shard::from_shard_t, typename Backend::engine& engine,
                  typename Backend::communicator& comm, matrix_view<const T> qkv,
                  std::span<const T> qkv_bias, matrix_view<const T> o, std::span<const T> o_bias,
                  attention_config cfg, std::string name = "self_attn")
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
                           const attention_weights<T>& w, const attention_config& cfg,
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
    const std::vector<T> rows = detail::stack_rows<T>({w.q, w.k, w.v});
    const linear_options o = qkv_options(cfg, h, comm.size(), name);
    return qkv_type(engine, comm, make_matrix(rows.data(), o.out_features, h), {}, o);
  }

  static attention_options core_options(const attention_config& cfg,
                                        typename Backend::communicator& comm,
                                        const std::string& name) {
    return {.name = name,
            .q_heads = cfg.heads.q_heads(comm.size(), comm.rank()).size(),
            .kv_heads = cfg.heads.kv_heads(comm.size(), comm.rank()).size(),
            .head_dim = cfg.heads.head_dim,
            .rope_theta = cfg.rope_theta,
            .inv_freq = cfg.inv_freq,
            .window = cfg.window};
  }

  qkv_type qkv_;
  o_type o_;
  causal_attention<Backend, T> core_;
  typename Backend::communicator* comm_;
  typename Backend::template buffer<T> qkv_out_, attn_, dattn_, dqkv_;
};

/// The full weights of a decoder layer, as views every rank passes alike: the norms, the
/// attention, and either the MLP (`llama_layer`) or the router, experts ([E, 2I, H] gate|up,
/// [E, H, I] down) and optional shared expert (`mixtral_layer`).
template <class T>
struct decoder_weights {
  std::span<const T> input_norm, post_norm;
  attention_weights<T> attention;
  mlp_weights<T> mlp = {};
  matrix_view<const T> router = {};
  tensor_view<const T, 3> gate_up = {}, down = {};
  matrix_view<const T> shared_gate_up = {}, shared_down = {};
};

/// How a decoder layer is built; routing and experts apply to MoE layers only.
struct decoder_options {
  attention_config attention;
  double eps = 1e-5;
  ops::routing_options routing = {};
  experts_options experts = {};
};

/// A pre-norm decoder layer: y = h + ffn(norm2(h)), h = x + attention(norm1(x)).
template <block_mode Mode, class Ffn, backend_with_ops Backend, class T = float>
class decoder_layer {
  using styles = block_styles<Mode>;
  using norm_type = rms_norm<typename styles::norm, Backend, T>;
  using attention_type = attention_block<Mode, Backend, T>;
  using residual = typename styles::residual;
  static_assert(std::is_same_v<typename styles::norm::output, typename attention_type::input> &&
                    std::is_same_v<typename attention_type::output, residual>,
                "tpx::decoder_layer: the attention block must take the norm's layout and return "
                "the residual stream's");
  static_assert(std::is_same_v<typename styles::norm::output, typename Ffn::input> &&
                    std::is_same_v<typename Ffn::output, residual>,
                "tpx::decoder_layer: the feed-forward must take the norm's layout and return the "
                "residual stream's (a tensor-mode block takes replicated tokens: swiglu_mlp, "
                "moe_tensor or moe_masked; a sequence-mode block token shards: swiglu_mlp, "
                "moe_tensor_sp or moe_all_to_all)");

 public:
  using value_type = T;
  using ffn_type = Ffn;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  static constexpr block_mode mode = Mode;

  decoder_layer(typename Backend::communicator& comm, std::span<const T> input_norm,
                std::span<const T> post_norm, double eps, attention_type&& attention, Ffn&& ffn)
      : comm_(&comm),
        norm1_(comm, input_norm, eps, "input_layernorm"),
        norm2_(comm, post_norm, eps, "post_attention_layernorm"),
        attention_(std::move(attention)),
        ffn_(std::move(ffn)),
        ops_(comm) {}

  /// Builds this rank's layer from the full weights.
  static decoder_layer build(typename Backend::engine& engine, typename Backend::communicator& comm,
                             const decoder_weights<T>& w, const decoder_options& o) {
    attention_type attention(engine, comm, w.attention, o.attention);
    if constexpr (std::is_constructible_v<Ffn, typename Backend::engine&,
                                          typename Backend::communicator&, mlp_weights<T>>)
      return {comm,  w.input_norm,         w.post_norm,
              o.eps, std::move(attention), Ffn(engine, comm, w.mlp)};
    else
      return {comm,
              w.input_norm,
              w.post_norm,
              o.eps,
              std::move(attention),
              Ffn(engine, comm, w.router, o.routing, w.gate_up, w.down, w.shared_gate_up,
                  w.shared_down, o.experts)};
  }

  norm_type& input_norm() noexcept { return norm1_; }
  norm_type& post_norm() noexcept { return norm2_; }
  attention_type& attention() noexcept { return attention_; }
  Ffn& ffn() noexcept { return ffn_; }

  /// Rows of x, y on this rank for T tokens (T, or the rank's balanced block under SP).
  index_t local_tokens(index_t tokens) {
    return styles::sp ? tokens_.of(tokens, comm_->size(), comm_->rank()) : tokens;
  }

  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    run_forward(x, y, tokens, [&](matrix_view<const T> n1, matrix_view<T> h) {
      attention_.forward(n1, h, tokens);
    });
  }

  /// Forward for inference: the `tokens` next tokens of the sequences `segments` (packed, in
  /// row order), their attention over the keys and values `cache` holds
  /// (attention().make_cache); keeps nothing for backward.
  void forward_cached(matrix_view<const T> x, matrix_view<T> y, index_t tokens, kv_cache<T>& cache,
                      std::span<const segment> segments) {
    run_forward(x, y, tokens, [&](matrix_view<const T> n1, matrix_view<T> h) {
      attention_.forward_cached(n1, h, tokens, cache, segments);
    });
  }

  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    const index_t n = local_tokens(tokens), hidden = norm1_.features();
    const auto view = [&](auto& b) { return make_matrix<const T>(b.data(), n, hidden); };
    const matrix_view<T> dn = detail::sized(dn_, n, hidden), dh = detail::sized(dh_, n, hidden);
    ffn_.backward(view(n2_), dy, dn, tokens);
    norm2_.backward(view(h_), dn, dh);
    ops_.add(dh, dy);
    attention_.backward(view(n1_), dh, dn, tokens);
    norm1_.backward(x, dn, dx);
    ops_.add(dx, view(dh_));
  }

 private:
  /// norm → attention (`attend`) → residual → norm → FFN → residual.
  template <class Attend>
  void run_forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens, Attend&& attend) {
    const index_t n = local_tokens(tokens), hidden = norm1_.features();
    expect(x.rows() == n && y.rows() == n && x.cols() == hidden && y.cols() == hidden,
           "decoder layer (rank {}): x is [{} × {}] and y [{} × {}] but must be [{} × {}] for {} "
           "tokens",
           comm_->rank(), x.rows(), x.cols(), y.rows(), y.cols(), n, hidden, tokens);
    const matrix_view<T> n1 = detail::sized(n1_, n, hidden), h = detail::sized(h_, n, hidden),
                         n2 = detail::sized(n2_, n, hidden);
    norm1_.forward(x, n1);
    attend(n1, h);
    ops_.add(h, x);
    norm2_.forward(h, n2);
    ffn_.forward(n2, y, tokens);
    ops_.add(y, const_view(h));
  }

  static matrix_view<const T> const_view(matrix_view<T> m) { return m; }

  typename Backend::communicator* comm_;
  norm_type norm1_, norm2_;
  attention_type attention_;
  Ffn ffn_;
  typename Backend::ops ops_;
  detail::token_shards tokens_;
  typename Backend::template buffer<T> n1_, h_, n2_, dn_, dh_;
};

/// A Llama-style decoder layer.
template <block_mode Mode, backend_with_ops Backend, class T = float>
using llama_layer = decoder_layer<Mode, swiglu_mlp<Mode, Backend, T>, Backend, T>;

/// A Mixtral-style decoder layer; `Experts` defaults to TP inside experts.
template <block_mode Mode, backend_with_ops Backend, class T = float,
          class Experts = typename block_styles<Mode>::moe_tp>
using mixtral_layer = decoder_layer<Mode, moe_ffn<Experts, Backend, T>, Backend, T>;

}  // namespace tpx::inline v0::layer
