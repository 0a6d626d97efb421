#pragma once
/// \file
/// Qwen3-MoE (`Qwen3MoeForCausalLM`): experts in the layers "mlp_only_layers" and
/// "decoder_sparse_step" leave sparse (dense SwiGLU MLPs in the others), top-k weights
/// renormalised when "norm_topk_prob" (default no); q/k norms and Qwen's attention.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family qwen3_moe{
    .model_type = "qwen3_moe",
    .config_defaults = R"({"hidden_size": 2048, "num_hidden_layers": 24,
                           "num_attention_heads": 32, "num_key_value_heads": 4,
                           "intermediate_size": 6144, "moe_intermediate_size": 768,
                           "num_experts": 128, "num_experts_per_tok": 8,
                           "decoder_sparse_step": 1, "mlp_only_layers": [],
                           "vocab_size": 151936})",
    .layers = {.qk_norm = true, .moe = moe_layout::qwen},
    .model = config_rules{.biases = config_rules::bias_keys::attention,
                          .window_rule = config_rules::sliding::by_layer,
                          .window = 4096,
                          .norm_topk_prob_key = true}};

}  // namespace tpx::inline v0::plan::families
