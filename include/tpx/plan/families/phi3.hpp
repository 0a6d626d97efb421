#pragma once
/// \file
/// Phi-3 (`Phi3ForCausalLM`): qkv_proj and gate_up_proj stored fused (tpx splits them packed:
/// q|k|v in whole heads, gate|up block by block), eps 1e-5, a sliding window on every layer when
/// "sliding_window" names one.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family phi3{
    .model_type = "phi3",
    .config_defaults = R"({"hidden_size": 3072, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "intermediate_size": 8192,
                           "vocab_size": 32064})",
    .layers = {.fused = true},
    .model = config_rules{.rms_norm_eps = 1e-5, .window_rule = config_rules::sliding::every_layer}};

}  // namespace tpx::inline v0::plan::families
