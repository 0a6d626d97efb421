#pragma once
/// \file
/// The model dims a plan needs, read from a Hugging Face `config.json`: hidden size, heads, KV
/// heads, head dim, MLP and expert sizes, vocabulary, layers, tied embeddings, model type.
///
/// Names differ between model families; the first key present wins:
///   experts           num_local_experts (mixtral, gpt_oss), num_experts (qwen*_moe),
///                     n_routed_experts (deepseek)
///   n_kv_heads        num_key_value_heads, else num_attention_heads (multi-head attention)
///   head_dim          head_dim, else hidden_size // num_attention_heads (rounded down, as
///                     transformers' attention derives it; MLA: qk_rope_head_dim)
///   expert MLP size   moe_intermediate_size, else intermediate_size
///   top-k             num_experts_per_tok, else experts_per_token (gpt_oss)
///   dtype             torch_dtype, else dtype; bf16 when neither is given
/// DeepSeek's multi-head latent attention adds q_lora_rank, kv_lora_rank, qk_nope_head_dim,
/// qk_rope_head_dim, v_head_dim; its MoE, n_shared_experts and first_k_dense_replace; Qwen-MoE
/// decides its dense layers by mlp_only_layers and decoder_sparse_step.
/// A key config.json omits takes the default of transformers' config class for the model_type
/// (config_defaults.hpp); a key given as null is derived as above.
/// Multimodal configs keep the language model's dims under `text_config`; it is used when the top
/// level has no `hidden_size`.

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"
#include "tpx/core/json.hpp"
#include "tpx/plan/config_defaults.hpp"

namespace tpx::inline v0::plan {

struct model_config {
  std::string model_type;
  std::vector<std::string> architectures;
  index_t hidden_size = 0;
  index_t num_layers = 0;
  index_t n_heads = 0;
  index_t n_kv_heads = 0;
  index_t head_dim = 0;
  index_t intermediate_size = 0;
  index_t moe_intermediate_size = 0;  ///< 0 when the model has no experts
  index_t n_experts = 0;              ///< routed experts; 0 for a dense model
  index_t experts_per_token = 0;      ///< top-k; 0 for a dense model
  index_t n_shared_experts = 0;       ///< DeepSeek / Qwen shared experts beside the routed ones
  index_t shared_expert_intermediate_size = 0;  ///< Qwen2-MoE: its one (gated) shared expert's I
  index_t first_k_dense_replace = 0;            ///< DeepSeek: the first k layers have a dense MLP
  index_t decoder_sparse_step = 1;              ///< Qwen-MoE: every step-th layer has experts
  std::vector<index_t> mlp_only_layers;         ///< Qwen-MoE: layers with a dense MLP regardless
  index_t q_lora_rank = 0;   ///< DeepSeek MLA; 0: q_proj is one full-rank projection
  index_t kv_lora_rank = 0;  ///< DeepSeek MLA; 0: not MLA
  index_t qk_nope_head_dim = 0;
  index_t qk_rope_head_dim = 0;
  index_t v_head_dim = 0;
  index_t vocab_size = 0;
  std::string dtype = "bfloat16";  ///< the checkpoint's float type, as config.json names it
  /// As config.json gives it; absent, the model class's default applies (a preset knows it).
  std::optional<bool> tie_word_embeddings;

  bool is_moe() const noexcept { return n_experts > 0; }
  /// Whether layer `n` of a MoE model has a dense MLP instead of experts: DeepSeek's first
  /// first_k_dense_replace layers; Qwen-MoE's mlp_only_layers and the layers between every
  /// decoder_sparse_step-th. Every layer of a dense model.
  bool dense_layer(index_t n) const {
    if (!is_moe()) return true;
    if (model_type.starts_with("deepseek")) return n < first_k_dense_replace;
    if (model_type.starts_with("qwen") && model_type.ends_with("_moe")) {
      if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), n) != mlp_only_layers.end())
        return true;
      return (n + 1) % std::max<index_t>(decoder_sparse_step, 1) != 0;
    }
    return false;
  }
  bool is_mla() const noexcept { return kv_lora_rank > 0; }
  /// Bytes of one element of `dtype` (float32 4, float64 8, 8-bit floats 1, else 2).
  index_t element_bytes() const noexcept {
    if (dtype == "float32") return 4;
    if (dtype == "float64") return 8;
    if (dtype.starts_with("float8")) return 1;
    return 2;
  }
  /// True when the checkpoint's names carry the causal-LM prefix (`model.`): an architecture
  /// ending in "ForCausalLM" or "ForConditionalGeneration", or none given.
  bool causal_lm() const {
    if (architectures.empty()) return true;
    for (const std::string& a : architectures)
      if (a.ends_with("ForCausalLM") || a.ends_with("ForConditionalGeneration")) return true;
    return false;
  }
};

/// The most layers and experts a config may declare.
inline constexpr index_t max_layers = 1 << 16, max_experts = 1 << 16;

