#pragma once
/// \file
/// What a causal LM *is*, read from its Hugging Face `config.json` as transformers' config
/// classes read it, with their defaults for absent keys: the dims (plan::model_config), the
/// RMSNorm eps, RoPE (its frequencies for every position pair), biases, tied embeddings, the
/// sliding window, which layers are MoE and how routing weights are normalised.
///
///   family     eps   rope θ  biases                    other
///   llama      1e-6  1e4     attention_bias, mlp_bias
///   mistral    1e-6  1e4     –                         sliding_window 4096, every layer
///   qwen2      1e-6  1e4     q, k, v (always)          a window if use_sliding_window
///   phi3       1e-5  1e4     –                         fused qkv_proj and gate_up_proj
///   qwen3      1e-6  1e4     attention_bias            q/k RMSNorm per head
///   mixtral    1e-5  1e6     –                         experts every layer, top-k renormalised
///   qwen3_moe  1e-6  1e4     attention_bias            experts by mlp_only_layers and
///                                                      decoder_sparse_step, renormalised when
///                                                      norm_topk_prob (default no); q/k norms
///   qwen2_moe  1e-6  1e4     qkv_bias (default yes)    qwen3_moe's experts and window, and a
///                                                      shared expert gated by σ(x · g)
///   deepseek_v3 1e-6 1e4     attention_bias (q_a,      MLA (rope_interleave, default yes);
///                            kv_a, o)                  dense MLPs before first_k_dense_replace,
///                                                      then sigmoid-routed experts (n_group,
///                                                      topk_group, routed_scaling_factor,
///                                                      norm_topk_prob default yes) and
///                                                      n_shared_experts shared ones
///   deepseek_v2 1e-6 1e4     attention_bias            deepseek_v3's, with RoPE always on pairs
///                                                      and softmax routing by topk_method
///                                                      (greedy, group_limited_greedy), never
///                                                      renormalised; no selection bias
///
/// (The table summarises the families' own files, plan/families/, whose `config_rules` this
/// reader applies: a family tpx builds is one with rules.)
///
/// RoPE: `rope_parameters` {rope_type, rope_theta, …} (transformers ≥ 5), else `rope_theta` +
/// `rope_scaling` (older files; its `type` or `rope_type`). Types: `default`, `linear` (factor),
/// `llama3` (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings) and
/// `yarn` (factor, original_max_position_embeddings, beta_fast, beta_slow, truncate; its
/// attention factor — given, or from mscale / mscale_all_dim — scales cos and sin, and
/// mscale_all_dim scales an MLA model's softmax).
/// A feature tpx does not implement — another rope type, a partial rotary factor, an activation
/// other than SiLU, a model_type outside the table — is an error naming the key, never a
/// silently different model. Sliding-window attention (`sliding_window`, per layer by
/// `layer_types`) is the attention's window mask.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"
#include "tpx/io/file.hpp"
#include "tpx/ops/attention.hpp"
#include "tpx/ops/routing.hpp"
#include "tpx/plan/families.hpp"
#include "tpx/plan/model_config.hpp"

