#pragma once
/// \file
/// Where a causal LM's tensors are in its checkpoint: each tensor a layer holds, as the
/// checkpoint tensors it is assembled from (io/assembled.hpp), under the names Hugging Face
/// checkpoints use.
///
///   layer holds                        checkpoint stores
///   self_attn.qkv [(nq+2nkv)·d, H]     self_attn.q_proj | k_proj | v_proj  (or a fused qkv_proj)
///   mlp.gate_up [2I, H]                mlp.gate_proj | up_proj              (or a fused
///   gate_up_proj) experts.gate_up [E, 2I, H]         block_sparse_moe.experts.N.w1 | w3, or
///                                      mlp.experts.N.gate_proj | up_proj, or
///                                      mlp.experts.gate_up_proj as it is
///   experts.down [E, H, I]             ….experts.N.w2 / down_proj, or mlp.experts.down_proj
///   router [E, H]                      block_sparse_moe.gate, or mlp.gate
///   router_bias [E]                    mlp.gate.e_score_correction_bias (DeepSeek-V3)
///   shared_gate_up [2Is, H], down      mlp.shared_experts.gate_proj | up_proj, down_proj
///                                      (DeepSeek), mlp.shared_expert.* + shared_expert_gate
///                                      (Qwen2-MoE)
///   MLA (mla_layout)                   self_attn.q_a_proj, q_a_layernorm, q_b_proj (or q_proj),
///                                      kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj as stored
///
/// Names are `model.`-prefixed (a …ForCausalLM checkpoint), the head is `lm_head.weight` unless
/// the embeddings are tied.

#include <optional>

#include <fmt/ranges.h>
#include <string>
#include <vector>

#include "tpx/io/assembled.hpp"
#include "tpx/model/config.hpp"

namespace tpx::inline v0::model {

/// A multi-head latent attention's tensors (DeepSeek; layer/mla_attention.hpp), besides o_proj.
struct mla_layout {
  io::assembled_tensor q = {};  ///< q_proj, or q_b_proj under a q LoRA rank
  /// kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj.
  io::assembled_tensor kv_a = {}, kv_a_norm = {}, kv_b = {};
  /// q_a_proj, q_a_layernorm (under a q LoRA rank).
  std::optional<io::assembled_tensor> q_a = {}, q_a_norm = {};
  std::optional<io::assembled_tensor> q_a_bias = {}, kv_a_bias = {};  ///< under attention_bias
};

struct layer_layout {
  std::string prefix;  ///< "model.layers.3."
  io::assembled_tensor input_norm, post_norm;
  std::optional<io::assembled_tensor> qkv;  ///< absent under MLA
  io::assembled_tensor o;
  std::optional<io::assembled_tensor> qkv_bias, o_bias;
  std::optional<io::assembled_tensor> q_norm, k_norm;  ///< per-head RMSNorm weights (Qwen3)
  std::optional<mla_layout> mla;
  // A dense MLP.
  std::optional<io::assembled_tensor> gate_up, down, gate_up_bias, down_bias;
  // A mixture of experts.
  std::string moe_prefix;  ///< "model.layers.3.block_sparse_moe"
  std::optional<io::assembled_tensor> router, experts_gate_up, experts_down;
  std::optional<io::assembled_tensor> router_bias;  ///< e_score_correction_bias (selection only)
  /// The shared expert: gate|up stacked [2·Is, H], down [H, Is], Qwen2-MoE's gate [1, H].
  std::optional<io::assembled_tensor> shared_gate_up, shared_down, shared_gate;
};

struct layout {
  io::assembled_tensor embed, norm;
  std::optional<io::assembled_tensor> head;  ///< absent: tied to the embedding
  std::vector<layer_layout> layers;

