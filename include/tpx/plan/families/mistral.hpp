#pragma once
/// \file
/// Mistral (`MistralForCausalLM`): a Llama layer, sliding-window attention on every layer
/// ("sliding_window", 4096 when absent, none when null).

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family mistral{
    .model_type = "mistral",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 8,
                           "intermediate_size": 14336, "vocab_size": 32000})",
    .layers = {},
    .model = config_rules{.window_rule = config_rules::sliding::every_layer, .window = 4096}};

}  // namespace tpx::inline v0::plan::families
