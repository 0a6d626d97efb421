#pragma once
/// \file
/// Decoder blocks composed from tpx layers: a Llama-style layer (attention + SwiGLU MLP) and a
/// Mixtral-style layer (attention + mixture of experts), in tensor-parallel (TP) or
/// tensor + sequence-parallel (SP) mode, and a DeepSeek-style one whose attention is MLA
/// (layer/mla_attention.hpp).
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

#include <span>
#include <string>
#include <type_traits>

#include "tpx/layer/attention_block.hpp"
#include "tpx/layer/block.hpp"
#include "tpx/layer/mla_attention.hpp"
#include "tpx/layer/mlp.hpp"
#include "tpx/layer/moe.hpp"
#include "tpx/layer/norm.hpp"

namespace tpx::inline v0::layer {

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

/// The full weights of a decoder layer, as views every rank passes alike: the norms, the
/// attention, and either the MLP (`llama_layer`) or the router, experts ([E, 2I, H] gate|up,
/// [E, H, I] down) and optional shared expert (`mixtral_layer`). The GEMM weights are W (T, or
/// the narrower type a `weights_in` backend holds them in); the norms T.
template <class T, class W = T>
struct decoder_weights {
  std::span<const T> input_norm, post_norm;
  attention_weights<W> attention;
  mlp_weights<W> mlp = {};
  matrix_view<const W> router = {};
  tensor_view<const W, 3> gate_up = {}, down = {};
  matrix_view<const W> shared_gate_up = {}, shared_down = {};
};

/// How a decoder layer is built; routing and experts apply to MoE layers only.
struct decoder_options {
  attention_config attention;
  double eps = 1e-5;
  ops::routing_options routing = {};
  experts_options experts = {};
};

/// A pre-norm decoder layer: y = h + ffn(norm2(h)), h = x + attention(norm1(x)). `Attention` is
/// the block's attention: `attention_block` (GQA) or `mla_attention` (MLA), in the block's mode.
template <block_mode Mode, class Ffn, backend_with_ops Backend, class T = float,
          class Attention = attention_block<Mode, Backend, T>>
class decoder_layer {
  using styles = block_styles<Mode>;
  using norm_type = rms_norm<typename styles::norm, Backend, T>;
  using attention_type = Attention;
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

  /// Builds this rank's layer from the full weights (a GQA attention block).
  static decoder_layer build(typename Backend::engine& engine, typename Backend::communicator& comm,
                             const decoder_weights<T, weight_t<Backend, T>>& w,
                             const decoder_options& o) requires
      std::is_same_v<Attention, attention_block<Mode, Backend, T>> {
    attention_type attention(engine, comm, w.attention, o.attention);
    if constexpr (std::is_constructible_v<Ffn, typename Backend::engine&,
                                          typename Backend::communicator&,
                                          mlp_weights<weight_t<Backend, T>>>)
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
    ops_.add(y, read_only(h));
  }

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

/// A DeepSeek-V2/V3-style decoder layer: MLA attention and `Ffn` — a SwiGLU MLP (the first
/// `first_k_dense_replace` layers) or a mixture of routed and shared experts.
template <block_mode Mode, class Ffn, backend_with_ops Backend, class T = float>
using mla_layer = decoder_layer<Mode, Ffn, Backend, T, mla_attention<Backend, T, Mode>>;

}  // namespace tpx::inline v0::layer
