#pragma once
/// \file
/// Hugging Face plans: parsing and key matching.
///
/// A plan is `{key: style}`, or an object holding any of `base_model_tp_plan`,
/// `base_model_ep_plan`, `base_model_sp_plan`, `lm_tp_plan`, `lm_sp_plan` (as a model's
/// config.json or its class defaults hold them). `base_model_*` keys are relative to the base
/// model: for a causal-LM checkpoint they get the prefix the LM class gives its base model
/// (`model.`, so `layers.*.self_attn.q_proj` matches `model.layers.0.self_attn.q_proj.weight`;
/// plan resolution takes another from the checkpoint's names — `transformer.` for GPT-J —
/// through base_model_prefix and rebased).
///
/// Matching a parameter name against the keys:
///   - `*` is one path component made of digits (a layer or expert index);
///   - a key naming a module covers that module's own parameters (`.weight`, `.bias`, and any
///     other, e.g. `lm_head.logit_scale`), as transformers' _get_parameter_plan does;
///   - a key naming the parameter itself beats its module's key;
///   - among keys of the same kind, one with fewer `*` (more concrete indices) wins;
///   - two keys left tied are an ambiguity, reported with both keys.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/registry.hpp"

namespace tpx::inline v0::plan {

/// The plan a key comes from.
enum class plan_kind { tp, ep, sp };

constexpr std::string_view name(plan_kind k) noexcept {
  return k == plan_kind::tp ? "tp" : k == plan_kind::ep ? "ep" : "sp";
}

/// One `key: style` entry of a plan.
struct rule {
  std::string key;     ///< as matched against full names (prefix applied)
  std::string style;   ///< the string as written
  std::string source;  ///< "base_model_tp_plan", "lm_tp_plan", "plan", …
  plan_kind kind = plan_kind::tp;
  /// The length of the base-model prefix `key` was given (`model.`; 0 for keys taken as written).
  std::size_t base_prefix = 0;
};

/// The rules of a Hugging Face plan, per kind, in file order.
struct hf_plan {
  std::vector<rule> rules;
  /// The plan says `"base_model_tp_plan": {}` and has no LM TP rules: transformers 5.25's
  /// `tp_plan = {}`, an explicit request for no TP rules (the EP plan alone across the TP
  /// ranks). A plan without the section has no TP plan, which is another thing.
  bool tp_disabled = false;

  std::vector<const rule*> of(plan_kind k) const {
    std::vector<const rule*> out;
    for (const rule& r : rules)
      if (r.kind == k) out.push_back(&r);
    return out;
  }
};

/// Parses a Hugging Face plan. `what` names the source in messages; `causal_lm` adds the `model.`
/// prefix to `base_model_*` keys. A plain `{key: style}` object is a TP plan whose keys are taken
/// as written. Every style must be a string; strings are checked against `styles`.
inline hf_plan parse_hf_plan(const nlohmann::json& j, std::string_view what, bool causal_lm,
                             const registry& styles) {
  expect(j.is_object(), "{}: a plan must be a JSON object, got {}", what, j.type_name());
  struct section {
    const char* name;
    plan_kind kind;
    bool base;
  };
  constexpr section sections[] = {{"base_model_tp_plan", plan_kind::tp, true},
                                  {"base_model_ep_plan", plan_kind::ep, true},
                                  {"base_model_sp_plan", plan_kind::sp, true},
                                  {"lm_tp_plan", plan_kind::tp, false},
                                  {"lm_sp_plan", plan_kind::sp, false}};
  hf_plan plan;
  const auto take = [&](const nlohmann::json& obj, const std::string& source, plan_kind kind,
                        std::string_view prefix) {
    expect(obj.is_object() || obj.is_null(), "{}: \"{}\" must be an object of key → style string",
           what, source);
    if (obj.is_null()) return;
    for (const auto& [key, style] : obj.items()) {
      expect(style.is_string(), "{}: {}: the style of key '{}' is {}, not a string", what, source,
             key, json_excerpt(style));
      expect(!key.empty(), "{}: {}: an empty key", what, source);
      const std::string s = style.get<std::string>();
      expect(styles.contains(s), "{}: {}: key '{}': unknown style string '{}'; known: {}", what,
             source, key, s, styles.known());
      plan.rules.push_back({std::string(prefix) + key, s, source, kind, prefix.size()});
    }
  };
  bool sectioned = false;
  for (const section& s : sections)
    if (j.contains(s.name)) {
      sectioned = true;
      take(j.at(s.name), s.name, s.kind, s.base && causal_lm ? "model." : "");
    }
  if (!sectioned) take(j, "plan", plan_kind::tp, "");
  const auto empty = [&](const char* name) {
    return j.at(name).is_null() || (j.at(name).is_object() && j.at(name).empty());
  };
  plan.tp_disabled = sectioned && j.contains("base_model_tp_plan") && empty("base_model_tp_plan") &&
                     (!j.contains("lm_tp_plan") || empty("lm_tp_plan"));
  return plan;
}

/// The causal LM's base-model prefix as a checkpoint's names show it: `model.` for most
/// models, `transformer.` (GPT-J, CodeGen), `gpt_neox.` (GPT-NeoX) for others — transformers'
/// `base_model_prefix`. It is the first component of most names, one that is not itself followed
/// by a layer number (`layers.0.…` of a checkpoint without a prefix); `model.` when none is.
inline std::string base_model_prefix(const std::vector<std::string_view>& names) {
  std::vector<std::pair<std::string_view, std::size_t>> counts;
  std::vector<std::string_view> numbered;  // first components followed by a layer number
  for (const std::string_view n : names) {
    const std::size_t dot = n.find('.');
    if (dot == std::string_view::npos) continue;
    const std::string_view first = n.substr(0, dot), rest = n.substr(dot + 1);
    const std::string_view second = rest.substr(0, rest.find('.'));
    if (all_digits(second)) numbered.push_back(first);
    const auto it =
        std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == first; });
    if (it == counts.end())
      counts.emplace_back(first, 1);
    else
      ++it->second;
  }
  const auto most =
      std::max_element(counts.begin(), counts.end(),
                       [](const auto& a, const auto& b) { return a.second < b.second; });
  if (most == counts.end() || 2 * most->second < names.size() ||
      std::find(numbered.begin(), numbered.end(), most->first) != numbered.end())
    return "model.";
  return std::string(most->first) + ".";
}

