#pragma once
/// \file
/// Plan resolution: from a model's tensors (names and shapes, from safetensors headers or a
/// preset), its config.json dims and the plan sources, decide for every tensor its style and what
/// each of `tp` ranks holds, and report what in the plan is wrong or costly.
///
/// Sources, highest priority first; the first one present decides:
///   1. a DeepSpeed `partition_config` (first matching layer spec; with `use_default_specs`, a
///      tensor no spec matches goes on to the next source, as DeepSpeed merges its defaults);
///   2. a Hugging Face plan (`--plan`, or the plan sections of config.json);
///   3. tpx's preset for the config's `model_type`;
///   4. the name heuristics (heuristics.hpp).
/// As transformers does, a Hugging Face plan (2 or 3) with base-model TP rules and none for the
/// embedding makes it vocab-parallel (`embed_tokens: embedding_rowwise`, prepended to every such
/// TP plan it applies), reported as that rule.
/// A tensor no rule of the deciding source matches stays replicated and is reported. A rule whose
/// style cannot place its tensor (a split style on a scalar, a packed style on a dim that is not
/// two equal blocks, an embedding style on a tensor that is not a matrix) is reported and the
/// tensor falls back to the next source that can place it.
///
/// Overlays: with `ep > 1`, the EP plan of the deciding source (or of the preset) replaces the TP
/// rule of every expert and router tensor it matches — attention and dense MLPs stay TP-sharded,
/// unlike Hugging Face, where EP leaves them replicated. Experts live on the same ranks as TP, so
/// `ep` must be 1 or `tp`. A given Hugging Face plan with EP rules and an empty
/// `base_model_tp_plan` (transformers 5.25's `tp_plan = {}`, no LM TP rules either) means, as
/// there, the EP plan alone across the TP ranks: at
/// `ep` 1 it resolves at `ep` = `tp` (noted), every tensor outside the experts replicated. With
/// `sp`, the SP plan's rules replace the TP rules they match, and the collectives are counted in
/// their sequence-parallel form.
///
/// The placements are the placer's (place.hpp), the communication figures traffic.hpp's, the
/// result types and `to_json` resolution.hpp's.

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/plan/deepspeed.hpp"
#include "tpx/plan/heuristics.hpp"
#include "tpx/plan/hf.hpp"
#include "tpx/plan/model_config.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/place.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/plan/resolution.hpp"
#include "tpx/plan/rules.hpp"
#include "tpx/plan/traffic.hpp"
#include "tpx/plan/visit.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::inline v0::plan {

