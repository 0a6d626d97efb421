#pragma once
/// \file
/// Qwen2-MoE (`Qwen2MoeForCausalLM`): Qwen2's attention (q, k and v biases by "qkv_bias", default
/// yes; its sliding window), experts in the layers "mlp_only_layers" and "decoder_sparse_step"
/// leave sparse, top-k weights renormalised when "norm_topk_prob" (default no), and beside the
/// routed experts one shared expert of "shared_expert_intermediate_size", scaled per token by the
/// sigmoid of its `shared_expert_gate`.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family qwen2_moe{
    .model_type = "qwen2_moe",
    .config_defaults = R"({"hidden_size": 2048, "num_hidden_layers": 24,
                           "num_attention_heads": 16, "num_key_value_heads": 16,
                           "intermediate_size": 5632, "moe_intermediate_size": 1408,
                           "shared_expert_intermediate_size": 5632,
                           "num_experts": 60, "num_experts_per_tok": 4,
                           "decoder_sparse_step": 1, "mlp_only_layers": [],
                           "vocab_size": 151936})",
    .layers = {.qkv_bias = true, .moe = moe_layout::qwen},
    .model = config_rules{.biases = config_rules::bias_keys::qkv_key,
                          .window_rule = config_rules::sliding::by_layer,
                          .window = 4096,
                          .norm_topk_prob_key = true,
                          .shared = config_rules::shared_experts::qwen_gated}};

}  // namespace tpx::inline v0::plan::families