  /// Every assembled tensor, in model order.
  template <class Fn>
  void for_each(Fn&& fn) const {
    fn(embed);
    for (const layer_layout& l : layers) {
      const auto maybe = [&](const std::optional<io::assembled_tensor>& t) {
        if (t) fn(*t);
      };
      fn(l.input_norm);
      maybe(l.qkv);
      maybe(l.qkv_bias);
      if (l.mla) {
        maybe(l.mla->q_a);
        maybe(l.mla->q_a_bias);
        maybe(l.mla->q_a_norm);
        fn(l.mla->q);
        fn(l.mla->kv_a);
        maybe(l.mla->kv_a_bias);
        fn(l.mla->kv_a_norm);
        fn(l.mla->kv_b);
      }
      fn(l.o);
      maybe(l.o_bias);
      maybe(l.q_norm);
      maybe(l.k_norm);
      fn(l.post_norm);
      for (const auto* t :
           {&l.gate_up, &l.gate_up_bias, &l.down, &l.down_bias, &l.router, &l.router_bias,
            &l.experts_gate_up, &l.experts_down, &l.shared_gate_up, &l.shared_down, &l.shared_gate})
        maybe(*t);
    }
    fn(norm);
    if (head) fn(*head);
  }
};

namespace detail {

/// Rows stacked from several checkpoint tensors of `cols` columns (`cols` 0: vectors).
inline io::assembled_tensor stacked(std::string name, index_t cols,
                                    std::initializer_list<std::pair<std::string, index_t>> parts) {
  io::assembled_tensor t{std::move(name), {}, {}};
  index_t rows = 0;
  for (const auto& [part, n] : parts) {
    t.parts.push_back({part, cols > 0 ? std::vector<index_t>{rows, 0} : std::vector<index_t>{rows},
                       cols > 0 ? std::vector<index_t>{n, cols} : std::vector<index_t>{n}});
    rows += n;
  }
  t.shape = cols > 0 ? std::vector<index_t>{rows, cols} : std::vector<index_t>{rows};
  return t;
}

/// A tensor stored fused as `fused`, else stacked from `parts`.
inline io::assembled_tensor fused_or_stacked(
    const io::checkpoint& ck, std::string name, const std::string& fused, index_t cols,
    std::initializer_list<std::pair<std::string, index_t>> parts) {
  if (ck.contains(fused)) {
    io::assembled_tensor t = stacked(std::move(name), cols, parts);
    return io::assembled_tensor::whole(fused, t.shape);
  }
  return stacked(std::move(name), cols, parts);
}

/// The routed experts' [E, 2I, H] and [E, H, I], from per-expert tensors or fused ones.
inline void experts_layout(const config& c, const io::checkpoint& ck, layer_layout& l) {
  const index_t e = c.dims.n_experts, h = c.dims.hidden_size, i = c.dims.moe_intermediate_size;
  const std::string mixtral = l.prefix + "block_sparse_moe.", mlp = l.prefix + "mlp.";
  const bool per_expert_w = ck.contains(mixtral + "experts.0.w1.weight");
  const bool per_expert_proj = ck.contains(mlp + "experts.0.gate_proj.weight");
  const bool fused = ck.contains(mlp + "experts.gate_up_proj");
  const std::string base = per_expert_w ? mixtral : mlp;
  l.moe_prefix = base.substr(0, base.size() - 1);
  l.router = io::assembled_tensor::whole(
      ck.contains(mixtral + "gate.weight") ? mixtral + "gate.weight" : mlp + "gate.weight", {e, h});
  if (c.router_score == ops::scoring::sigmoid)
    l.router_bias = io::assembled_tensor::whole(mlp + "gate.e_score_correction_bias", {e});
  if (const index_t is = c.shared_inter; is > 0) {
    // DeepSeek's shared_experts.*, Qwen2-MoE's shared_expert.* and its shared_expert_gate.
    const std::string s = mlp + (c.shared_expert_gate ? "shared_expert." : "shared_experts.");
    l.shared_gate_up = stacked(s + "gate_up_proj.weight", h,
                               {{s + "gate_proj.weight", is}, {s + "up_proj.weight", is}});
    l.shared_down = io::assembled_tensor::whole(s + "down_proj.weight", {h, is});
    if (c.shared_expert_gate)
      l.shared_gate = io::assembled_tensor::whole(mlp + "shared_expert_gate.weight", {1, h});
  }
  if (fused && !per_expert_w && !per_expert_proj) {
    l.experts_gate_up = io::assembled_tensor::whole(mlp + "experts.gate_up_proj", {e, 2 * i, h});
    l.experts_down = io::assembled_tensor::whole(mlp + "experts.down_proj", {e, h, i});
    return;
  }
  const auto name = [&](index_t x, const char* w, const char* proj) {
    return fmt::format("{}experts.{}.{}.weight", base, x, per_expert_w ? w : proj);
  };
  io::assembled_tensor gu{l.moe_prefix + ".experts.gate_up_proj", {e, 2 * i, h}, {}};
  io::assembled_tensor dn{l.moe_prefix + ".experts.down_proj", {e, h, i}, {}};
  for (index_t x = 0; x < e; ++x) {
    gu.parts.push_back({name(x, "w1", "gate_proj"), {x, 0, 0}, {i, h}});
    gu.parts.push_back({name(x, "w3", "up_proj"), {x, i, 0}, {i, h}});
    dn.parts.push_back({name(x, "w2", "down_proj"), {x, 0, 0}, {h, i}});
  }
  l.experts_gate_up = std::move(gu);
  l.experts_down = std::move(dn);
}

/// Layer `l`'s MLA tensors and o_proj (attention_bias: q_a_proj's, kv_a_proj_with_mqa's and
/// o_proj's biases).
inline void mla_tensors(const config& c, layer_layout& l) {
  const plan::model_config& d = c.dims;
  const std::string a = l.prefix + "self_attn.";
  const index_t h = d.hidden_size, heads = d.n_heads, ql = d.q_lora_rank, lora = d.kv_lora_rank,
                qk = d.qk_nope_head_dim + d.qk_rope_head_dim;
  const auto whole = [](std::string name, std::vector<index_t> shape) {
    return io::assembled_tensor::whole(std::move(name), std::move(shape));
  };
  mla_layout m{
      .q = ql == 0 ? whole(a + "q_proj.weight", {heads * qk, h})
                   : whole(a + "q_b_proj.weight", {heads * qk, ql}),
      .kv_a = whole(a + "kv_a_proj_with_mqa.weight", {lora + d.qk_rope_head_dim, h}),
      .kv_a_norm = whole(a + "kv_a_layernorm.weight", {lora}),
      .kv_b = whole(a + "kv_b_proj.weight", {heads * (d.qk_nope_head_dim + d.v_head_dim), lora})};
  if (ql > 0) {
    m.q_a = whole(a + "q_a_proj.weight", {ql, h});
    m.q_a_norm = whole(a + "q_a_layernorm.weight", {ql});
    if (c.qkv_bias) m.q_a_bias = whole(a + "q_a_proj.bias", {ql});
  }
  if (c.qkv_bias) m.kv_a_bias = whole(a + "kv_a_proj_with_mqa.bias", {lora + d.qk_rope_head_dim});
  l.mla = std::move(m);
  l.o = whole(a + "o_proj.weight", {h, heads * d.v_head_dim});
}

}  // namespace detail

/// The layout of a model of config `c` in the checkpoint `ck` (which tensors exist decides
/// between fused and separate forms; missing tensors are reported when they are read).
inline layout checkpoint_layout(const config& c, const io::checkpoint& ck) {
  expect(c.dims.causal_lm(),
         "{}: the architectures {} are not a causal LM (…ForCausalLM); tpx builds causal LMs",
         c.source, fmt::join(c.dims.architectures, ", "));
  const index_t h = c.dims.hidden_size, d = c.dims.head_dim, nq = c.dims.n_heads * d,
                nkv = c.dims.n_kv_heads * d, v = c.dims.vocab_size;
  layout out{io::assembled_tensor::whole("model.embed_tokens.weight", {v, h}),
             io::assembled_tensor::whole("model.norm.weight", {h}),
             std::nullopt,
             {}};
  if (!c.tie_word_embeddings) out.head = io::assembled_tensor::whole("lm_head.weight", {v, h});
  for (index_t n = 0; n < c.layers(); ++n) {
    layer_layout l;
    l.prefix = fmt::format("model.layers.{}.", n);
    const std::string a = l.prefix + "self_attn.";
    l.input_norm = io::assembled_tensor::whole(l.prefix + "input_layernorm.weight", {h});
    l.post_norm = io::assembled_tensor::whole(l.prefix + "post_attention_layernorm.weight", {h});
    if (c.dims.is_mla()) {
      detail::mla_tensors(c, l);
    } else {
      l.qkv = detail::fused_or_stacked(
          ck, a + "qkv_proj.weight", a + "qkv_proj.weight", h,
          {{a + "q_proj.weight", nq}, {a + "k_proj.weight", nkv}, {a + "v_proj.weight", nkv}});
      l.o = io::assembled_tensor::whole(a + "o_proj.weight", {h, nq});
    }
    if (c.qkv_bias && !c.dims.is_mla())
      l.qkv_bias = detail::fused_or_stacked(
          ck, a + "qkv_proj.bias", a + "qkv_proj.bias", 0,
          {{a + "q_proj.bias", nq}, {a + "k_proj.bias", nkv}, {a + "v_proj.bias", nkv}});
    if (c.o_bias) l.o_bias = io::assembled_tensor::whole(a + "o_proj.bias", {h});
    if (c.qk_norm) {
      l.q_norm = io::assembled_tensor::whole(a + "q_norm.weight", {d});
      l.k_norm = io::assembled_tensor::whole(a + "k_norm.weight", {d});
    }
    if (c.moe_layers[static_cast<std::size_t>(n)]) {
      detail::experts_layout(c, ck, l);
    } else {
      const std::string m = l.prefix + "mlp.";
      const index_t i = c.dims.intermediate_size;
      l.gate_up =
          detail::fused_or_stacked(ck, m + "gate_up_proj.weight", m + "gate_up_proj.weight", h,
                                   {{m + "gate_proj.weight", i}, {m + "up_proj.weight", i}});
      l.down = io::assembled_tensor::whole(m + "down_proj.weight", {h, i});
      if (c.mlp_bias) {
        l.gate_up_bias =
            detail::fused_or_stacked(ck, m + "gate_up_proj.bias", m + "gate_up_proj.bias", 0,
                                     {{m + "gate_proj.bias", i}, {m + "up_proj.bias", i}});
        l.down_bias = io::assembled_tensor::whole(m + "down_proj.bias", {h});
      }
    }
    out.layers.push_back(std::move(l));
  }
  return out;
}

}  // namespace tpx::inline v0::model
