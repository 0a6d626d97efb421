#pragma once
/// \file
/// Presets by Hugging Face `model_type`: each model's tensors (names and shapes derived from the
/// config.json dims, as its module structure lays them out) and its default tensor-parallel plan,
/// so a plan can be resolved from config.json alone.
///
/// Dense decoder families so far: llama, mistral, qwen2 (q/k/v biases), qwen3 (per-head q/k
/// norms), gemma2 (four norms per layer, tied embeddings), phi3 (fused qkv_proj and
/// gate_up_proj, which tpx splits packed — q|k|v in whole heads, gate|up block by block — where
/// Hugging Face's own phi3 plan gathers them whole). Mixture-of-experts families (qwen3_moe,
/// mixtral, deepseek_v3, gpt_oss) are still to come.

#include <algorithm>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/plan/model_config.hpp"
#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::plan {

/// One tensor of a model: its full name in the checkpoint and its shape.
struct tensor_decl {
  std::string name;
  std::vector<index_t> shape;
  /// For a fused tensor, the blocks of its fused dim (q|k|v in heads, gate|up); else empty.
  std::vector<shard::block> blocks = {};
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
  nlohmann::json plan;               ///< in the HF layout (`base_model_tp_plan`, `lm_tp_plan`)
  std::function<std::vector<tensor_decl>(const model_config&)> tensors;
};

namespace detail {

/// Options of the llama-like dense decoder layout.
struct dense_layout {
  bool qkv_bias = false;       ///< qwen2
  bool qk_norm = false;        ///< qwen3: per-head RMS norms of q and k
  bool sandwich_norm = false;  ///< gemma2: pre- and post-feedforward norms as well
  bool fused = false;          ///< phi3: qkv_proj and gate_up_proj
  bool tie_default = false;
};

inline std::vector<tensor_decl> dense_decoder(const model_config& c, dense_layout o) {
  const index_t h = c.hidden_size, d = c.head_dim, q = c.n_heads * d, kv = c.n_kv_heads * d,
                i = c.intermediate_size;
  std::vector<tensor_decl> t{{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {h}});
    if (o.fused) {
      t.push_back({p + "self_attn.qkv_proj.weight", {q + 2 * kv, h}, {{q, d}, {kv, d}, {kv, d}}});
    } else {
      for (const auto& [name, rows] :
           {std::pair<const char*, index_t>{"q_proj", q}, {"k_proj", kv}, {"v_proj", kv}}) {
        t.push_back({p + "self_attn." + name + ".weight", {rows, h}});
        if (o.qkv_bias) t.push_back({p + "self_attn." + name + ".bias", {rows}});
      }
    }
    if (o.qk_norm) {
      t.push_back({p + "self_attn.q_norm.weight", {d}});
      t.push_back({p + "self_attn.k_norm.weight", {d}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    if (o.sandwich_norm) {
      t.push_back({p + "pre_feedforward_layernorm.weight", {h}});
      t.push_back({p + "post_feedforward_layernorm.weight", {h}});
    }
    if (o.fused) {
      t.push_back({p + "mlp.gate_up_proj.weight", {2 * i, h}, {{i, 1}, {i, 1}}});
    } else {
      t.push_back({p + "mlp.gate_proj.weight", {i, h}});
      t.push_back({p + "mlp.up_proj.weight", {i, h}});
    }
    t.push_back({p + "mlp.down_proj.weight", {h, i}});
  }
  t.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings.value_or(o.tie_default))
    t.push_back({"lm_head.weight", {c.vocab_size, h}});
  return t;
}

inline nlohmann::json dense_plan(dense_layout o) {
  nlohmann::json base = nlohmann::json::object();
  if (o.fused) {
    base["layers.*.self_attn.qkv_proj"] = "packed_colwise";
  } else {
    base["layers.*.self_attn.q_proj"] = "colwise";
    base["layers.*.self_attn.k_proj"] = "colwise";
    base["layers.*.self_attn.v_proj"] = "colwise";
  }
  base["layers.*.self_attn.o_proj"] = "rowwise";
  if (o.fused) {
    base["layers.*.mlp.gate_up_proj"] = "packed_colwise";
  } else {
    base["layers.*.mlp.gate_proj"] = "colwise";
    base["layers.*.mlp.up_proj"] = "colwise";
  }
  base["layers.*.mlp.down_proj"] = "rowwise";
  if (o.qk_norm) {
    base["layers.*.self_attn.q_norm"] = "replicated_with_grad_allreduce";
    base["layers.*.self_attn.k_norm"] = "replicated_with_grad_allreduce";
  }
  return {{"base_model_tp_plan", base}, {"lm_tp_plan", {{"lm_head", "colwise_gather_output"}}}};
}

inline preset dense_preset(std::string type, dense_layout o) {
  preset p;
  p.model_type = std::move(type);
  p.tie_word_embeddings = o.tie_default;
  p.plan = dense_plan(o);
  p.tensors = [o](const model_config& c) { return dense_decoder(c, o); };
  return p;
}

}  // namespace detail

/// Every preset, by model type.
inline const std::vector<preset>& presets() {
  static const std::vector<preset> all{
      detail::dense_preset("llama", {}),
      detail::dense_preset("mistral", {}),
      detail::dense_preset("qwen2", {.qkv_bias = true}),
      detail::dense_preset("qwen3", {.qk_norm = true}),
      detail::dense_preset("gemma2", {.sandwich_norm = true, .tie_default = true}),
      detail::dense_preset("phi3", {.fused = true}),
  };
  return all;
}

/// The preset of `model_type`, or nullptr.
inline const preset* find_preset(std::string_view model_type) {
  for (const preset& p : presets())
    if (p.model_type == model_type) return &p;
  return nullptr;
}

}  // namespace tpx::inline v0::plan