namespace detail {

/// One resolution: the sources in priority order, the overlays, and the decisions per tensor.
class resolver {
 public:
  resolver(const model_config& c, const plan_sources& src, const registry& styles,
           resolve_options o, std::string_view base_prefix = "model.")
      : c_(c),
        src_(src),
        styles_(styles),
        o_(o),
        placer_(c, o, notes_),
        replicate_(styles.at("replicate")),
        colwise_(styles.at("colwise")),
        rowwise_(styles.at("rowwise")) {
    expect(o.tp >= 1, "tp must be at least 1, got {}", o.tp);
    expect_group_size(o.tp, "plan resolution");
    expect(o.ep >= 1 && (o.ep == 1 || o.ep == o.tp),
           "ep {} with tp {}: experts are placed over the TP ranks, so ep must be 1 or equal to "
           "tp",
           o.ep, o.tp);
    // The HF-layout sources: the given plan and the preset's, their base-model keys under the
    // checkpoint's own base-model prefix.
    if (src.preset != nullptr)
      preset_plan_ = parse_hf_plan(src.preset->plan(c), "preset " + src.preset->model_type,
                                   c.causal_lm(), styles);
    if (src.hf != nullptr) {
      given_plan_ = base_prefix == "model." ? *src.hf : rebased(*src.hf, base_prefix);
      add_hf(*given_plan_, src.hf_name);
    }
    if (preset_plan_) add_hf(*preset_plan_, "preset " + src.preset->model_type);
    ds_ = src.deepspeed != nullptr && !src.deepspeed->specs.empty();
    // transformers 5.25: `tp_plan = {}` beside an EP plan is the EP plan alone across the TP
    // ranks. (The placer reads tp and split only, so it keeps the options it was given.)
    if (!ds_ && given_plan_ && given_plan_->tp_disabled && o_.ep == 1 && o_.tp > 1 &&
        !given_plan_->of(plan_kind::ep).empty()) {
      o_.ep = o_.tp;
      notes_.add(fmt::format(
          "{} has EP rules and an empty base_model_tp_plan: as transformers 5.25 reads tp_plan = "
          "{{}}, its EP plan runs alone across the {} TP ranks (ep = {}); every other tensor is "
          "replicated",
          src.hf_name, o_.tp, o_.tp));
    }
    ds_used_.assign(ds_ ? src.deepspeed->specs.size() : 0, false);
    primary_ = !ds_ && !hf_.empty() ? &hf_.front() : nullptr;
    // transformers prepends the embedding rule when the base model's TP plan is not empty.
    if (primary_ != nullptr)
      base_tp_plan_ = std::any_of(primary_->tp.rules.begin(), primary_->tp.rules.end(),
                                  [](const rule* r) { return r->source != "lm_tp_plan"; });
    // Overlays: EP rules (experts and router entries only), SP rules.
    if (o_.ep > 1) {
      for (hf_source& h : hf_)
        if (!h.ep.empty()) {
          ep_ = &h.ep;
          break;
        }
      expect(ep_ != nullptr,
             "ep {} needs an EP plan (base_model_ep_plan), but neither the plan nor a preset for "
             "model type '{}' has one",
             o_.ep, c.model_type);
      for (std::size_t i = 0; i < ep_->rules.size(); ++i) {
        const rule* r = ep_->rules[i];
        const family f = ep_->specs[i].kind;
        if (ep_->specs[i].dispatch && !describe(ep_->specs[i], o.sp))
          unsupported_.add(fmt::format(
              "{}: '{}: {}' with dispatch {}{}: every token must be on every rank for an "
              "all_reduce dispatch; use dispatch all_to_all or auto",
              ep_->origin, r->key, r->style, name(o.dispatch),
              o.sp ? " under sequence parallelism" : ""));
        if (f != family::grouped_gemm && f != family::ep_router && f != family::moe_experts &&
            f != family::identity_expert && f != family::replicate)
          notes_.add(
              fmt::format("{}: EP rule '{}: {}' is not an expert or router entry; ignored "
                          "(the TP plan places that tensor)",
                          ep_->origin, r->key, r->style));
      }
    }
    if (o.sp)
      for (hf_source& h : hf_)
        if (!h.sp.empty()) {
          sp_ = &h.sp;
          break;
        }
  }

  /// The options resolved under: those given, with `ep` as an EP-only plan sets it.
  const resolve_options& options() const noexcept { return o_; }

  std::string decided_by() const {
    return ds_               ? "DeepSpeed partition_config"
           : !hf_.empty()    ? hf_.front().tp.origin
           : src_.heuristics ? "name heuristics"
                             : "none (every tensor replicated)";
  }

