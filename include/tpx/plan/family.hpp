#pragma once
/// \file
/// A model family, described in one place: its Hugging Face `model_type`, the defaults of its
/// config class for the dims a plan reads, the tensors its decoder layers store (from which the
/// preset lists every tensor and writes the default plan), and — for the families tpx builds as
/// models — how its config.json decides the RMSNorm eps, RoPE θ, biases, sliding window and
/// routing normalisation. Each family is one file in plan/families/; plan/families.hpp lists
/// them. The readers: plan/config_defaults.hpp (defaults), plan/presets.hpp (tensors and plans),
/// model/config.hpp (the model's config), and through the config model/build.hpp (its blocks:
/// a SwiGLU MLP or experts per layer, q/k norms).

#include <optional>
#include <string_view>

#include "tpx/core/extents.hpp"

namespace tpx::inline v0::plan {

/// How a family stores its experts (and so which MoE block it has).
enum class moe_layout {
  none,      ///< a dense SwiGLU MLP in every layer
  mixtral,   ///< block_sparse_moe.gate, block_sparse_moe.experts.N.w1|w3|w2
  qwen,      ///< mlp.gate, mlp.experts.N.gate_proj|up_proj|down_proj; dense layers by config
  deepseek,  ///< qwen's names + e_score_correction_bias and shared experts; dense first layers
  gpt_oss,   ///< mlp.router + bias, fused experts stored [E, in, out] with biases
};

/// What a decoder layer stores beyond a Llama layer's q/k/v/o, norms and SwiGLU MLP.
struct layer_traits {
  bool qkv_bias = false;        ///< q, k and v projections have biases
  bool o_bias = false;          ///< the output projection has a bias
  bool sinks = false;           ///< one attention sink per query head
  bool qk_norm = false;         ///< per-head RMS norms of q and k
  bool sandwich_norm = false;   ///< pre- and post-feedforward norms as well
  bool fused = false;           ///< qkv_proj and gate_up_proj stored fused
  bool tie_default = false;     ///< the config class ties embeddings by default
  bool mla = false;             ///< multi-head latent attention
  bool selection_bias = false;  ///< mlp.gate.e_score_correction_bias beside the router
  moe_layout moe = moe_layout::none;
};

/// How a config.json of a family tpx builds decides what transformers' config class decides.
struct config_rules {
  double rms_norm_eps = 1e-6;  ///< when "rms_norm_eps" is absent
  double rope_theta = 1e4;     ///< when the rope theta is absent

  enum class bias_keys {
    none,               ///< no biases
    attention_and_mlp,  ///< "attention_bias" (q, k, v, o) and "mlp_bias"
    qkv_always,         ///< q, k and v always have biases
    qkv_key,            ///< "qkv_bias" (q, k, v; default yes)
    attention,          ///< "attention_bias" (q, k, v, o)
  };
  bias_keys biases = bias_keys::none;

  enum class sliding {
    never,        ///< full causal attention (a "sliding_window" key is ignored)
    every_layer,  ///< "sliding_window" (default `window`) on every layer
    by_layer,     ///< when "use_sliding_window": "sliding_window" (default `window`) on the
                  ///< "sliding_attention" layers of "layer_types", else from
                  ///< "max_window_layers" (default 28) on
  };
  sliding window_rule = sliding::never;
  std::optional<index_t> window = std::nullopt;  ///< the window when the key is absent

  /// MoE: whether "norm_topk_prob" decides the top-k renormalisation (default
  /// `norm_topk_prob_default`); otherwise the top-k weights are always renormalised.
  bool norm_topk_prob_key = false;
  bool norm_topk_prob_default = false;

  /// How the router scores experts: softmax; DeepSeek-V3's sigmoid with the selection-only
  /// `e_score_correction_bias`, group-limited choice ("n_group", "topk_group", a group scored by
  /// its two best) and "routed_scaling_factor"; or DeepSeek-V2's softmax by "topk_method"
  /// ("greedy", or "group_limited_greedy": groups scored by their best), "routed_scaling_factor"
  /// and never renormalised.
  enum class router { softmax, grouped_sigmoid, grouped_softmax };
  router routing = router::softmax;

  /// Shared experts beside the routed ones: none, DeepSeek's ("n_shared_experts" of
  /// "moe_intermediate_size", one SwiGLU of their sum), or Qwen2-MoE's (one of
  /// "shared_expert_intermediate_size", scaled by its sigmoid `shared_expert_gate`).
  enum class shared_experts { none, deepseek, qwen_gated };
  shared_experts shared = shared_experts::none;

  /// MLA's rope part: its features come in pairs when "rope_interleave" (default yes) says so
  /// (DeepSeek-V3), or always (DeepSeek-V2's rotation of complex pairs).
  enum class mla_rope { none, interleave_key, interleaved };
  mla_rope rope_pairs = mla_rope::none;
};

struct model_family {
  std::string_view model_type;
  /// The config class's defaults for the dims a plan reads, as a JSON object of config.json keys.
  /// A key the class derives rather than defaults (a KV-head count of one per query head, a
  /// head_dim of hidden_size / heads) is absent.
  std::string_view config_defaults;
  layer_traits layers;
  /// Set for the families tpx builds and runs as models (model/config.hpp).
  std::optional<config_rules> model = std::nullopt;
};

}  // namespace tpx::inline v0::plan
