#pragma once
/// \file
/// The defaults of transformers' config classes for the dims a plan reads: what a config.json
/// that omits a key means, per `model_type` (checked against transformers 5.24's config
/// dataclasses).
///
/// A key given as `null` is not omitted: transformers then derives it (no KV-head count: one per
/// query head; no head_dim: hidden_size / num_attention_heads, or DeepSeek's qk_rope_head_dim;
/// `q_lora_rank: null`: a full-rank q_proj), and so does tpx. A key a class derives rather than
/// defaults (llama's and phi3's num_key_value_heads, llama's, mistral's, mixtral's, qwen2's,
/// phi3's and qwen3_moe's head_dim) is absent from its table.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace tpx::inline v0::plan {

/// The defaults of `model_type`'s config class, as a JSON object of config.json keys; an empty
/// object for a type tpx has no table for.
inline const nlohmann::json& config_defaults(std::string_view model_type) {
  static const nlohmann::json all = nlohmann::json::parse(R"({
    "llama": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "intermediate_size": 11008, "vocab_size": 32000},
    "mistral": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000},
    "qwen2": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "intermediate_size": 22016, "vocab_size": 151936},
    "qwen3": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "head_dim": 128, "intermediate_size": 22016,
              "vocab_size": 151936},
    "gemma2": {"hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 9216,
               "vocab_size": 256000},
    "phi3": {"hidden_size": 3072, "num_hidden_layers": 32, "num_attention_heads": 32,
             "intermediate_size": 8192, "vocab_size": 32064},
    "mixtral": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "num_local_experts": 8,
                "num_experts_per_tok": 2, "vocab_size": 32000},
    "qwen3_moe": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
                  "num_key_value_heads": 4, "intermediate_size": 6144,
                  "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                  "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936},
    "deepseek_v3": {"hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
                    "num_key_value_heads": 128, "intermediate_size": 18432,
                    "moe_intermediate_size": 2048, "n_routed_experts": 256,
                    "num_experts_per_tok": 8, "n_shared_experts": 1, "first_k_dense_replace": 3,
                    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                    "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280},
    "gpt_oss": {"hidden_size": 2880, "num_hidden_layers": 36, "num_attention_heads": 64,
                "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880,
                "num_local_experts": 128, "num_experts_per_tok": 4, "vocab_size": 201088}
  })");
  static const nlohmann::json none = nlohmann::json::object();
  const auto it = all.find(std::string(model_type));
  return it == all.end() ? none : *it;
}

}  // namespace tpx::inline v0::plan