  /// The decision for one tensor: the overlays, then the sources by priority (the file
  /// comment). A tensor no rule of the deciding source matches is added to `unmatched`.
  resolved_tensor decide(const tensor_decl& t, std::vector<std::string>& unmatched) {
    decision d{t, fused_alias_of(t, c_), {t, "replicate", replicate_, "", {}, {}}};
    outcome got = outcome::no_rule;
    // Under EP with SP tpx dispatches the tokens all-to-all, and each rank runs its own tokens
    // through a whole copy of the shared expert beside the routed ones (layer/experts.hpp): the
    // TP rule that splits it elsewhere does not apply.
    if (o_.sp && ep_ != nullptr && beside_dispatched_experts(t.name) &&
        apply(d, "replicate", replicate_,
              "tpx: a shared expert is whole on every rank under EP with SP (all-to-all "
              "dispatch)") == outcome::placed) {
      notes_.add(
          "EP with SP: tokens are dispatched all-to-all, and the shared expert beside the routed "
          "ones is held whole on every rank, which runs its own tokens through it (its gradients "
          "are all-reduced once a step)");
      if (primary_ != nullptr) rule_for(d, primary_->tp, true);  // its TP rule still matched
      aliases_.push_back(std::move(d.alias));
      return std::move(d.result);
    }
    // Overlays first: EP rules of experts and the router, then SP rules.
    if (ep_ != nullptr)
      if (const std::optional<found> f = rule_for(d, *ep_, false)) {
        const family k = ep_->specs[f->rule].kind;
        if (k == family::grouped_gemm || k == family::ep_router || k == family::replicate) {
          ep_->used[f->rule] = true;
          got = apply(d, ep_->rules[f->rule]->style, ep_->specs[f->rule], ep_->labels[f->rule],
                      f->via_alias);
        }
      }
    if (got != outcome::placed && sp_ != nullptr) got = from_rules(d, *sp_);
    // A TP rule an overlay overrides still matched its tensor.
    if (got == outcome::placed && primary_ != nullptr) rule_for(d, primary_->tp, true);
    // Then the sources by priority. The deciding source's silence leaves the tensor replicated
    // (DeepSpeed with use_default_specs passes it on); past a rule that cannot place it, the next
    // source that has a rule decides.
    bool deciding = true, silent = false;
    const auto step = [&](outcome now, bool passes_on = false) {
      if (got == outcome::placed || silent) return;
      if (now == outcome::placed) {
        got = now;
      } else if (now == outcome::cannot) {
        deciding = false;
      } else if (deciding && !passes_on) {
        silent = true;
      }
    };
    if (ds_) step(from_deepspeed(d), src_.deepspeed->use_default_specs);
    for (hf_source& h : hf_)
      if (got != outcome::placed && !silent) step(from_rules(d, h.tp));
    if (src_.heuristics && got != outcome::placed && !silent) step(from_heuristics(d));
    // transformers' effective plan prepends `embed_tokens: embedding_rowwise` to every TP plan it
    // applies (a key of the plan's own overrides it): the embedding a Hugging Face plan leaves
    // without a rule is vocab-parallel, as transformers places it.
    if (got != outcome::placed && silent && primary_ != nullptr && base_tp_plan_ &&
        (t.name == "embed_tokens.weight" || t.name.ends_with(".embed_tokens.weight")) &&
        apply(d, "embedding_rowwise", styles_.at("embedding_rowwise"),
              "transformers' effective plan: embed_tokens (prepended to every TP plan)") ==
            outcome::placed)
      got = outcome::placed;
    if (got != outcome::placed) {
      d.result.style = "replicate";
      d.result.spec = replicate_;
      d.result.placement = shard::placement::replicated(t.shape);
      d.result.source = deciding ? "no rule" : "replicated: no source could place it";
      if (deciding) unmatched.push_back(t.name);
    }
    aliases_.push_back(std::move(d.alias));
    return std::move(d.result);
  }

  /// Whether tensor `name` belongs to a shared expert beside a dispatched experts module of the
  /// EP plan (a `shared_expert…` module under the experts module's parent).
  bool beside_dispatched_experts(const std::string& name) const {
    const std::vector<std::string_view> parts = components(name);
    for (std::size_t i = 0; i < ep_->rules.size(); ++i) {
      if (!ep_->specs[i].dispatch) continue;
      std::vector<std::string_view> parent = components(ep_->rules[i]->key);
      if (parent.empty()) continue;
      parent.pop_back();
      if (detail::covers_prefix(parent, parts) && parts[parent.size()].starts_with("shared_expert"))
        return true;
    }
    return false;
  }

  /// Tied embeddings: the LM head computes with the embedding table, so one placement serves
  /// both.
  void tie_embeddings(resolution& res) {
    const bool tied =
        c_.tie_word_embeddings.value_or(src_.preset != nullptr && src_.preset->tie_word_embeddings);
    const auto named = [&](std::string_view suffix) -> resolved_tensor* {
      for (resolved_tensor& t : res.tensors)
        if (ends_with_components(t.tensor.name, suffix)) return &t;
      return nullptr;
    };
    resolved_tensor* embed = named("embed_tokens.weight");
    if (tied && named("lm_head.weight") != nullptr) {
      notes_.add(
          "tied embeddings: config.json ties the LM head to the embedding, yet the checkpoint "
          "holds lm_head.weight; it is placed as a tensor of its own");
    } else if (tied && embed != nullptr) {
      std::optional<std::size_t> head;
      if (primary_ != nullptr) head = primary_->tp.use("lm_head.weight", notes_);
      const bool vocab_split = head && primary_->tp.specs[*head].kind == family::colwise;
      const std::string head_style = head ? primary_->tp.rules[*head]->style : "";
      if (vocab_split && embed->placement.is_replicated()) {
        const std::string& label = primary_->tp.labels[*head];
        embed->style = "embedding_rowwise";
        embed->spec = styles_.at("embedding_rowwise");
        embed->source = "tied with lm_head (" + label + ")";
        embed->placement = *placer_.place(embed->tensor, embed->spec).placement;
        std::erase(res.report.unmatched, embed->tensor.name);
        notes_.add(fmt::format(
            "tied embeddings: lm_head has no tensor of its own and its rule ({}: {}) splits the "
            "vocabulary, so {} is made vocab-parallel (embedding_rowwise): the embedding and the "
            "LM head use one shard",
            label, head_style, embed->tensor.name));
      } else if (vocab_split && embed->placement.dim == 1) {
        notes_.add(fmt::format(
            "tied embeddings: the lm_head rule {} splits the vocabulary, but {} is split on the "
            "hidden dim ({}); the LM head needs the whole table gathered on every rank",
            head_style, embed->tensor.name, embed->style));
      } else {
        notes_.add(
            fmt::format("tied embeddings: lm_head has no tensor of its own and computes with "
                        "{} as that tensor is placed ({})",
                        embed->tensor.name, embed->style));
      }
    }
  }

