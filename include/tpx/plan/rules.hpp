#pragma once
/// \file
/// The rule sets plan resolution matches tensors against: a Hugging Face-layout rule set (TP,
/// EP or SP rules of one source) with its use marks, module-level rules and the prefixes they
/// cover, transformers' fused in-memory names of a checkpoint's per-expert tensors, and the
/// note counter of the report.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/plan/hf.hpp"
#include "tpx/plan/model_config.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/plan/resolution.hpp"
#include "tpx/plan/visit.hpp"

namespace tpx::inline v0::plan {

namespace detail {

/// What transformers (v5) makes of a checkpoint tensor it fuses at load time: the fused
/// in-memory tensor its plans name, and where the checkpoint tensor sits in it.
///   …block_sparse_moe.experts.N.w1 | w3 (Mixtral), …mlp.experts.N.gate_proj | up_proj
///        → …mlp.experts.gate_up_proj [E, 2I, H] (blocks gate | up), at (N, 0, 0) | (N, I, 0)
///   ….experts.N.w2 | down_proj → …mlp.experts.down_proj [E, H, I], at (N, 0, 0)
///   …block_sparse_moe.gate → …mlp.gate (the module renamed)
struct fused_alias {
  tensor_decl fused;
  std::vector<index_t> origin;
};
inline std::optional<fused_alias> fused_alias_of(const tensor_decl& t, const model_config& c) {
  if (c.n_experts < 1 || t.in_out) return std::nullopt;
  const std::vector<std::string_view> p = components(t.name);
  const index_t e = c.n_experts, h = c.hidden_size, i = c.moe_intermediate_size;
  const auto prefix = [&](std::size_t n) {  // the MoE module's in-memory path
    std::string out;
    for (std::size_t k = 0; k < n; ++k) {
      if (k > 0) out += '.';
      out += k + 1 == n && p[k] == "block_sparse_moe" ? std::string_view("mlp") : p[k];
    }
    return out;
  };
  const std::size_t n = p.size();
  if (n >= 3 && p[n - 1] == "weight" && p[n - 2] == "gate" && p[n - 3] == "block_sparse_moe")
    return fused_alias{{prefix(n - 2) + ".gate.weight", t.shape, {}, false, t.element_bytes},
                       std::vector<index_t>(t.shape.size(), 0)};
  if (n < 5 || p[n - 1] != "weight" || p[n - 4] != "experts" || !all_digits(p[n - 3]))
    return std::nullopt;
  const index_t x = index_of(p[n - 3], t.name);
  const std::string_view w = p[n - 2];
  const bool gate = w == "w1" || w == "gate_proj", up = w == "w3" || w == "up_proj",
             down = w == "w2" || w == "down_proj";
  if (x >= e || !(gate || up || down)) return std::nullopt;
  const std::string base = prefix(n - 4) + ".experts.";
  if (down) {
    if (t.shape != std::vector<index_t>{h, i}) return std::nullopt;
    return fused_alias{{base + "down_proj", {e, h, i}, {}, false, t.element_bytes}, {x, 0, 0}};
  }
  if (t.shape != std::vector<index_t>{i, h}) return std::nullopt;
  return fused_alias{
      {base + "gate_up_proj", {e, 2 * i, h}, {{i, 1}, {i, 1}}, false, t.element_bytes},
      {x, up ? i : 0, 0}};
}

/// Counts notes by text so that one per layer prints once, with how many tensors share it.
class note_counter {
 public:
  void add(std::string text) {
    auto [it, fresh] = counts_.emplace(text, 0);
    if (fresh) order_.push_back(std::move(text));
    ++it->second;
  }
  void flush(std::vector<std::string>& out) const {
    for (const std::string& t : order_) {
      const int n = counts_.at(t);
      out.push_back(n == 1 ? t : fmt::format("{} ({} tensors)", t, n));
    }
  }

 private:
  std::map<std::string, int> counts_;
  std::vector<std::string> order_;
};

/// A HF-layout rule set (TP, EP or SP rules of one source) with its matcher and use marks.
struct rule_set {
  std::string origin;  ///< "plan", "preset mixtral"
  std::vector<const rule*> rules;
  std::vector<style_spec> specs;    ///< of each rule, looked up once (under the dispatch)
  std::vector<std::string> labels;  ///< "preset llama base_model_tp_plan: key"
  matcher keys;
  std::vector<bool> used;

  rule_set(std::string o, std::vector<const rule*> r, const registry& styles,
           const resolve_options& options)
      : origin(std::move(o)), rules(std::move(r)), keys(keys_of(rules)), used(rules.size()) {
    for (const rule* x : rules) {
      specs.push_back(with_dispatch(styles.at(x->style), options.dispatch, options.sp));
      labels.push_back(fmt::format("{} {}: {}", origin, x->source, x->key));
    }
  }

  bool empty() const noexcept { return rules.empty(); }
  /// The index of the rule covering `name`, or nothing; an ambiguity goes to `notes`.
  std::optional<std::size_t> find(std::string_view name, note_counter& notes) const {
    const match m = keys.best(name);
    if (!m.rule) return std::nullopt;
    for (const std::size_t other : m.tied_with)
      notes.add(fmt::format("{}: keys '{}' and '{}' match {} equally; the first listed wins",
                            origin, rules[*m.rule]->key, rules[other]->key, name_pattern(name)));
    return m.rule;
  }
  /// Finds the rule covering `name` and marks it used.
  std::optional<std::size_t> use(std::string_view name, note_counter& notes) {
    const std::optional<std::size_t> i = find(name, notes);
    if (i) used[*i] = true;
    return i;
  }

 private:
  static matcher keys_of(const std::vector<const rule*>& rules) {
    std::vector<std::string> k;
    for (const rule* r : rules) k.push_back(r->key);
    return matcher(std::move(k));
  }
};

/// A module-level rule (experts module, `gather`, …): it places no parameter itself.
inline bool is_module_rule(const style_spec& s) {
  return s.kind == family::moe_experts || s.kind == family::module ||
         s.kind == family::identity_expert;
}

/// True when a module-level key (as path components) covers a tensor's path: the key matches a
/// proper prefix of it.
inline bool covers_prefix(const std::vector<std::string_view>& key,
                          const std::vector<std::string_view>& name) {
  if (key.size() >= name.size()) return false;
  for (std::size_t i = 0; i < key.size(); ++i)
    if (key[i] == "*" ? !all_digits(name[i]) : key[i] != name[i]) return false;
  return true;
}

}  // namespace detail

}  // namespace tpx::inline v0::plan
