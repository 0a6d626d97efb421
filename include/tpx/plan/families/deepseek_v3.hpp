#pragma once
/// \file
/// DeepSeek-V3 (`DeepseekV3ForCausalLM`): multi-head latent attention, dense MLPs in the first
/// "first_k_dense_replace" layers, then routed experts (sigmoid scores, group-limited top-k)
/// and shared experts. Built as a model in tensor and sequence mode.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family deepseek_v3{
    .model_type = "deepseek_v3",
    .config_defaults = R"({"hidden_size": 7168, "num_hidden_layers": 61,
                           "num_attention_heads": 128, "num_key_value_heads": 128,
                           "intermediate_size": 18432, "moe_intermediate_size": 2048,
                           "n_routed_experts": 256, "num_experts_per_tok": 8,
                           "n_shared_experts": 1, "first_k_dense_replace": 3,
                           "q_lora_rank": 1536, "kv_lora_rank": 512,
                           "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                           "v_head_dim": 128, "vocab_size": 129280})",
    .layers = {.mla = true, .selection_bias = true, .moe = moe_layout::deepseek},
    .model = config_rules{.biases = config_rules::bias_keys::attention,
                          .norm_topk_prob_key = true,
                          .norm_topk_prob_default = true,
                          .routing = config_rules::router::grouped_sigmoid,
                          .shared = config_rules::shared_experts::deepseek,
                          .rope_pairs = config_rules::mla_rope::interleave_key}};

}  // namespace tpx::inline v0::plan::families
