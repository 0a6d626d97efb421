#pragma once
/// \file
/// gpt-oss (`GptOssForCausalLM`): q/k/v/o with biases, per-head attention sinks, a router with a
/// bias and fused experts stored [E, in, out]. Planned and resolved; not built as a model
/// (attention sinks and its clamped SwiGLU are not ops yet).

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family gpt_oss{
    .model_type = "gpt_oss",
    .config_defaults = R"({"hidden_size": 2880, "num_hidden_layers": 36,
                           "num_attention_heads": 64, "num_key_value_heads": 8,
                           "head_dim": 64, "intermediate_size": 2880,
                           "num_local_experts": 128, "num_experts_per_tok": 4,
                           "vocab_size": 201088})",
    .layers = {.qkv_bias = true, .o_bias = true, .sinks = true, .moe = moe_layout::gpt_oss}};

}  // namespace tpx::inline v0::plan::families