  /// Bytes per rank, and the communication per token per layer (traffic.hpp) under the
  /// module-level rules (the experts module's all-reduce) covering each tensor.
  void count(resolution& res) {
    struct module_rule {
      rule_set* set;
      std::size_t index;
      std::vector<std::string_view> key;  ///< path components
    };
    std::vector<module_rule> module_rules;
    for (rule_set* set : overlays())
      if (set != nullptr)
        for (std::size_t i = 0; i < set->rules.size(); ++i)
          if (is_module_rule(set->specs[i]))
            module_rules.push_back({set, i, components(set->rules[i]->key)});

    comm_counter comm(c_, o_, notes_);
    res.param_bytes.assign(static_cast<std::size_t>(o_.tp), 0);
    for (const resolved_tensor& t : res.tensors) {
      for (int rank = 0; rank < o_.tp; ++rank) {
        index_t& sum = res.param_bytes[static_cast<std::size_t>(rank)];
        sum = checked_add(sum, t.bytes(rank), "parameter bytes per rank");
      }
      // The most specific covering rule of each kind.
      comm_counter::cover cover;
      std::size_t gather_depth = 0, reduce_depth = 0;
      // Module keys name transformers' modules: a fused expert tensor's (…mlp.experts) covers
      // the checkpoint tensors it is made of.
      const std::optional<fused_alias>& alias =
          aliases_[static_cast<std::size_t>(&t - res.tensors.data())];
      std::vector<std::string_view> parts =
          module_rules.empty() ? std::vector<std::string_view>{} : components(t.tensor.name);
      if (alias && std::none_of(module_rules.begin(), module_rules.end(),
                                [&](const module_rule& m) { return covers_prefix(m.key, parts); }))
        parts = components(alias->fused.name);
      for (const module_rule& m : module_rules) {
        if (!covers_prefix(m.key, parts)) continue;
        m.set->used[m.index] = true;
        const style_spec& spec = m.set->specs[m.index];
        const std::size_t n = m.key.size();
        std::string path;
        for (std::size_t i = 0; i < n; ++i) {
          if (i > 0) path += '.';
          path += parts[i];
        }
        if (spec.input == collective::all_gather && n > gather_depth) {
          gather_depth = n;
          cover.gather_path = path;
        }
        if (spec.output == collective::all_to_all) cover.dispatch_path = path;
        if (spec.output == collective::all_reduce && n > reduce_depth) {
          reduce_depth = n;
          cover.reduce_path = path;
          cover.moe = spec.kind == family::moe_experts;
        }
      }
      comm.add(t, cover);
    }
    const auto [forward, backward] = comm.per_layer(c_.num_layers);
    res.comm_forward = forward.size;
    res.comm_backward = backward.size;
    res.comm_forward_bus = forward.bus;
    res.comm_backward_bus = backward.bus;
  }

