#pragma once
/// \file
/// How `causal_lm` builds a rank's decoder layers from a checkpoint: the layer types a model can
/// hold (`decoder_layers`), a reader that takes each tensor's shard at the placement the layer
/// gives and counts the bytes (`shard_reader`), and `build_layer`, which reads one layer's
/// tensors and composes its blocks — attention (GQA with q/k norms when the checkpoint has them,
/// or MLA), then the SwiGLU MLP or the MoE (router, experts TP or EP, a shared expert).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tpx/io/assembled.hpp"
#include "tpx/layer/decoder.hpp"
#include "tpx/model/config.hpp"
#include "tpx/model/layout.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/replicate.hpp"

namespace tpx::inline v0::model {

struct options {
  /// Expert parallelism: 1 (every rank holds every expert's slice), or the group size (whole
  /// experts, E / ep per rank).
  int ep = 1;
  /// Called on the rank's own thread after each tensor it reads, with the bytes it has read so
  /// far (a progress line while a large checkpoint loads); empty: nothing is called.
  std::function<void(std::uint64_t bytes_read)> on_read = {};
};

namespace detail {

/// The decoder layers of a model in block mode `Mode`: dense (Llama), MoE with TP experts, MoE
/// with EP experts, and the same three over MLA attention (DeepSeek).
template <layer::block_mode Mode, layer::backend_with_ops Backend, class T>
struct decoder_layers {
  using ep_style = style::moe_expert_parallel<layer::block_styles<Mode>::sp>;
  using dense = layer::llama_layer<Mode, Backend, T>;
  using moe_tp = layer::mixtral_layer<Mode, Backend, T>;
  using moe_ep = layer::mixtral_layer<Mode, Backend, T, ep_style>;
  using mla_dense = layer::mla_layer<Mode, layer::swiglu_mlp<Mode, Backend, T>, Backend, T>;
  using mla_moe_tp = layer::mla_layer<Mode, typename moe_tp::ffn_type, Backend, T>;
  using mla_moe_ep = layer::mla_layer<Mode, typename moe_ep::ffn_type, Backend, T>;
  using any = std::variant<dense, moe_tp, moe_ep, mla_dense, mla_moe_tp, mla_moe_ep>;
};

/// A parameter every rank holds whole (the router, per-head q/k norms): style::replicate<>'s.
inline shard::placement whole(const io::assembled_tensor& t, int tp) {
  return style::placement<style::replicate<>>({t.name, t.shape}, tp);
}

/// The experts of layer `l` of a model of config `c`.
inline layer::experts_options experts_options(const config& c, const layer_layout& l) {
  return {.name = l.moe_prefix,
          .n_experts = c.dims.n_experts,
          .hidden = c.dims.hidden_size,
          .inter = c.dims.moe_intermediate_size,
          .top_k = c.dims.experts_per_token,
          .shared_inter = c.shared_inter};
}

/// The MLA attention of a model of config `c` (`name`: "model.layers.N.self_attn").
inline layer::mla_options mla_options(const config& c, std::string name) {
  const plan::model_config& d = c.dims;
  return {.name = std::move(name),
          .hidden = d.hidden_size,
          .n_heads = d.n_heads,
          .q_lora_rank = d.q_lora_rank,
          .kv_lora_rank = d.kv_lora_rank,
          .qk_nope_head_dim = d.qk_nope_head_dim,
          .qk_rope_head_dim = d.qk_rope_head_dim,
          .v_head_dim = d.v_head_dim,
          .rope_interleave = c.rope_interleave,
          .rope_theta = c.rope_theta,
          .inv_freq = c.inv_freq,
          .rope_scale = c.rope_attention_factor,
          .scale_factor = c.softmax_scale_factor};
}

/// Reads rank `rank`'s block of assembled tensors, as T (or as U: a weight held narrower),
/// counting the bytes read and remembering each file tensor's dtype and shape (to write the
/// model back).
template <class T>
class shard_reader {
 public:
  explicit shard_reader(int rank, std::function<void(std::uint64_t)> on_read = {})
      : rank_(rank), on_read_(std::move(on_read)) {}