/// `plan` with its base-model keys under `prefix` instead of the prefix they were given.
inline hf_plan rebased(hf_plan plan, std::string_view prefix) {
  for (rule& r : plan.rules)
    if (r.base_prefix > 0) {
      r.key = std::string(prefix) + r.key.substr(r.base_prefix);
      r.base_prefix = prefix.size();
    }
  return plan;
}

/// Which rule a parameter name falls under.
struct match {
  std::optional<std::size_t> rule;     ///< index into the matcher's rules; empty: no rule
  std::vector<std::size_t> tied_with;  ///< other rules with the same precedence (ambiguity)
};

/// Matches parameter names against a list of keys by the rules above.
class matcher {
 public:
  explicit matcher(std::vector<std::string> keys) : keys_(std::move(keys)) {
    for (const std::string& k : keys_) {
      std::vector<std::string> p;
      for (const std::string_view c : components(k)) p.emplace_back(c);
      parts_.push_back(std::move(p));
    }
  }

  /// The best key for `name`, with any keys tied with it.
  match best(std::string_view name) const {
    const std::vector<std::string_view> n = components(name);
    match m;
    int best_score = -1;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      const int s = score(parts_[i], n);
      if (s < 0) continue;
      if (s > best_score) {
        best_score = s;
        m.rule = i;
        m.tied_with.clear();
      } else if (s == best_score) {
        m.tied_with.push_back(i);
      }
    }
    return m;
  }

  const std::vector<std::string>& keys() const noexcept { return keys_; }

 private:
  /// −1 if `key` does not cover `name`; else higher for a parameter key, then for fewer `*`.
  static int score(const std::vector<std::string>& key, const std::vector<std::string_view>& name) {
    bool module = false;
    if (key.size() + 1 == name.size())
      module = true;
    else if (key.size() != name.size())
      return -1;
    int wildcards = 0;
    for (std::size_t i = 0; i < key.size(); ++i) {
      if (key[i] == "*") {
        if (!all_digits(name[i])) return -1;
        ++wildcards;
      } else if (key[i] != name[i]) {
        return -1;
      }
    }
    return (module ? 0 : 1 << 16) + (1 << 15) - wildcards;
  }

  std::vector<std::string> keys_;
  std::vector<std::vector<std::string>> parts_;
};

/// A plan in the layout transformers 5.25 loads (`tpx-plan --emit-hf-plan`): the TP, EP and LM
/// sections of `plan` (sectioned, or a plain `{key: style}` object, kept as it is), every style a
/// string transformers registers. The SP sections (`base_model_sp_plan`, `lm_sp_plan`) are
/// tpx's and left out. `what` names the plan in errors.
inline nlohmann::json transformers_plan(const nlohmann::json& plan, std::string_view what) {
  expect(plan.is_object(), "{}: a plan must be a JSON object, got {}", what, plan.type_name());
  const bool sectioned = plan.contains("base_model_tp_plan") || plan.contains("lm_tp_plan") ||
                         plan.contains("base_model_ep_plan") ||
                         plan.contains("base_model_sp_plan") || plan.contains("lm_sp_plan");
  nlohmann::json out = nlohmann::json::object();
  const auto take = [&](const nlohmann::json& section, const std::string& name) {
    nlohmann::json into = nlohmann::json::object();
    for (const auto& [key, style] : section.items()) {
      expect(style.is_string(), "{}: {}: the style of key '{}' is not a string", what, name, key);
      const std::string s = style.get<std::string>();
      expect(transformers_registers(s),
             "{}: {}: key '{}' has style '{}', which transformers 5.25 does not register{}; a plan "
             "it loads uses only its own strings",
             what, name, key, s,
             transformers_registers(s, hf_release::v5_24) ? " (5.24 did; 5.25 removed it)" : "");
      expect(name != "base_model_ep_plan" || s != "moe_tp_experts",
             "{}: {}: key '{}' has style 'moe_tp_experts', which transformers refuses in an EP "
             "plan (a tensor-parallel style, deprecated in 5.25; the experts module is "
             "ep_dispatch_experts)",
             what, name, key);
      into[key] = s;
    }
    return into;
  };
  if (!sectioned) return take(plan, "plan");
  for (const char* name : {"base_model_tp_plan", "base_model_ep_plan", "lm_tp_plan"})
    if (plan.contains(name) && plan.at(name).is_object() && !plan.at(name).empty())
      out[name] = take(plan.at(name), name);
  return out;
}

}  // namespace tpx::inline v0::plan