namespace tpx::inline v0::model {

/// The largest head_dim a model may have: far past any (DeepSeek's 192, Gemma's 256).
inline constexpr index_t max_head_dim = 65536;

/// The families a causal LM can be built for: those of plan/families.hpp with config rules.
inline std::vector<std::string_view> families() {
  std::vector<std::string_view> out;
  for (const plan::model_family& f : plan::all_families)
    if (f.model) out.push_back(f.model_type);
  return out;
}

struct config {
  plan::model_config dims;
  std::string source;  ///< the file it was read from, for messages
  double rms_norm_eps = 1e-6;
  std::string rope_type = "default";
  double rope_theta = 10000.0;
  std::vector<double> inv_freq;  ///< RoPE's frequency of each of the head_dim / 2 pairs
  /// RoPE's cos and sin are multiplied by it: YaRN's attention factor (1 for the other types).
  double rope_attention_factor = 1.0;
  /// MLA's softmax scale is qk_head_dim^−½ times this: YaRN's mscale(factor, mscale_all_dim)²
  /// when the rope parameters give mscale_all_dim (transformers' `yarn_apply_mscale`), else 1.
  double softmax_scale_factor = 1.0;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  ///< q, k and v projections have biases
  bool o_bias = false;
  bool mlp_bias = false;
  std::optional<index_t> sliding_window;  ///< absent: full causal attention
  /// Per layer: whether it attends through the sliding window — every layer of mistral, mixtral
  /// and phi3; for qwen2 / qwen3 / qwen3_moe the "sliding_attention" layers of `layer_types`, or
  /// without it the layers from `max_window_layers` on, as their config classes derive it.
  std::vector<bool> sliding_layers;
  bool norm_topk_prob = true;  ///< MoE: top-k weights renormalised to sum to 1
  /// MoE routing beyond softmax top-k (DeepSeek-V3): sigmoid scores, a selection-only
  /// e_score_correction_bias in the checkpoint, group-limited choice, a scale on the weights.
  ops::scoring router_score = ops::scoring::softmax;
  double routed_scaling_factor = 1.0;
  index_t n_group = 1, topk_group = 1;
  ops::group_scoring group_score = ops::group_scoring::top2_sum;
  /// The shared expert beside the routed ones: its intermediate size (0: none) and whether a
  /// sigmoid `shared_expert_gate` scales it (Qwen2-MoE).
  index_t shared_inter = 0;
  bool shared_expert_gate = false;
  /// MLA (dims.is_mla()): whether the rope part's features come in interleaved pairs.
  bool rope_interleave = false;
  bool qk_norm = false;          ///< q and k RMS-normalised per head before RoPE
  std::vector<bool> moe_layers;  ///< per layer: a mixture of experts, else a dense MLP
  std::vector<std::int64_t> eos_token_ids;

  bool is_moe() const { return dims.is_moe(); }
  /// The sliding window of layer `l` (0: it attends to the whole prefix).
  index_t window_of(index_t l) const {
    const bool sliding = sliding_window && l >= 0 &&
                         static_cast<std::size_t>(l) < sliding_layers.size() &&
                         sliding_layers[static_cast<std::size_t>(l)];
    return sliding ? *sliding_window : 0;
  }
  index_t layers() const noexcept { return dims.num_layers; }
};

namespace detail {

/// A number key of `j`: the default when absent or null, else a finite number.
inline double number(const nlohmann::json& j, std::string_view key, double fallback,
                     std::string_view what) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  expect(it->is_number() && std::isfinite(it->get<double>()), "{}: \"{}\" must be a finite number",
         what, key);
  return it->get<double>();
}

inline index_t whole(const nlohmann::json& j, std::string_view key, index_t fallback,
                     std::string_view what) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  expect(it->is_number_integer() && it->get<std::int64_t>() >= 0,
         "{}: \"{}\" must be a whole number ≥ 0", what, key);
  return it->get<index_t>();
}

inline bool flag(const nlohmann::json& j, std::string_view key, bool fallback,
                 std::string_view what) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  expect(it->is_boolean(), "{}: \"{}\" must be true or false", what, key);
  return it->get<bool>();
}

/// YaRN's mscale: 0.1 · mscale · ln(factor) + 1 (1 when factor ≤ 1).
inline double yarn_mscale(double factor, double mscale = 1.0) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

