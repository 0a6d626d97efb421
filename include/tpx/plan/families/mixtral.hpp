#pragma once
/// \file
/// Mixtral (`MixtralForCausalLM`): experts in every layer (block_sparse_moe, top-k weights
/// always renormalised), eps 1e-5, RoPE θ 1e6, a sliding window on every layer when
/// "sliding_window" names one.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family mixtral{
    .model_type = "mixtral",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 8,
                           "intermediate_size": 14336, "num_local_experts": 8,
                           "num_experts_per_tok": 2, "vocab_size": 32000})",
    .layers = {.moe = moe_layout::mixtral},
    .model = config_rules{.rms_norm_eps = 1e-5,
                          .rope_theta = 1e6,
                          .window_rule = config_rules::sliding::every_layer}};

}  // namespace tpx::inline v0::plan::families
