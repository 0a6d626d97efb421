#pragma once
/// \file
/// Presets by Hugging Face `model_type`: each model's tensors (names and shapes derived from the
/// config.json dims, as its module structure lays them out) and its default tensor-parallel plan,
/// so a plan can be resolved from config.json alone.
///
/// Tensor names are the ones the published checkpoints store (safetensors headers), so a preset
/// resolves a hub checkpoint as it is on disk.
///
/// Dense decoders: llama, mistral, qwen2 (q/k/v biases), qwen3 (per-head q/k norms), gemma2 (four
/// norms per layer, tied embeddings), phi3 (fused qkv_proj and gate_up_proj, which tpx splits
/// packed — q|k|v in whole heads, gate|up block by block — where Hugging Face's own phi3 plan
/// gathers them whole).
///
/// Mixtures of experts (experts stored one by one, as on the hub; transformers v5 fuses them into
/// `experts.gate_up_proj [E, 2I, H]` at load time, which is what its own plans name):
///   mixtral      block_sparse_moe.gate [E, H]; block_sparse_moe.experts.N.w1|w3 [I, H], w2 [H, I]
///   qwen3_moe    mlp.gate [E, H]; mlp.experts.N.gate_proj|up_proj [I, H], down_proj [H, I];
///                q/k norms; a dense mlp.gate_proj|up_proj|down_proj in the layers that
///                mlp_only_layers and decoder_sparse_step make dense
///   qwen2_moe    qwen3_moe's experts (no q/k norms; q/k/v biases), and a shared expert
///                mlp.shared_expert.gate_proj|up_proj|down_proj with mlp.shared_expert_gate [1, H]
///   deepseek_v3  multi-head latent attention (q_a_proj, q_b_proj split in whole heads,
///                kv_a_proj_with_mqa replicated as mla_kv_a_proj, kv_b_proj in heads, o_proj
///                rowwise in heads); dense MLPs in the first first_k_dense_replace layers, then
///                mlp.gate (+ e_score_correction_bias), routed experts and shared_experts. The FP8
///                scale tensors and the multi-token-prediction layer of the released checkpoint
///                are not declared.
///   deepseek_v2  deepseek_v3's tensors without the e_score_correction_bias
///   gpt_oss      q/k/v/o with biases, per-head attention sinks (split with the query heads),
///                mlp.router [E, H] + bias, experts fused and stored [E, in, out]:
///                gate_up_proj [E, H, 2I] with gate and up interleaved column by column (split in
///                pairs), down_proj [E, I, H], and their biases — the bf16 layout; the MXFP4
///                blocks/scales of the released checkpoint are not declared. Hugging Face ships no
///                TP plan for these experts; tpx's preset shards them anyway.
/// The MoE plans are written as transformers 5.24 writes its own: keys name the fused in-memory
/// experts (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`, router `mlp.gate`), which plan
/// resolution maps onto the per-expert tensors the checkpoint stores. Every MoE preset also has
/// an EP plan (the experts module `ep_dispatch_experts`, expert tensors `grouped_gemm`: whole
/// experts per rank), which overlays the TP plan when `ep > 1`. Every preset's SP plan makes the
/// decoder's norms `sequence_parallel` (they run on sequence shards under `sp`).

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/plan/families.hpp"
#include "tpx/plan/model_config.hpp"
#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::plan {

/// One tensor of a model: its full name in the checkpoint and its shape.
struct tensor_decl {
  std::string name;
  std::vector<index_t> shape;
  /// The blocks of the dim its style splits: fused parts (q|k|v in heads, gate|up), or one block
  /// in whole units (heads of head_dim); empty: split element by element.
  std::vector<shard::block> blocks = {};
  /// Stored `[…, in, out]` (x·W, as gpt_oss stores its experts) rather than `[…, out, in]`.
  bool in_out = false;
  index_t element_bytes = 2;  ///< bytes of one element (bf16 unless the config or file says)
  friend bool operator==(const tensor_decl& a, const tensor_decl& b) {
    return a.name == b.name && a.shape == b.shape && a.blocks.size() == b.blocks.size() &&
           std::equal(a.blocks.begin(), a.blocks.end(), b.blocks.begin(),
                      [](const shard::block& x, const shard::block& y) {
                        return x.size == y.size && x.unit == y.unit;
                      });
  }
};

struct preset {
  std::string model_type;
  bool tie_word_embeddings = false;  ///< the model class's default
  /// The plan for a config, in the HF layout (`base_model_tp_plan`, `base_model_ep_plan`,
  /// `lm_tp_plan`).
  std::function<nlohmann::json(const model_config&)> plan;
  std::function<std::vector<tensor_decl>(const model_config&)> tensors;
};

