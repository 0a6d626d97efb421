#pragma once
/// \file
/// Hugging Face plans: parsing and key matching.
///
/// A plan is `{key: style}`, or an object holding any of `base_model_tp_plan`,
/// `base_model_ep_plan`, `base_model_sp_plan`, `lm_tp_plan`, `lm_sp_plan` (as a model's
/// config.json or its class defaults hold them). `base_model_*` keys are relative to the base
/// model: for a causal-LM checkpoint they get the `model.` prefix the LM class gives its base
/// model, so `layers.*.self_attn.q_proj` matches `model.layers.0.self_attn.q_proj.weight`.
///
/// Matching a parameter name against the keys:
///   - `*` is one path component made of digits (a layer or expert index);
///   - a key naming a module covers that module's `.weight` and `.bias`;
///   - a key naming the parameter itself beats its module's key;
///   - among keys of the same kind, one with fewer `*` (more concrete indices) wins;
///   - two keys left tied are an ambiguity, reported with both keys.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
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
};

/// The rules of a Hugging Face plan, per kind, in file order.
struct hf_plan {
  std::vector<rule> rules;

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
             key, style.dump());
      expect(!key.empty(), "{}: {}: an empty key", what, source);
      const std::string s = style.get<std::string>();
      expect(styles.contains(s), "{}: {}: key '{}': unknown style string '{}'; known: {}", what,
             source, key, s, styles.known());
      plan.rules.push_back({std::string(prefix) + key, s, source, kind});
    }
  };
  bool sectioned = false;
  for (const section& s : sections)
    if (j.contains(s.name)) {
      sectioned = true;
      take(j.at(s.name), s.name, s.kind, s.base && causal_lm ? "model." : "");
    }
  if (!sectioned) take(j, "plan", plan_kind::tp, "");
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
    if (key.size() + 1 == name.size() && (name.back() == "weight" || name.back() == "bias"))
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

}  // namespace tpx::inline v0::plan