  template <class U = T>
  io::block<U> read(const io::checkpoint& ck, const io::assembled_tensor& t,
                    const shard::placement& p) {
    for (const io::tensor_part& part : t.parts)
      if (ck.contains(part.name))
        files_[part.name] = {ck.info(part.name).dtype, ck.info(part.name).shape};
    io::block<U> v = io::read<U>(ck, t, p, rank_, &bytes_);
    if (on_read_) on_read_(bytes_);
    return v;
  }
  /// An optional tensor (a bias): empty when the checkpoint has none.
  io::block<T> read(const io::checkpoint& ck, const std::optional<io::assembled_tensor>& t,
                    const shard::placement& p) {
    return t ? read(ck, *t, p) : io::block<T>{};
  }

  std::uint64_t bytes_read() const noexcept { return bytes_; }
  /// The file dtype and shape of checkpoint tensor `name` (one this reader read).
  const std::pair<io::file_dtype, std::vector<index_t>>& file_tensor(
      const std::string& name) const {
    return files_.at(name);
  }

 private:
  int rank_;
  std::function<void(std::uint64_t)> on_read_;
  std::uint64_t bytes_ = 0;
  std::map<std::string, std::pair<io::file_dtype, std::vector<index_t>>> files_;
};

/// `v` as a row-major [· × cols] matrix.
template <class T, class A>
matrix_view<const T> as_matrix(const std::vector<T, A>& v, index_t cols) {
  return make_matrix<const T>(v.data(), cols == 0 ? 0 : static_cast<index_t>(v.size()) / cols,
                              cols);
}

/// Layer `l` (the `index`-th) of a model of config `c`, this rank's shards read from `ck`.
template <layer::block_mode Mode, layer::backend_with_ops Backend, class T>
typename decoder_layers<Mode, Backend, T>::any build_layer(typename Backend::engine& engine,
                                                           typename Backend::communicator& comm,
                                                           const config& c, const options& o,
                                                           const io::checkpoint& ck,
                                                           const layer_layout& l, index_t index,
                                                           shard_reader<T>& reader) {
  using layers = decoder_layers<Mode, Backend, T>;
  using W = layer::weight_t<Backend, T>;  // what the GEMM weights are held as
  using norm_type = layer::rms_norm<typename layer::block_styles<Mode>::norm, Backend, T>;
  const int tp = comm.size(), rank = comm.rank();
  const index_t h = c.dims.hidden_size;
  const std::string an = l.prefix + "self_attn";
  const io::block<T> n1 = reader.read(ck, l.input_norm,
                                      norm_type::weight_placement(l.input_norm.name, h, tp)),
                     n2 = reader.read(ck, l.post_norm,
                                      norm_type::weight_placement(l.post_norm.name, h, tp));
  const double eps = c.rms_norm_eps;

  // The feed-forward — a dense SwiGLU MLP (layer type Dense), or the router and experts (Tp or
  // Ep) with their shared expert — and the layer around `attention`.
  const auto compose = [&]<class Dense, class Tp, class Ep>(
                           auto&& attention, std::type_identity<Dense>, std::type_identity<Tp>,
                           std::type_identity<Ep>) -> typename layers::any {
    if (l.gate_up) {
      using mlp_type = typename Dense::ffn_type;
      using gu_t = typename mlp_type::gate_up_type;
      using dn_t = typename mlp_type::down_type;
      const index_t i = c.dims.intermediate_size;
      const std::string mn = l.prefix + "mlp";
      const layer::linear_options go = mlp_type::gate_up_options(i, h, mn),
                                  dno = mlp_type::down_options(i, h, mn);
      const io::block<W> gu = reader.template read<W>(ck, *l.gate_up,
                                                      gu_t::weight_placement(go, tp)),
                         dn = reader.template read<W>(ck, *l.down, dn_t::weight_placement(dno, tp));
      const io::block<T> gu_b = reader.read(ck, l.gate_up_bias, gu_t::bias_placement(go, tp)),
                         dn_b = reader.read(ck, l.down_bias, dn_t::bias_placement(dno, tp));
      mlp_type mlp(shard::from_shard, engine, comm, i, as_matrix(gu, h), gu_b,
                   as_matrix(dn, dn_t::weight_placement(dno, tp).local_shape(rank)[1]), dn_b, mn);
      return typename layers::any(std::in_place_type<Dense>, comm, n1, n2, eps,
                                  std::move(attention), std::move(mlp));
    }
    const io::block<W> router = reader.template read<W>(ck, *l.router, whole(*l.router, tp));
    ops::routing_options ro{.name = l.moe_prefix + ".gate",
                            .n_experts = c.dims.n_experts,
                            .top_k = c.dims.experts_per_token,
                            .score = c.router_score,
                            .renormalize = c.norm_topk_prob,
                            .scale = c.routed_scaling_factor,
                            .n_group = c.n_group,
                            .topk_group = c.topk_group,
                            .group_score = c.group_score};
    if (l.router_bias)
      for (const T b : reader.read(ck, *l.router_bias, whole(*l.router_bias, tp)))
        ro.selection_bias.push_back(static_cast<double>(b));
    const auto make = [&]<class Layer>(std::type_identity<Layer>) {
      using ffn_t = typename Layer::ffn_type;
      using ex_t = typename ffn_t::experts_type;
      const layer::experts_options eo = experts_options(c, l);
      const shard::placement gp = ex_t::gate_up_placement(eo, tp),
                             dp = ex_t::down_placement(eo, tp);
      const io::block<W> gu = reader.template read<W>(ck, *l.experts_gate_up, gp),
                         dn = reader.template read<W>(ck, *l.experts_down, dp);
      io::block<W> sgu, sdn;
      index_t shared_rows = 0;
      if (l.shared_gate_up) {
        sgu =
            reader.template read<W>(ck, *l.shared_gate_up, ex_t::shared_gate_up_placement(eo, tp));
        sdn = reader.template read<W>(ck, *l.shared_down, ex_t::shared_down_placement(eo, tp));
        shared_rows = static_cast<index_t>(sgu.size()) / h;
      }
      const std::vector<index_t> gs = gp.local_shape(rank), ds = dp.local_shape(rank);
      ex_t ex(shard::from_shard, engine, comm,
              tensor_view<const W, 3>(gu.data(), extents<3>{{gs[0], gs[1], gs[2]}}),
              tensor_view<const W, 3>(dn.data(), extents<3>{{ds[0], ds[1], ds[2]}}),
              make_matrix<const W>(sgu.data(), shared_rows, sgu.empty() ? 0 : h),
              make_matrix<const W>(sdn.data(), sdn.empty() ? 0 : h,
                                   sdn.empty() ? 0 : static_cast<index_t>(sdn.size()) / h),
              eo);
      if (l.shared_gate)
        ex.set_shared_gate(
            as_matrix(reader.template read<W>(ck, *l.shared_gate, whole(*l.shared_gate, tp)), h));
      ffn_t ffn(engine, comm, as_matrix(router, h), ro, std::move(ex));
      return typename layers::any(std::in_place_type<Layer>, comm, n1, n2, eps,
                                  std::move(attention), std::move(ffn));
    };
    return o.ep > 1 ? make(std::type_identity<Ep>{}) : make(std::type_identity<Tp>{});
  };

  if (l.mla) {
    using mla_t = layer::mla_attention<Backend, T, Mode>;
    using column = typename mla_t::column;
    using row = typename mla_t::row;
    const layer::mla_options mo = mla_options(c, an);
    const mla_layout& m = *l.mla;
    const layer::linear_options qo = mla_t::q_options(mo, tp), kvo = mla_t::kv_b_options(mo, tp),
                                oo = mla_t::o_options(mo, tp);
    const auto all = [&](const std::optional<io::assembled_tensor>& t) {
      return t ? reader.read(ck, *t, whole(*t, tp)) : io::block<T>{};
    };
    const io::block<W> q = reader.template read<W>(ck, m.q, column::weight_placement(qo, tp)),
                       kv_a = reader.template read<W>(ck, m.kv_a, whole(m.kv_a, tp)),
                       kv_b =
                           reader.template read<W>(ck, m.kv_b, column::weight_placement(kvo, tp)),
                       out = reader.template read<W>(ck, l.o, row::weight_placement(oo, tp));
    const io::block<W> q_a =
        m.q_a ? reader.template read<W>(ck, *m.q_a, whole(*m.q_a, tp)) : io::block<W>{};
    const io::block<T> q_a_norm = all(m.q_a_norm), q_a_bias = all(m.q_a_bias),
                       kv_a_norm = reader.read(ck, m.kv_a_norm, whole(m.kv_a_norm, tp)),
                       kv_a_bias = all(m.kv_a_bias),
                       o_bias = reader.read(ck, l.o_bias, row::bias_placement(oo, tp));
    const index_t q_in = mo.q_lora_rank == 0 ? h : mo.q_lora_rank;
    layer::mla_weights<T, W> w{
        .q_a_norm = q_a_norm,
        .q_a_bias = q_a_bias,
        .kv_a_proj = as_matrix(kv_a, h),
        .kv_a_norm = kv_a_norm,
        .kv_a_bias = kv_a_bias,
        .kv_b_proj = as_matrix(kv_b, mo.kv_lora_rank),
        .o_proj = as_matrix(out, row::weight_placement(oo, tp).local_shape(rank)[1]),
        .o_bias = o_bias};
    (mo.q_lora_rank == 0 ? w.q_proj : w.q_b_proj) = as_matrix(q, q_in);
    w.q_a_proj = as_matrix(q_a, h);
    return compose(mla_t(shard::from_shard, engine, comm, w, mo),
                   std::type_identity<typename layers::mla_dense>{},
                   std::type_identity<typename layers::mla_moe_tp>{},
                   std::type_identity<typename layers::mla_moe_ep>{});
  } else {
    using attention_type = layer::attention_block<Mode, Backend, T>;
    const layer::attention_config ac{.heads = {.n_heads = c.dims.n_heads,
                                               .n_kv_heads = c.dims.n_kv_heads,
                                               .head_dim = c.dims.head_dim},
                                     .rope_theta = c.rope_theta,
                                     .inv_freq = c.inv_freq,
                                     .rope_scale = c.rope_attention_factor,
                                     .window = c.window_of(index)};
    using qkv_t = typename attention_type::qkv_type;
    using o_t = typename attention_type::o_type;
    const layer::linear_options qo = attention_type::qkv_options(ac, h, tp, an),
                                oo = attention_type::o_options(ac, h, tp, an);
    const io::block<W> qkv = reader.template read<W>(ck, *l.qkv, qkv_t::weight_placement(qo, tp)),
                       out = reader.template read<W>(ck, l.o, o_t::weight_placement(oo, tp));
    const io::block<T> qkv_b = reader.read(ck, l.qkv_bias, qkv_t::bias_placement(qo, tp)),
                       out_b = reader.read(ck, l.o_bias, o_t::bias_placement(oo, tp));
    attention_type attention(shard::from_shard, engine, comm, as_matrix(qkv, h), qkv_b,
                             as_matrix(out, o_t::weight_placement(oo, tp).local_shape(rank)[1]),
                             out_b, ac, an);
    if (l.q_norm)
      attention.set_qk_norm(reader.read(ck, *l.q_norm, whole(*l.q_norm, tp)),
                            reader.read(ck, *l.k_norm, whole(*l.k_norm, tp)), c.rms_norm_eps);
    return compose(std::move(attention), std::type_identity<typename layers::dense>{},
                   std::type_identity<typename layers::moe_tp>{},
                   std::type_identity<typename layers::moe_ep>{});
  }
}

}  // namespace detail

}  // namespace tpx::inline v0::model