namespace detail {

/// Collects a model's tensors with the config's element size.
struct tensor_list {
  const model_config& c;
  std::vector<tensor_decl> t;

  void add(std::string name, std::vector<index_t> shape, std::vector<shard::block> blocks = {},
           bool in_out = false) {
    t.push_back({std::move(name), std::move(shape), std::move(blocks), in_out, c.element_bytes()});
  }
};

inline void attention(tensor_list& l, const std::string& p, const layer_traits& o) {
  const model_config& c = l.c;
  const index_t h = c.hidden_size, d = c.head_dim, q = c.n_heads * d, kv = c.n_kv_heads * d;
  if (o.mla) {
    expect(c.is_mla(),
           "model type '{}' uses multi-head latent attention, but config.json gives no "
           "kv_lora_rank",
           c.model_type);
    // DeepSeek's multi-head latent attention: low-rank q and kv, split in whole heads after the
    // up-projections.
    const index_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
    if (c.q_lora_rank > 0) {
      l.add(p + "self_attn.q_a_proj.weight", {c.q_lora_rank, h});
      l.add(p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank});
      l.add(p + "self_attn.q_b_proj.weight", {c.n_heads * qk, c.q_lora_rank},
            {{c.n_heads * qk, qk}});
    } else {
      l.add(p + "self_attn.q_proj.weight", {c.n_heads * qk, h}, {{c.n_heads * qk, qk}});
    }
    l.add(p + "self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, h});
    l.add(p + "self_attn.kv_a_layernorm.weight", {c.kv_lora_rank});
    const index_t kvh = c.qk_nope_head_dim + c.v_head_dim;
    l.add(p + "self_attn.kv_b_proj.weight", {c.n_heads * kvh, c.kv_lora_rank},
          {{c.n_heads * kvh, kvh}});
    l.add(p + "self_attn.o_proj.weight", {h, c.n_heads * c.v_head_dim},
          {{c.n_heads * c.v_head_dim, c.v_head_dim}});
    return;
  }
  if (o.fused) {
    l.add(p + "self_attn.qkv_proj.weight", {q + 2 * kv, h}, {{q, d}, {kv, d}, {kv, d}});
  } else {
    for (const auto& [name, rows] :
         {std::pair<const char*, index_t>{"q_proj", q}, {"k_proj", kv}, {"v_proj", kv}}) {
      l.add(p + "self_attn." + name + ".weight", {rows, h});
      if (o.qkv_bias) l.add(p + "self_attn." + name + ".bias", {rows});
    }
  }
  if (o.qk_norm) {
    l.add(p + "self_attn.q_norm.weight", {d});
    l.add(p + "self_attn.k_norm.weight", {d});
  }
  l.add(p + "self_attn.o_proj.weight", {h, q});
  if (o.o_bias) l.add(p + "self_attn.o_proj.bias", {h});
  if (o.sinks) l.add(p + "self_attn.sinks", {c.n_heads});
}

/// gate, up and down projections of `size` under `p` (`…mlp.`, `…shared_experts.`, an expert).
inline void gated_mlp(tensor_list& l, const std::string& p, index_t size, bool fused = false,
                      const char* gate = "gate_proj", const char* up = "up_proj",
                      const char* down = "down_proj") {
  const index_t h = l.c.hidden_size;
  if (fused) {
    l.add(p + "gate_up_proj.weight", {2 * size, h}, {{size, 1}, {size, 1}});
  } else {
    l.add(p + gate + ".weight", {size, h});
    l.add(p + up + ".weight", {size, h});
  }
  l.add(p + down + ".weight", {h, size});
}

inline void moe(tensor_list& l, const std::string& p, const layer_traits& o) {
  const moe_layout m = o.moe;
  const model_config& c = l.c;
  const index_t h = c.hidden_size, e = c.n_experts, i = c.moe_intermediate_size;
  const auto each_expert = [&](const std::string& prefix, const char* g, const char* u,
                               const char* d) {
    for (index_t x = 0; x < e; ++x)
      gated_mlp(l, prefix + "experts." + std::to_string(x) + ".", i, false, g, u, d);
  };
  switch (m) {
    case moe_layout::mixtral:
      l.add(p + "block_sparse_moe.gate.weight", {e, h});
      each_expert(p + "block_sparse_moe.", "w1", "w3", "w2");
      break;
    case moe_layout::qwen:
    case moe_layout::deepseek:
      l.add(p + "mlp.gate.weight", {e, h});
      if (o.selection_bias) l.add(p + "mlp.gate.e_score_correction_bias", {e});
      each_expert(p + "mlp.", "gate_proj", "up_proj", "down_proj");
      if (m == moe_layout::deepseek && c.n_shared_experts > 0)
        gated_mlp(l, p + "mlp.shared_experts.", c.n_shared_experts * i);
      if (m == moe_layout::qwen && c.shared_expert_intermediate_size > 0) {  // Qwen2-MoE
        gated_mlp(l, p + "mlp.shared_expert.", c.shared_expert_intermediate_size);
        l.add(p + "mlp.shared_expert_gate.weight", {1, h});
      }
      break;
    case moe_layout::gpt_oss:
      l.add(p + "mlp.router.weight", {e, h});
      l.add(p + "mlp.router.bias", {e});
      // gate and up interleaved column by column: split in pairs.
      l.add(p + "mlp.experts.gate_up_proj", {e, h, 2 * i}, {{2 * i, 2}}, true);
      l.add(p + "mlp.experts.gate_up_proj_bias", {e, 2 * i}, {{2 * i, 2}});
      l.add(p + "mlp.experts.down_proj", {e, i, h}, {}, true);
      l.add(p + "mlp.experts.down_proj_bias", {e, h});
      break;
    case moe_layout::none:
      break;
  }
}

inline std::vector<tensor_decl> decoder(const model_config& c, const layer_traits& o) {
  const index_t h = c.hidden_size;
  constexpr index_t max_tensors = 10'000'000;
  expect(c.num_layers * (3 * c.n_experts + 24) <= max_tensors,
         "config: {} layers of {} experts would list more than {} tensors, more than a preset "
         "lists; give the checkpoint (--safetensors) instead",
         c.num_layers, c.n_experts, max_tensors);
  tensor_list l{c, {}};
  l.add("model.embed_tokens.weight", {c.vocab_size, h});
  for (index_t n = 0; n < c.num_layers; ++n) {
    const std::string p = "model.layers." + std::to_string(n) + ".";
    l.add(p + "input_layernorm.weight", {h});
    attention(l, p, o);
    l.add(p + "post_attention_layernorm.weight", {h});
    if (o.sandwich_norm) {
      l.add(p + "pre_feedforward_layernorm.weight", {h});
      l.add(p + "post_feedforward_layernorm.weight", {h});
    }
    if (o.moe == moe_layout::none || c.dense_layer(n))
      gated_mlp(l, p + "mlp.", c.intermediate_size, o.fused);
    else
      moe(l, p, o);
  }
  l.add("model.norm.weight", {h});
  if (!c.tie_word_embeddings.value_or(o.tie_default)) l.add("lm_head.weight", {c.vocab_size, h});
  return std::move(l.t);
}

/// tpx's TP and EP plans for a layout, in Hugging Face's layout.
inline nlohmann::json plan_of(const layer_traits& o, const model_config& c) {
  nlohmann::json tp = nlohmann::json::object(), ep = nlohmann::json::object();
  const std::string a = "layers.*.self_attn.";
  if (o.mla) {
    if (c.q_lora_rank > 0) {
      tp[a + "q_a_proj"] = "replicate";
      tp[a + "q_b_proj"] = "colwise";
    } else {
      tp[a + "q_proj"] = "colwise";
    }
    tp[a + "kv_a_proj_with_mqa"] = "mla_kv_a_proj";
    tp[a + "kv_b_proj"] = "colwise";
  } else if (o.fused) {
    tp[a + "qkv_proj"] = "packed_colwise";
  } else {
    for (const char* n : {"q_proj", "k_proj", "v_proj"}) tp[a + n] = "colwise";
  }
  tp[a + "o_proj"] = "rowwise";
  if (o.qk_norm) {
    tp[a + "q_norm"] = "replicated_with_grad_allreduce";
    tp[a + "k_norm"] = "replicated_with_grad_allreduce";
  }
  if (o.sinks) tp[a + "sinks"] = "colwise";
  const auto mlp = [&](const std::string& p, const char* g, const char* u, const char* d) {
    if (o.fused) {
      tp[p + "gate_up_proj"] = "packed_colwise";
    } else {
      tp[p + g] = "colwise";
      tp[p + u] = "colwise";
    }
    tp[p + d] = "rowwise";
  };
  // Experts as transformers 5.24's plans name them — its fused in-memory experts
  // (`mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I], router `mlp.gate`),
  // onto which plan resolution maps a checkpoint's per-expert tensors: TP inside every expert
  // (gate | up packed, down rowwise), the experts module's output all-reduced once; under EP whole
  // experts per rank, the module's tokens dispatched (ep_dispatch_experts) and the router
  // replicated by the TP rule.
  const auto experts = [&](const std::string& moe) {
    tp[moe + "gate"] = "replicate";
    tp[moe + "experts.gate_up_proj"] = "packed_colwise";
    tp[moe + "experts.down_proj"] = "rowwise";
    tp[moe + "experts"] = "moe_tp_experts";
    ep[moe + "experts"] = "ep_dispatch_experts";
    ep[moe + "experts.gate_up_proj"] = "grouped_gemm";
    ep[moe + "experts.down_proj"] = "grouped_gemm";
  };
  bool any_dense = false;  // a MoE model's dense layers
  for (index_t n = 0; n < c.num_layers; ++n) any_dense = any_dense || c.dense_layer(n);
  switch (o.moe) {
    case moe_layout::none:
      mlp("layers.*.mlp.", "gate_proj", "up_proj", "down_proj");
      break;
    case moe_layout::mixtral:  // block_sparse_moe on disk, mlp in memory
      experts("layers.*.mlp.");
      break;
    case moe_layout::qwen:  // dense layers (mlp_only_layers, decoder_sparse_step) as transformers
      if (any_dense) mlp("layers.*.mlp.", "gate_proj", "up_proj", "down_proj");
      experts("layers.*.mlp.");
      if (c.shared_expert_intermediate_size > 0) {  // Qwen2-MoE's gated shared expert: split as
        // tpx runs it (transformers' own plan leaves it replicated), its gate whole
        mlp("layers.*.mlp.shared_expert.", "gate_proj", "up_proj", "down_proj");
        tp["layers.*.mlp.shared_expert_gate"] = "replicate";
      }
      break;
    case moe_layout::deepseek:
      if (any_dense) mlp("layers.*.mlp.", "gate_proj", "up_proj", "down_proj");
      experts("layers.*.mlp.");  // the router's key covers its e_score_correction_bias
      if (c.n_shared_experts > 0)
        mlp("layers.*.mlp.shared_experts.", "gate_proj", "up_proj", "down_proj");
      break;
    case moe_layout::gpt_oss: {
      const std::string x = "layers.*.mlp.experts.";
      tp["layers.*.mlp.router"] = "replicate";
      tp[x + "gate_up_proj"] = "colwise";  // [E, H, 2I]: the out dim is the last
      tp[x + "gate_up_proj_bias"] = "colwise";
      tp[x + "down_proj"] = "rowwise";  // [E, I, H]: the in dim is dim 1
      tp[x + "down_proj_bias"] = "replicate";
      tp["layers.*.mlp.experts"] = "moe_tp_experts";
      for (const char* n : {"gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"})
        ep[x + n] = "grouped_gemm";
      ep["layers.*.mlp.experts"] = "ep_dispatch_experts";
      break;
    }
  }
  // Under sequence parallelism the decoder's norms run on sequence shards (tpx's layers do so in
  // sequence mode): the SP plan says it.
  nlohmann::json sp = {{"layers.*.input_layernorm", "sequence_parallel"},
                       {"layers.*.post_attention_layernorm", "sequence_parallel"},
                       {"norm", "sequence_parallel"}};
  if (o.sandwich_norm) {
    sp["layers.*.pre_feedforward_layernorm"] = "sequence_parallel";
    sp["layers.*.post_feedforward_layernorm"] = "sequence_parallel";
  }
  nlohmann::json plan = {{"base_model_tp_plan", tp},
                         {"base_model_sp_plan", sp},
                         {"lm_tp_plan", {{"lm_head", "colwise_gather_output"}}}};
  if (!ep.empty()) plan["base_model_ep_plan"] = ep;
  return plan;
}

inline preset make_preset(std::string type, layer_traits o) {
  preset p;
  p.model_type = std::move(type);
  p.tie_word_embeddings = o.tie_default;
  p.plan = [o](const model_config& c) { return plan_of(o, c); };
  p.tensors = [o](const model_config& c) { return decoder(c, o); };
  return p;
}

}  // namespace detail

/// Every preset, by model type: one for each family of plan/families.hpp.
inline const std::vector<preset>& presets() {
  static const std::vector<preset> all = [] {
    std::vector<preset> v;
    for (const model_family& f : all_families)
      v.push_back(detail::make_preset(std::string(f.model_type), f.layers));
    return v;
  }();
  return all;
}

/// The preset of `model_type`, or nullptr.
inline const preset* find_preset(std::string_view model_type) {
  for (const preset& p : presets())
    if (p.model_type == model_type) return &p;
  return nullptr;
}

}  // namespace tpx::inline v0::plan
