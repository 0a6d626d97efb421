#pragma once
/// \file
/// DeepSeek-V2 (`DeepseekV2ForCausalLM`; V2-Lite and V2.5 alike): DeepSeek-V3's layers — multi-head
/// latent attention, dense MLPs in the first "first_k_dense_replace" layers, then routed and
/// shared experts — with softmax routing ("topk_method": greedy, or group_limited_greedy over
/// "n_group" groups scored by their best expert), no selection bias, weights never renormalised,
/// and RoPE always on interleaved pairs.

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family deepseek_v2{
    .model_type = "deepseek_v2",
    .config_defaults = R"({"hidden_size": 4096, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "intermediate_size": 11008,
                           "moe_intermediate_size": 1407, "n_routed_experts": 64,
                           "n_shared_experts": 2, "first_k_dense_replace": 0,
                           "q_lora_rank": 1536, "kv_lora_rank": 512,
                           "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                           "v_head_dim": 128, "vocab_size": 102400})",
    .layers = {.mla = true, .moe = moe_layout::deepseek},
    .model = config_rules{.biases = config_rules::bias_keys::attention,
                          .routing = config_rules::router::grouped_softmax,
                          .shared = config_rules::shared_experts::deepseek,
                          .rope_pairs = config_rules::mla_rope::interleaved}};

}  // namespace tpx::inline v0::plan::families