  /// Rules of the deciding source and of the overlays that matched nothing; the report's notes.
  void report(resolution& res) {
    for (rule_set* set : overlays())
      if (set != nullptr)
        for (std::size_t i = 0; i < set->rules.size(); ++i) {
          if (!set->used[i])
            res.report.unused_rules.push_back(
                fmt::format("{} → {}", set->labels[i], set->rules[i]->style));
          else if (const std::string_view why = transformers_deprecates(set->rules[i]->style);
                   !why.empty() && (set->rules[i]->style != "moe_tp_experts" || o_.ep == 1))
            notes_.add(std::string(why));  // expert TP where it runs (EP replaces it)
        }
    if (ds_)
      for (const ds_spec& spec : src_.deepspeed->specs)
        if (!ds_used_[spec.index]) {
          std::string patterns;
          for (const std::string& p : spec.patterns) patterns += (patterns.empty() ? "" : ", ") + p;
          res.report.unused_rules.push_back(
              fmt::format("partition_config.layer_specs[{}] (patterns {})", spec.index, patterns));
        }
    // A plan written for transformers' in-memory experts (fused `experts.gate_up_proj`, the
    // module renamed `mlp`) against a checkpoint that stores them one by one: say why they stayed
    // replicated.
    const bool per_expert_unmatched =
        std::any_of(res.report.unmatched.begin(), res.report.unmatched.end(),
                    [](const std::string& n) { return expert_of(n).has_value(); });
    const bool expert_rule_unused =
        std::any_of(res.report.unused_rules.begin(), res.report.unused_rules.end(),
                    [](const std::string& r) { return r.find("experts") != std::string::npos; });
    if (per_expert_unmatched && expert_rule_unused)
      notes_.add(
          "the plan's expert keys name transformers' in-memory experts (fused "
          "experts.gate_up_proj / experts.down_proj), but the checkpoint stores each expert on "
          "its own (experts.N.…); those experts are left replicated — use the preset, or a plan "
          "keyed by the checkpoint's names");
    unsupported_.flush(res.report.unsupported);
    unplaceable_.flush(res.report.unplaceable);
    notes_.flush(res.report.warnings);
  }

 private:
  struct hf_source {
    rule_set tp, ep, sp;
  };
  enum class outcome { placed, cannot, no_rule };
  /// A tensor being decided: it, the fused tensor transformers makes of it, the result so far.
  struct decision {
    const tensor_decl& tensor;
    std::optional<fused_alias> alias;
    resolved_tensor result;
  };
  struct found {
    std::size_t rule;
    bool via_alias;
  };

  void add_hf(const hf_plan& p, const std::string& origin) {
    hf_.push_back({{origin, p.of(plan_kind::tp), styles_, o_},
                   {origin, p.of(plan_kind::ep), styles_, o_},
                   {origin, p.of(plan_kind::sp), styles_, o_}});
  }
  /// The rule sets whose unused rules are reported and whose module rules count: the deciding
  /// HF source's TP rules and the overlays.
  std::array<rule_set*, 3> overlays() {
    return {primary_ != nullptr ? &primary_->tp : nullptr, ep_, sp_};
  }

  /// The rule of `set` covering the tensor — by its own name, or by the fused tensor
  /// transformers makes of it; `mark` marks the rule used.
  std::optional<found> rule_for(const decision& d, rule_set& set, bool mark) {
    const auto look = [&](std::string_view name) {
      return mark ? set.use(name, notes_) : set.find(name, notes_);
    };
    if (const std::optional<std::size_t> i = look(d.tensor.name)) return found{*i, false};
    if (d.alias)
      if (const std::optional<std::size_t> i = look(d.alias->fused.name)) return found{*i, true};
    return std::nullopt;
  }

  /// Applies `style` (from `label`) if it can place the tensor (through its fused tensor when
  /// the rule named that).
  outcome apply(decision& d, const std::string& style, const style_spec& spec,
                const std::string& label, bool via_alias = false) {
    const tensor_decl& placed = via_alias ? d.alias->fused : d.tensor;
    placing p = placer_.place(placed, spec);
    if (!p.placement && !p.unplaceable) {
      unsupported_.add(fmt::format("{}: style '{}' ({}) cannot place a tensor of shape {}: {}",
                                   name_pattern(placed.name), style, label,
                                   shard::shape_text(placed.shape), p.why));
      return outcome::cannot;
    }
    resolved_tensor& r = d.result;
    r.style = style;
    r.spec = spec;
    r.source = via_alias ? fmt::format("{} (as part of transformers' fused {})", label,
                                       name_pattern(d.alias->fused.name))
                         : label;
    if (p.unplaceable) {  // the rule decides, but no placement serves it at this tp
      r.unplaceable = p.why;
      r.placement = shard::placement::replicated(d.tensor.shape);
      // The reason names the tensor; the note names its pattern, so one line serves every layer.
      const std::string prefix = placed.name + ": ";
      const std::string_view why = std::string_view(p.why).starts_with(prefix)
                                       ? std::string_view(p.why).substr(prefix.size())
                                       : std::string_view(p.why);
      unplaceable_.add(
          fmt::format("{}: style '{}' ({}): {}", name_pattern(placed.name), style, label, why));
      return outcome::placed;
    }
    r.placement = via_alias ? shard::part_placement(*p.placement, d.alias->origin, d.tensor.shape,
                                                    d.tensor.name)
                            : std::move(*p.placement);
    return outcome::placed;
  }