/// Reads the dims from a parsed config.json; `what` names it in errors.
inline model_config parse_model_config(const nlohmann::json& top, std::string_view what) {
  expect(top.is_object(), "{}: config.json must be a JSON object", what);
  const nlohmann::json& j =
      !top.contains("hidden_size") && top.contains("text_config") && top["text_config"].is_object()
          ? top["text_config"]
          : top;
  model_config c;
  if (top.contains("model_type")) {
    expect(top["model_type"].is_string(), "{}: \"model_type\" must be a string", what);
    c.model_type = top["model_type"].get<std::string>();
  }
  // Absent keys take the defaults of the config class (config_defaults.hpp); a key given as
  // null is derived, as transformers derives it.
  const nlohmann::json& defaults =
      config_defaults(&j != &top && j.contains("model_type") && j["model_type"].is_string()
                          ? j["model_type"].get_ref<const std::string&>()
                          : c.model_type);
  const auto given = [&](const nlohmann::json& from, const char* k) {
    return from.contains(k) && !from[k].is_null();
  };
  const auto number = [&](std::initializer_list<const char*> keys, bool required) -> index_t {
    const auto read = [&](const nlohmann::json& from, const char* k) {
      const nlohmann::json& v = from[k];
      expect(v.is_number_integer() && v.get<std::int64_t>() >= 0,
             "{}: \"{}\" must be a non-negative whole number, got {}", what, k, json_excerpt(v));
      return v.get<index_t>();
    };
    for (const char* k : keys)
      if (given(j, k)) return read(j, k);
    for (const char* k : keys)
      if (j.contains(k)) return 0;  // null: derived
    for (const char* k : keys)
      if (given(defaults, k)) return read(defaults, k);
    expect(!required, "{}: \"{}\" is missing", what, *keys.begin());
    return 0;
  };
  if (top.contains("architectures") && top["architectures"].is_array())
    for (const nlohmann::json& a : top["architectures"])
      if (a.is_string()) c.architectures.push_back(a.get<std::string>());
  c.hidden_size = number({"hidden_size"}, true);
  c.num_layers = number({"num_hidden_layers"}, true);
  c.n_heads = number({"num_attention_heads"}, true);
  c.n_kv_heads = number({"num_key_value_heads"}, false);
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
  c.q_lora_rank = number({"q_lora_rank"}, false);
  c.kv_lora_rank = number({"kv_lora_rank"}, false);
  c.qk_nope_head_dim = number({"qk_nope_head_dim"}, false);
  c.qk_rope_head_dim = number({"qk_rope_head_dim"}, false);
  c.v_head_dim = number({"v_head_dim"}, false);
  c.head_dim = number({"head_dim"}, false);
  if (c.head_dim == 0 && c.is_mla())
    c.head_dim = c.qk_rope_head_dim;  // as DeepSeek's class sets it
  if (c.head_dim == 0) {  // as transformers' attention modules derive it: hidden // heads
    expect(c.n_heads > 0 && c.hidden_size >= c.n_heads,
           "{}: no \"head_dim\", and hidden_size {} over num_attention_heads {} gives no head",
           what, c.hidden_size, c.n_heads);
    c.head_dim = c.hidden_size / c.n_heads;
  }
  c.intermediate_size = number({"intermediate_size"}, false);
  c.n_experts = number({"num_local_experts", "num_experts", "n_routed_experts"}, false);
  c.moe_intermediate_size = number({"moe_intermediate_size"}, false);
  if (c.is_moe() && c.moe_intermediate_size == 0) c.moe_intermediate_size = c.intermediate_size;
  c.experts_per_token = number({"num_experts_per_tok", "experts_per_token"}, false);
  c.n_shared_experts = number({"n_shared_experts"}, false);
  c.shared_expert_intermediate_size = number({"shared_expert_intermediate_size"}, false);
  c.first_k_dense_replace = number({"first_k_dense_replace"}, false);
  if (given(j, "decoder_sparse_step")) {  // the classes' default is 1, as here
    c.decoder_sparse_step = number({"decoder_sparse_step"}, false);
    expect(c.decoder_sparse_step >= 1, "{}: \"decoder_sparse_step\" must be at least 1", what);
  }
  if (given(j, "mlp_only_layers")) {
    expect(j["mlp_only_layers"].is_array(),
           "{}: \"mlp_only_layers\" must be a list of layer numbers", what);
    for (const nlohmann::json& v : j["mlp_only_layers"]) {
      expect(v.is_number_integer() && v.get<std::int64_t>() >= 0,
             "{}: \"mlp_only_layers\" must hold layer numbers, got {}", what, json_excerpt(v));
      c.mlp_only_layers.push_back(v.get<index_t>());
    }
  }
  c.vocab_size = number({"vocab_size"}, true);
  for (const char* k : {"torch_dtype", "dtype"})
    if (j.contains(k) && !j[k].is_null()) {
      expect(j[k].is_string(), "{}: \"{}\" must be a string such as \"bfloat16\", got {}", what, k,
             json_excerpt(j[k]));
      c.dtype = j[k].get<std::string>();
      break;
    }
  if (c.is_mla())
    expect(c.qk_nope_head_dim + c.qk_rope_head_dim > 0 && c.v_head_dim > 0,
           "{}: kv_lora_rank {} (multi-head latent attention) needs qk_nope_head_dim or "
           "qk_rope_head_dim, and v_head_dim",
           what, c.kv_lora_rank);
  const nlohmann::json* tie = top.contains("tie_word_embeddings") ? &top.at("tie_word_embeddings")
                              : j.contains("tie_word_embeddings") ? &j.at("tie_word_embeddings")
                                                                  : nullptr;
  if (tie != nullptr) {
    expect(tie->is_boolean(), "{}: \"tie_word_embeddings\" must be true or false", what);
    c.tie_word_embeddings = tie->get<bool>();
  }
  // Bounds far past any model, so that a hostile config cannot make tpx list 2^40 layers.
  expect(c.num_layers <= max_layers, "{}: \"num_hidden_layers\" is {}, more than the {} tpx plans",
         what, c.num_layers, max_layers);
  expect(c.n_experts <= max_experts, "{}: the expert count is {}, more than the {} tpx plans", what,
         c.n_experts, max_experts);
  expect(c.n_heads >= 1 && c.n_kv_heads >= 1 && c.n_heads % c.n_kv_heads == 0,
         "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", what, c.n_heads,
         c.n_kv_heads);
  return c;
}

}  // namespace tpx::inline v0::plan