/// RoPE's frequencies from the rope parameters object `p` (rope_type and its keys);
/// `max_positions` is config.json's max_position_embeddings, YaRN's original context when the
/// parameters do not name one.
inline std::vector<double> rope_frequencies(const nlohmann::json& p, std::string_view type,
                                            double theta, index_t head_dim, std::string_view key,
                                            std::string_view what,
                                            std::optional<double> max_positions = {}) {
  std::vector<double> f = ops::default_inv_freq(theta, head_dim);
  const auto need = [&](std::string_view k) {
    expect(p.contains(k) && p.at(k).is_number(),
           "{}: \"{}\" of rope type '{}' needs the number \"{}\"", what, key, type, k);
    const double v = p.at(k).get<double>();
    expect(std::isfinite(v) && v > 0, "{}: \"{}.{}\" must be a positive number", what, key, k);
    return v;
  };
  if (type == "default") return f;
  if (type == "linear") {
    const double factor = need("factor");
    for (double& x : f) x /= factor;
    return f;
  }
  if (type == "llama3") {
    const double factor = need("factor"), low = need("low_freq_factor"),
                 high = need("high_freq_factor"),
                 context = need("original_max_position_embeddings");
    expect(high > low, "{}: \"{}\": high_freq_factor {} must exceed low_freq_factor {}", what, key,
           high, low);
    const double low_wavelen = context / low, high_wavelen = context / high;
    for (double& x : f) {
      const double wavelen = 2 * std::numbers::pi / x;
      if (wavelen > low_wavelen) {
        x /= factor;                         // long wavelengths: scaled
      } else if (wavelen >= high_wavelen) {  // between: interpolated
        const double smooth = (context / wavelen - low) / (high - low);
        x = (1 - smooth) * x / factor + smooth * x;
      }
    }
    return f;
  }
  if (type == "yarn") {
    // Frequencies past the original context interpolated (÷ factor), those well inside it kept,
    // a linear ramp between the dims of beta_fast and beta_slow rotations (transformers'
    // _compute_yarn_parameters).
    const double factor = need("factor");
    double context = 0;
    if (p.contains("original_max_position_embeddings")) {
      context = need("original_max_position_embeddings");
    } else {
      expect(max_positions && *max_positions > 0,
             "{}: \"{}\" of rope type 'yarn' needs \"original_max_position_embeddings\" (or "
             "the config's \"max_position_embeddings\")",
             what, key);
      context = *max_positions;
    }
    // A null or 0 beta takes the default, as transformers' `or` does.
    const auto beta = [&](std::string_view k, double fallback) {
      const auto it = p.find(k);
      if (it == p.end() || it->is_null()) return fallback;
      const double v = need(k);
      return v == 0 ? fallback : v;
    };
    const double fast = beta("beta_fast", 32), slow = beta("beta_slow", 1);
    const bool truncate = flag(p, "truncate", true, what);
    const double dim = static_cast<double>(head_dim);
    const auto at = [&](double rotations) {
      return dim * std::log(context / (rotations * 2 * std::numbers::pi)) / (2 * std::log(theta));
    };
    double low = at(fast), high = at(slow);
    if (truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1);
    if (low == high) high += 0.001;
    for (std::size_t i = 0; i < f.size(); ++i) {
      const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
      f[i] = f[i] / factor * ramp + f[i] * (1 - ramp);
    }
    return f;
  }
  fail(
      "{}: \"{}\" has rope_type '{}', which tpx does not implement (it implements default, "
      "linear, llama3 and yarn)",
      what, key, type);
}

/// RoPE's cos and sin factor (`rope_attention_factor`) and MLA's softmax factor
/// (`softmax_scale_factor`) of the rope parameters `p` of type `type` into `c`.
inline void rope_factors(const nlohmann::json& p, std::string_view type, config& c,
                         std::string_view what) {
  const auto num = [&](std::string_view k) {
    return number(p, k, 0.0, what);  // absent or null: 0, which the rules below read as unset
  };
  if (type == "yarn") {
    const double factor = num("factor"), mscale = num("mscale"), all = num("mscale_all_dim");
    if (const double given = num("attention_factor"); given != 0)
      c.rope_attention_factor = given;
    else if (mscale != 0 && all != 0)
      c.rope_attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, all);
    else
      c.rope_attention_factor = yarn_mscale(factor);
  }
  if (type != "default")
    if (const double all = num("mscale_all_dim"); all != 0) {
      const double m = yarn_mscale(num("factor"), all);
      c.softmax_scale_factor = m * m;
    }
}

/// `eos_token_id` of a config or generation config: a whole number or a list of them; nothing
/// when absent or null.
inline std::optional<std::vector<std::int64_t>> eos_ids(const nlohmann::json& j,
                                                        std::string_view what) {
  const auto eos = j.find("eos_token_id");
  if (eos == j.end() || eos->is_null()) return std::nullopt;
  std::vector<std::int64_t> out;
  const auto add = [&](const nlohmann::json& v) {
    expect(v.is_number_integer(), "{}: \"eos_token_id\" must be a whole number or a list", what);
    out.push_back(v.get<std::int64_t>());
  };
  if (eos->is_array())
    for (const nlohmann::json& v : *eos) add(v);
  else
    add(*eos);
  return out;
}
}  // namespace detail

