#pragma once
/// \file
/// Llama (`LlamaForCausalLM`): q/k/v/o with optional biases ("attention_bias"), a SwiGLU MLP with
/// an optional bias ("mlp_bias"), RoPE of any type tpx implements.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family llama{
    .model_type = "llama",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "intermediate_size": 11008,
                           "vocab_size": 32000})",
    .layers = {},
    .model = config_rules{.biases = config_rules::bias_keys::attention_and_mlp}};

}  // namespace tpx::inline v0::plan::families
