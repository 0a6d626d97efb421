#pragma once
/// \file
/// Qwen3 (`Qwen3ForCausalLM`): per-head RMS norms of q and k before RoPE, optional attention
/// biases, Qwen's per-layer sliding window.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family qwen3{
    .model_type = "qwen3",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 32,
                           "head_dim": 128, "intermediate_size": 22016,
                           "vocab_size": 151936})",
    .layers = {.qk_norm = true},
    .model = config_rules{.biases = config_rules::bias_keys::attention,
                          .window_rule = config_rules::sliding::by_layer,
                          .window = 4096}};

}  // namespace tpx::inline v0::plan::families
