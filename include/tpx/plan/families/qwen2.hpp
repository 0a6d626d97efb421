#pragma once
/// \file
/// Qwen2 (`Qwen2ForCausalLM`): q, k and v always with biases; a sliding window on the layers
/// `layer_types` (or `max_window_layers`) names when "use_sliding_window".

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family qwen2{
    .model_type = "qwen2",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 32,
                           "intermediate_size": 22016, "vocab_size": 151936})",
    .layers = {.qkv_bias = true},
    .model = config_rules{.biases = config_rules::bias_keys::qkv_always,
                          .window_rule = config_rules::sliding::by_layer,
                          .window = 4096}};

}  // namespace tpx::inline v0::plan::families
