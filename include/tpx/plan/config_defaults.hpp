#pragma once
/// \file
/// The defaults of transformers' config classes for the dims a plan reads: what a config.json
/// that omits a key means, per `model_type` (checked against transformers 5.24's config
/// dataclasses; each family's table is in its file, plan/families/).
///
/// A key given as `null` is not omitted: transformers then derives it (no KV-head count: one per
/// query head; no head_dim: hidden_size / num_attention_heads, or DeepSeek's qk_rope_head_dim;
/// `q_lora_rank: null`: a full-rank q_proj), and so does tpx. A key a class derives rather than
/// defaults (llama's and phi3's num_key_value_heads, llama's, mistral's, mixtral's, qwen2's,
/// phi3's and qwen3_moe's head_dim) is absent from its table.

#include <map>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tpx/plan/families.hpp"

namespace tpx::inline v0::plan {

/// The defaults of `model_type`'s config class (its family's, plan/families/), as a JSON object
/// of config.json keys; an empty object for a type tpx has no family for.
inline const nlohmann::json& config_defaults(std::string_view model_type) {
  static const std::map<std::string_view, nlohmann::json> all = [] {
    std::map<std::string_view, nlohmann::json> m;
    for (const model_family& f : all_families)
      m.emplace(f.model_type, nlohmann::json::parse(f.config_defaults));
    return m;
  }();
  static const nlohmann::json none = nlohmann::json::object();
  const auto it = all.find(model_type);
  return it == all.end() ? none : it->second;
}

}  // namespace tpx::inline v0::plan