  outcome from_rules(decision& d, rule_set& set) {
    const std::optional<found> f = rule_for(d, set, true);
    if (!f) return outcome::no_rule;
    return apply(d, set.rules[f->rule]->style, set.specs[f->rule], set.labels[f->rule],
                 f->via_alias);
  }

  outcome from_deepspeed(decision& d) {
    const tensor_decl& t = d.tensor;
    const ds_spec* spec = src_.deepspeed->first_match(t.name, c_.model_type);
    if (spec == nullptr) return outcome::no_rule;
    ds_used_[spec->index] = true;
    const std::string label = fmt::format("partition_config.layer_specs[{}]", spec->index);
    const std::string style = spec->partition == ds_spec::type::row      ? "rowwise"
                              : spec->partition == ds_spec::type::column ? "colwise"
                                                                         : "replicate";
    const style_spec& meaning = spec->partition == ds_spec::type::row      ? rowwise_
                                : spec->partition == ds_spec::type::column ? colwise_
                                                                           : replicate_;
    const bool plain = spec->shape.empty() &&
                       spec->partition_dim == (spec->partition == ds_spec::type::row ? 1 : 0);
    if (plain || spec->partition == ds_spec::type::skip) return apply(d, style, meaning, label);
    // A shape or a partition dim of its own: the spec places the tensor; sub-parameters of a
    // fused attention projection are split in whole heads.
    index_t unit = 1;
    const std::string_view last = last_component(module_of(t.name));
    if (last.find("qkv") != std::string_view::npos ||
        last.find("query_key_value") != std::string_view::npos)
      unit = c_.head_dim;
    for (const ds_spec::dim_shape& s : spec->shape)
      for (const index_t n : s.sub_sizes)
        if (n % unit != 0) unit = 1;
    d.result.style = style;
    d.result.spec = meaning;
    d.result.source = label;
    d.result.placement = spec->placement(t.name, t.shape, o_.tp, o_.split, unit);
    return outcome::placed;
  }

  outcome from_heuristics(decision& d) {
    const std::optional<std::string> h = heuristic_style(d.tensor.name, d.tensor.shape);
    static const std::string label = "name heuristics";
    return h ? apply(d, *h, *h == "rowwise" ? rowwise_ : colwise_, label) : outcome::no_rule;
  }

  const model_config& c_;
  const plan_sources& src_;
  const registry& styles_;
  resolve_options o_;
  note_counter notes_, unsupported_, unplaceable_;
  placer placer_;
  const style_spec &replicate_, &colwise_, &rowwise_;
  std::optional<hf_plan> preset_plan_, given_plan_;
  std::vector<hf_source> hf_;  // in priority order
  bool ds_ = false;
  std::vector<bool> ds_used_;
  hf_source* primary_ = nullptr;
  bool base_tp_plan_ = false;  // the deciding plan has base-model TP rules
  rule_set* ep_ = nullptr;
  rule_set* sp_ = nullptr;
  std::vector<std::optional<fused_alias>> aliases_;  // per tensor, for the module rules
};

}  // namespace detail

/// Resolves the plan of `tensors` (see the file comment). Errors (tpx::error, one sentence) for
/// bad options and for splits no placement can serve.
inline resolution resolve(const model_config& c, std::vector<tensor_decl> tensors,
                          const plan_sources& src, const registry& styles, resolve_options o = {}) {
  std::vector<std::string_view> names;
  for (const tensor_decl& t : tensors) names.push_back(t.name);
  detail::resolver r(c, src, styles, o, c.causal_lm() ? base_model_prefix(names) : "model.");
  resolution res;
  res.options = r.options();
  res.decided_by = r.decided_by();
  res.tensors.reserve(tensors.size());
  for (const tensor_decl& t : tensors) res.tensors.push_back(r.decide(t, res.report.unmatched));
  r.tie_embeddings(res);
  r.count(res);
  r.report(res);
  return res;
}

}  // namespace tpx::inline v0::plan
