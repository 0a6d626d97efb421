#pragma once
/// \file
/// Presets by Hugging Face `model_type`: each model's tensors (names and shapes derived from the
/// config.json dims, as its module structure lays them out) and its default tensor-parallel plan,
/// so a plan can be resolved from config.json alone.
///
/// Dense decoder families so far: llama, mistral, qwen2 (q/k/v biases), qwen3 (per-head q/k
/// norms). Mixture-of-experts families (qwen3_moe, mixtral, deepseek_v3, gpt_oss) and phi3,
/// gemma2 are still to come.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/plan/model_config.hpp"

namespace tpx::inline v0::plan {

/// One tensor of a model: its full name in the checkpoint and its shape.
struct tensor_decl {
  std::string name;
  std::vector<index_t> shape;
  friend bool operator==(const tensor_decl&, const tensor_decl&) = default;
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
  bool qkv_bias = false;  ///< qwen2
  bool qk_norm = false;   ///< qwen3: per-head RMS norms of q and k
};

inline std::vector<tensor_decl> dense_decoder(const model_config& c, dense_layout o,
                                              bool tie_default) {
  const index_t h = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim,
                i = c.intermediate_size;
  std::vector<tensor_decl> t{{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (index_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {h}});
    for (const auto& [name, rows] :
         {std::pair<const char*, index_t>{"q_proj", q}, {"k_proj", kv}, {"v_proj", kv}}) {
      t.push_back({p + "self_attn." + name + ".weight", {rows, h}});
      if (o.qkv_bias) t.push_back({p + "self_attn." + name + ".bias", {rows}});
    }
    if (o.qk_norm) {
      t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {h, q}});
    t.push_back({p + "post_attention_layernorm.weight", {h}});
    t.push_back({p + "mlp.gate_proj.weight", {i, h}});
    t.push_back({p + "mlp.up_proj.weight", {i, h}});
    t.push_back({p + "mlp.down_proj.weight", {h, i}});
  }
  t.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings.value_or(tie_default))
    t.push_back({"lm_head.weight", {c.vocab_size, h}});
  return t;
}

inline nlohmann::json dense_plan(bool qk_norm) {
  nlohmann::json base = {
      {"layers.*.self_attn.q_proj", "colwise"}, {"layers.*.self_attn.k_proj", "colwise"},
      {"layers.*.self_attn.v_proj", "colwise"}, {"layers.*.self_attn.o_proj", "rowwise"},
      {"layers.*.mlp.gate_proj", "colwise"},    {"layers.*.mlp.up_proj", "colwise"},
      {"layers.*.mlp.down_proj", "rowwise"}};
  if (qk_norm) {
    base["layers.*.self_attn.q_norm"] = "replicated_with_grad_allreduce";
    base["layers.*.self_attn.k_norm"] = "replicated_with_grad_allreduce";
  }
  return {{"base_model_tp_plan", base}, {"lm_tp_plan", {{"lm_head", "colwise_gather_output"}}}};
}

inline preset dense_preset(std::string type, dense_layout o) {
  preset p;
  p.model_type = std::move(type);
  p.tie_word_embeddings = false;
  p.plan = dense_plan(o.qk_norm);
  p.tensors = [o](const model_config& c) { return dense_decoder(c, o, false); };
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
