#pragma once
/// \file
/// Gemma 2 (`Gemma2ForCausalLM`): four norms per layer (pre- and post-feedforward as well), tied
/// embeddings by default. Planned and resolved; not built as a model (its soft-capped attention
/// and GeGLU are not ops yet).

#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan::families {

inline constexpr model_family gemma2{
    .model_type = "gemma2",
    .config_defaults = R"({"hidden_size": 2304, "num_hidden_layers": 26,
                           "num_attention_heads": 8, "num_key_value_heads": 4,
                           "head_dim": 256, "intermediate_size": 9216,
                           "vocab_size": 256000})",
    .layers = {.sandwich_norm = true, .tie_default = true}};

}  // namespace tpx::inline v0::plan::families