/// Reads a config.json already parsed; `what` names it in errors. config.json alone: a model
/// directory's generation_config.json (the end-of-sequence ids generate stops at) is applied by
/// `read_config(dir)` or `apply_generation_config`.
inline config parse_config(const nlohmann::json& j, std::string_view what) {
  config c;
  c.source = std::string(what);
  expect(j.is_object(), "{}: config.json must be a JSON object", what);
  expect(j.contains("model_type") && j.at("model_type").is_string(),
         "{}: \"model_type\" is missing (tpx builds {})", what, fmt::join(families(), ", "));
  const std::string type = j.at("model_type").get<std::string>();
  const plan::model_family* fam = plan::find_family(type);
  expect(fam != nullptr && fam->model.has_value(),
         "{}: model_type '{}' is not a family tpx builds ({})", what, type,
         fmt::join(families(), ", "));
  const plan::config_rules& rules = *fam->model;
  using bias_keys = plan::config_rules::bias_keys;
  using sliding = plan::config_rules::sliding;
  c.dims = plan::parse_model_config(j, what);
  const plan::model_config& d = c.dims;
  expect(d.hidden_size >= 1 && d.num_layers >= 1 && d.vocab_size >= 1 && d.head_dim >= 2 &&
             d.head_dim % 2 == 0,
         "{}: hidden_size {}, num_hidden_layers {} and vocab_size {} must be positive and the head "
         "dim {} even",
         what, d.hidden_size, d.num_layers, d.vocab_size, d.head_dim);
  const bool moe = fam->layers.moe != plan::moe_layout::none;
  if (moe)
    expect(d.n_experts >= 1 && d.experts_per_token >= 1 && d.experts_per_token <= d.n_experts &&
               d.moe_intermediate_size >= 1,
           "{}: a {} config needs the experts' count (num_local_experts / num_experts), "
           "num_experts_per_tok (at most the experts) and their intermediate size",
           what, type);
  if (!moe) c.dims.n_experts = c.dims.experts_per_token = 0;

  const std::string act = j.contains("hidden_act") && j.at("hidden_act").is_string()
                              ? j.at("hidden_act").get<std::string>()
                              : "silu";
  expect(act == "silu", "{}: \"hidden_act\" is '{}'; tpx implements SwiGLU with silu only", what,
         act);
  expect(detail::number(j, "partial_rotary_factor", 1.0, what) == 1.0,
         "{}: \"partial_rotary_factor\" {} rotates part of each head, which tpx does not "
         "implement",
         what, detail::number(j, "partial_rotary_factor", 1.0, what));

  c.rms_norm_eps = detail::number(j, "rms_norm_eps", rules.rms_norm_eps, what);
  expect(c.rms_norm_eps >= 0, "{}: \"rms_norm_eps\" must be non-negative", what);

  // RoPE's tables hold head_dim / 2 frequencies and head_dim values a position: bounded before
  // they are built (hidden_size 2^62 made a table of 2^59 doubles).
  expect(d.head_dim <= max_head_dim, "{}: head_dim {} is more than the {} tpx's attention supports",
         what, d.head_dim, max_head_dim);
  // RoPE: rope_parameters (transformers ≥ 5), or rope_theta + rope_scaling.
  const double default_theta = rules.rope_theta;
  std::optional<double> max_positions;
  if (const double m = detail::number(j, "max_position_embeddings", 0, what); m > 0)
    max_positions = m;
  if (const auto rp = j.find("rope_parameters"); rp != j.end() && !rp->is_null()) {
    expect(rp->is_object(), "{}: \"rope_parameters\" must be an object", what);
    c.rope_theta = detail::number(*rp, "rope_theta", default_theta, what);
    if (rp->contains("rope_type")) {
      expect(rp->at("rope_type").is_string(), "{}: \"rope_parameters.rope_type\" must be a string",
             what);
      c.rope_type = rp->at("rope_type").get<std::string>();
    }
    c.inv_freq = detail::rope_frequencies(*rp, c.rope_type, c.rope_theta, d.head_dim,
                                          "rope_parameters", what, max_positions);
    detail::rope_factors(*rp, c.rope_type, c, what);
  } else {
    c.rope_theta = detail::number(j, "rope_theta", default_theta, what);
    const auto rs = j.find("rope_scaling");
    if (rs != j.end() && !rs->is_null()) {
      expect(rs->is_object(), "{}: \"rope_scaling\" must be an object or null", what);
      for (const char* k : {"rope_type", "type"})
        if (rs->contains(k) && rs->at(k).is_string()) {
          c.rope_type = rs->at(k).get<std::string>();
          break;
        }
      c.inv_freq = detail::rope_frequencies(*rs, c.rope_type, c.rope_theta, d.head_dim,
                                            "rope_scaling", what, max_positions);
      detail::rope_factors(*rs, c.rope_type, c, what);
    } else {
      c.inv_freq = ops::default_inv_freq(c.rope_theta, d.head_dim);
    }
  }
  expect(c.rope_theta > 0, "{}: the rope theta must be positive, got {}", what, c.rope_theta);

  c.tie_word_embeddings = d.tie_word_embeddings.value_or(false);
  if (rules.biases == bias_keys::attention_and_mlp || rules.biases == bias_keys::attention)
    c.qkv_bias = c.o_bias = detail::flag(j, "attention_bias", false, what);
  if (rules.biases == bias_keys::attention_and_mlp)
    c.mlp_bias = detail::flag(j, "mlp_bias", false, what);
  if (rules.biases == bias_keys::qkv_always) c.qkv_bias = true;
  if (rules.biases == bias_keys::qkv_key) c.qkv_bias = detail::flag(j, "qkv_bias", true, what);
  c.qk_norm = fam->layers.qk_norm;

  const auto window = [&](std::optional<index_t> fallback) -> std::optional<index_t> {
    const auto it = j.find("sliding_window");
    if (it == j.end()) return fallback;
    if (it->is_null()) return std::nullopt;
    expect(it->is_number_integer() && it->get<std::int64_t>() >= 1,
           "{}: \"sliding_window\" must be a positive whole number or null", what);
    return it->get<index_t>();
  };
  if (rules.window_rule == sliding::every_layer) c.sliding_window = window(rules.window);
  const bool qwen = rules.window_rule == sliding::by_layer;
  if (qwen && detail::flag(j, "use_sliding_window", false, what))
    c.sliding_window = window(rules.window);
  // Which layers slide. Qwen's models read `layer_types` (else derive it from
  // max_window_layers); Mistral, Mixtral and Phi-3 slide on every layer (transformers ignores
  // their layer_types).
  if (const auto lt = j.find("layer_types"); qwen && lt != j.end() && !lt->is_null()) {
    expect(lt->is_array() && static_cast<index_t>(lt->size()) == d.num_layers,
           "{}: \"layer_types\" must list one type per layer ({} layers)", what, d.num_layers);
    for (const nlohmann::json& t : *lt) {
      expect(t.is_string() && (t == "full_attention" || t == "sliding_attention"),
             "{}: \"layer_types\" holds {}; tpx implements \"full_attention\" and "
             "\"sliding_attention\"",
             what, json_excerpt(t));
      c.sliding_layers.push_back(t == "sliding_attention");
    }
  } else {
    const index_t from = qwen ? detail::whole(j, "max_window_layers", 28, what) : 0;
    for (index_t l = 0; l < d.num_layers; ++l) c.sliding_layers.push_back(l >= from);
  }

  for (index_t l = 0; l < d.num_layers; ++l) c.moe_layers.push_back(moe && !d.dense_layer(l));
  for (const index_t l : d.mlp_only_layers)
    expect(l < d.num_layers, "{}: \"mlp_only_layers\" holds {}, not one of the {} layers", what, l,
           d.num_layers);
  if (rules.norm_topk_prob_key)
    c.norm_topk_prob = detail::flag(j, "norm_topk_prob", rules.norm_topk_prob_default, what);
  using router = plan::config_rules::router;
  if (moe && rules.routing == router::grouped_softmax) {
    // DeepseekV2TopkRouter: softmax scores, never renormalised (its config's norm_topk_prob is
    // unused), groups only under "group_limited_greedy", which needs both group keys.
    c.norm_topk_prob = false;
    c.routed_scaling_factor = detail::number(j, "routed_scaling_factor", 1.0, what);
    const auto m = j.find("topk_method");
    const std::string method = m == j.end() || m->is_null() ? "greedy"
                               : m->is_string()             ? m->get<std::string>()
                                                            : m->dump();
    expect(method == "greedy" || method == "group_limited_greedy",
           "{}: \"topk_method\" is {}; a {} router chooses by \"greedy\" or "
           "\"group_limited_greedy\"",
           what, m == j.end() || !m->is_string() ? method : "'" + method + "'", type);
    if (method == "group_limited_greedy") {
      expect(j.contains("n_group") && !j.at("n_group").is_null() && j.contains("topk_group") &&
                 !j.at("topk_group").is_null(),
             "{}: \"topk_method\" group_limited_greedy needs \"n_group\" and \"topk_group\"", what);
      c.n_group = detail::whole(j, "n_group", 1, what);
      c.topk_group = detail::whole(j, "topk_group", 1, what);
      c.group_score = ops::group_scoring::best;
    }
  }
  if (moe && rules.routing == router::grouped_sigmoid) {
    c.router_score = ops::scoring::sigmoid;
    c.routed_scaling_factor = detail::number(j, "routed_scaling_factor", 2.5, what);
    c.n_group = detail::whole(j, "n_group", 8, what);
    c.topk_group = detail::whole(j, "topk_group", 4, what);
  }
  if (moe && rules.routing != router::softmax) {
    const index_t e = d.n_experts, k = d.experts_per_token;
    expect(c.n_group >= 1 && e % c.n_group == 0 && c.topk_group >= 1 && c.topk_group <= c.n_group &&
               k <= c.topk_group * (e / c.n_group),
           "{}: group-limited routing needs \"n_group\" to divide the {} experts, 1 ≤ "
           "\"topk_group\" ≤ n_group and num_experts_per_tok within the kept groups' experts; got "
           "n_group {}, topk_group {}, num_experts_per_tok {}",
           what, e, c.n_group, c.topk_group, k);
  }
  using shared = plan::config_rules::shared_experts;
  if (moe && rules.shared == shared::deepseek)
    c.shared_inter = d.n_shared_experts * d.moe_intermediate_size;
  if (moe && rules.shared == shared::qwen_gated) {
    c.shared_inter = d.shared_expert_intermediate_size;
    c.shared_expert_gate = c.shared_inter > 0;
  }
  using mla_rope = plan::config_rules::mla_rope;
  if (rules.rope_pairs == mla_rope::interleave_key)
    c.rope_interleave = detail::flag(j, "rope_interleave", true, what);
  c.rope_interleave = c.rope_interleave || rules.rope_pairs == mla_rope::interleaved;
  if (std::find(c.moe_layers.begin(), c.moe_layers.end(), false) != c.moe_layers.end())
    expect(d.intermediate_size >= 1, "{}: \"intermediate_size\" is missing or zero", what);

  if (std::optional<std::vector<std::int64_t>> eos = detail::eos_ids(j, what))
    c.eos_token_ids = *eos;
  return c;
}

/// Applies a model directory's `generation_config.json`, when there is one, to `c`: its
/// end-of-sequence ids replace config.json's when it names them, as transformers' generate takes
/// them from there.
inline void apply_generation_config(config& c, const std::filesystem::path& dir) {
  std::error_code ec;
  const std::filesystem::path gen = dir / "generation_config.json";
  if (!std::filesystem::is_regular_file(gen, ec)) return;
  const nlohmann::json g = io::read_json_file(gen, "generation config");
  expect(g.is_object(), "{}: must be a JSON object", gen.string());
  if (std::optional<std::vector<std::int64_t>> eos = detail::eos_ids(g, gen.string()))
    c.eos_token_ids = *eos;
}

/// Reads `dir/config.json` and applies `dir/generation_config.json` (or reads the file `path`
/// itself).
inline config read_config(const std::filesystem::path& path) {
  std::error_code ec;
  const bool dir = std::filesystem::is_directory(path, ec);
  const std::filesystem::path file = dir ? path / "config.json" : path;
  config c = parse_config(io::read_json_file(file, "config"), file.string());
  if (dir) apply_generation_config(c, path);
  return c;
}

}  // namespace tpx::inline v0::model
