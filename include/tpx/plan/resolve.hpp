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
/// As transformers does, a Hugging Face plan (2 or 3) that has no rule for the embedding makes it
/// vocab-parallel (`embed_tokens: embedding_rowwise`, prepended to every TP plan it applies),
/// reported as that rule.
/// A tensor no rule of the deciding source matches stays replicated and is reported. A rule whose
/// style cannot place its tensor (a split style on a scalar, a packed style on a dim that is not
/// two equal blocks, an embedding style on a tensor that is not a matrix) is reported and the
/// tensor falls back to the next source that can place it.
///
/// Overlays: with `ep > 1`, the EP plan of the deciding source (or of the preset) replaces the TP
/// rule of every expert and router tensor it matches — attention and dense MLPs stay TP-sharded,
/// unlike Hugging Face, where EP leaves them replicated. Experts live on the same ranks as TP, so
/// `ep` must be 1 or `tp`. With `sp`, the SP plan's rules replace the TP rules they match, and the
/// collectives are counted in their sequence-parallel form.
///
/// How a style splits a tensor (`[…, out, in]`, or `[…, in, out]` when the tensor says so):
///   colwise family   the out dim; a bias (`.bias`, `…_bias`) or 1-d parameter its last dim
///   rowwise family   the in dim; a bias or 1-d parameter is replicated (added once)
///   embeddings       vocab_embedding dim 0, hidden_embedding dim 1 (matrices only)
///   grouped_gemm     dim 0 of a fused `[E, …]` tensor, E / tp whole experts per rank (E % tp
///                    must be 0); an expert stored on its own (`…experts.7.w1.weight`) goes whole
///                    to the rank owning expert 7
///   everything else  replicated
/// The split dim is cut in whole heads for attention (q/k/v/o, fused qkv and attention sinks
/// follow shard::gqa, replicating KV heads when tp > n_kv_heads), in the blocks a preset declares
/// (fused gate|up, heads of MLA), in two equal halves for a packed style without declared blocks,
/// and otherwise balanced (sizes differ by at most one; reported when they differ).
///
/// Communication per token per layer (bytes of activations, in the config's dtype; nccl-tests
/// sizes as the communicators count them: all-reduce the buffer, all-gather the gathered total,
/// reduce-scatter the input, all-to-all-v the bytes sent to other ranks), from the styles:
///   colwise linears reading one input (q, k, v; gate, up)  fwd: — (SP: all-gather of the input)
///                                                           bwd: all-reduce of dx (SP: reduce-
///                                                           scatter); a gathered output adds
///                                                           an all-gather of the output in fwd
///   rowwise linear        fwd: all-reduce of the output (SP, or rowwise_reduce_scatter: reduce-
///                         scatter); bwd: — (SP: all-gather of dy; a split input: all-gather of dx)
///   SP entry module rule (module_allgather…)   fwd: all-gather of [hidden]; bwd: reduce-scatter;
///                         the colwise linears inside add no input collective of their own
///   experts module rule (moe_tp_experts, gather, …)   fwd: all-reduce of [hidden] (SP: all-gather
///                         of [hidden | top-k ids | top-k weights] + reduce-scatter of [hidden]);
///                         bwd: all-reduce of dx and of the top-k weights (SP: reduce-scatter +
///                         all-gather, and the top-k weights). Expert tensors inside such a module
///                         add nothing of their own. (tests/model checks these figures against
///                         the bytes the built layers move.)
///   grouped_gemm experts with no module rule: all-to-all-v dispatch and combine of top-k × hidden
///                         per token, (ep − 1) / ep of it leaving the rank under uniform routing,
///                         in fwd and again in bwd
///   experts stored one by one with no module rule: their linears' collectives, × top-k / E
///   mla_kv_a_proj         bwd: all-reduce of the rope part of dy (qk_rope_head_dim)
/// The figure is the mean over the numbered layers; parameter-gradient all-reduces (once per
/// step, not per token) and the embedding and LM head (outside the layers) are not included.

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/plan/deepspeed.hpp"
#include "tpx/plan/heuristics.hpp"
#include "tpx/plan/hf.hpp"
#include "tpx/plan/model_config.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::inline v0::plan {

struct resolve_options {
  int tp = 1;
  bool sp = false;  ///< sequence parallelism: SP rules apply, collectives in their SP form
  int ep = 1;       ///< expert parallelism: 1, or tp (experts on the TP ranks)
  /// How an uneven dim is split: balanced (sizes differ by at most one; tpx's layers), or chunk
  /// (torch.chunk, as transformers' DTensor shards: 106 over 3 is 36 / 36 / 34). Heads stay whole
  /// either way; experts are whole experts.
  shard::split_kind split = shard::split_kind::balanced;
};

/// The plan sources given; null ones are absent.
struct plan_sources {
  const ds_config* deepspeed = nullptr;
  const hf_plan* hf = nullptr;
  std::string hf_name = "plan";  ///< where the HF plan came from, for reports
  const plan::preset* preset = nullptr;
  bool heuristics = true;
};

/// One tensor's resolution.
struct resolved_tensor {
  tensor_decl tensor;
  std::string style;   ///< the style string applied; "replicate" when no rule matched
  style_spec spec;     ///< what that string means
  std::string source;  ///< where the rule came from: "preset llama: model.layers.*.mlp.up_proj"
  shard::placement placement;

  /// The shape rank `rank` holds.
  std::vector<index_t> rank_shape(int rank) const { return placement.local_shape(rank); }
  /// Bytes rank `rank` holds.
  index_t bytes(int rank) const {
    const index_t all = shard::element_count(tensor.shape) * tensor.element_bytes;
    if (placement.is_replicated()) return all;
    const index_t extent = tensor.shape[static_cast<std::size_t>(placement.dim)];
    return extent == 0 ? 0 : all / extent * placement.partition.of(rank).size();
  }
};

/// What resolution found.
struct plan_report {
  std::vector<std::string> unmatched;     ///< tensors no rule matched (left replicated)
  std::vector<std::string> unused_rules;  ///< rules of the deciding source that matched nothing
  std::vector<std::string> unsupported;   ///< rules whose style could not place their tensor
  std::vector<std::string> warnings;      ///< uneven splits, KV replication, ties, ambiguities
};

struct resolution {
  std::vector<resolved_tensor> tensors;
  plan_report report;
  std::string decided_by;            ///< the deciding source
  std::vector<index_t> param_bytes;  ///< per rank
  double comm_forward = 0;           ///< bytes per token per layer
  double comm_backward = 0;          ///< bytes per token per layer
  resolve_options options;
};

namespace detail {

inline bool is_bias(std::string_view name) {
  return name.ends_with(".bias") || name.ends_with("_bias");
}

/// `model.layers.12.mlp.experts.3.w1.weight` → `model.layers.*.mlp.experts.*.w1.weight`.
inline std::string name_pattern(std::string_view name) {
  std::string out;
  for (const std::string_view c : components(name))
    out += (out.empty() ? "" : ".") + (all_digits(c) ? std::string("*") : std::string(c));
  return out;
}

/// The numbered layer a tensor belongs to: its first all-digit path component.
inline std::optional<index_t> layer_of(std::string_view name) {
  for (const std::string_view c : components(name))
    if (all_digits(c)) return std::stoll(std::string(c));
  return std::nullopt;
}

/// The expert index of a tensor stored per expert (`…experts.7.…`).
inline std::optional<index_t> expert_of(std::string_view name) {
  const std::vector<std::string_view> c = components(name);
  for (std::size_t i = 0; i + 1 < c.size(); ++i)
    if (c[i] == "experts" && all_digits(c[i + 1])) return std::stoll(std::string(c[i + 1]));
  return std::nullopt;
}

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
    for (std::size_t k = 0; k < n; ++k)
      out += (k ? "." : "") + std::string(k + 1 == n && p[k] == "block_sparse_moe" ? "mlp" : p[k]);
    return out;
  };
  const std::size_t n = p.size();
  if (n >= 3 && p[n - 1] == "weight" && p[n - 2] == "gate" && p[n - 3] == "block_sparse_moe")
    return fused_alias{{prefix(n - 2) + ".gate.weight", t.shape, {}, false, t.element_bytes},
                       std::vector<index_t>(t.shape.size(), 0)};
  if (n < 5 || p[n - 1] != "weight" || p[n - 4] != "experts" || !all_digits(p[n - 3]))
    return std::nullopt;
  const index_t x = std::stoll(std::string(p[n - 3]));
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
  std::vector<const style_spec*> specs;  ///< of each rule, looked up once
  std::vector<std::string> labels;       ///< "preset llama base_model_tp_plan: key"
  matcher keys;
  std::vector<bool> used;

  rule_set(std::string o, std::vector<const rule*> r, const registry& styles)
      : origin(std::move(o)), rules(std::move(r)), keys(keys_of(rules)), used(rules.size()) {
    for (const rule* x : rules) {
      specs.push_back(&styles.at(x->style));
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

/// Places tensors by style for one resolution.
class placer {
 public:
  placer(const model_config& c, resolve_options o, note_counter& notes)
      : c_(c), o_(o), notes_(notes) {}

  /// The placement of `t` under `s`, or the reason the style cannot place it. Errors (tpx::error)
  /// for splits that no placement can serve: heads over a tp they do not fit, E % tp ≠ 0.
  std::pair<std::optional<shard::placement>, std::string> place(const tensor_decl& t,
                                                                const style_spec& s) {
    const int nd = static_cast<int>(t.shape.size());
    const bool bias = is_bias(t.name) || nd == 1;
    const auto whole = [&] {
      return std::pair{std::optional(shard::placement::replicated(t.shape)), std::string()};
    };
    const auto cannot = [&](std::string why) {
      return std::pair{std::optional<shard::placement>(), std::move(why)};
    };
    int dim = -1;
    switch (s.kind) {
      case family::colwise:
        if (nd == 0) return cannot("a scalar has no dim to split");
        dim = bias ? nd - 1 : t.in_out ? nd - 1 : nd - 2;
        break;
      case family::rowwise:
        if (nd == 0) return cannot("a scalar has no dim to split");
        if (bias) return whole();
        dim = t.in_out ? nd - 2 : nd - 1;
        break;
      case family::vocab_embedding:
      case family::hidden_embedding:
        if (nd != 2) return cannot(fmt::format("an embedding table is a matrix, not {}-d", nd));
        dim = s.kind == family::vocab_embedding ? 0 : 1;
        break;
      case family::grouped_gemm:
        if (nd == 0) return cannot("a scalar has no dim to split");
        return {experts(t), {}};
      default:
        return whole();
    }
    const index_t extent = t.shape[static_cast<std::size_t>(dim)];
    const shard::dim_ref what{t.name, dim};
    std::optional<shard::partition> p = heads(t, s, dim);
    if (!p && !t.blocks.empty()) {
      index_t sum = 0;
      for (const shard::block& b : t.blocks) sum += b.size;
      if (sum == extent) p = shard::partition::packed(t.blocks, o_.tp, o_.split, what);
    }
    if (!p && s.packed) {
      if (extent % 2 != 0)
        return cannot(fmt::format(
            "a packed style needs a fused dim of two equal blocks (gate | up), but dim {} has odd "
            "size {}",
            dim, extent));
      const shard::block halves[] = {{extent / 2, 1}, {extent / 2, 1}};
      p = shard::partition::packed(halves, o_.tp, o_.split, what);
    }
    if (!p) p = shard::partition::split(extent, o_.tp, o_.split, what);
    note_uneven(t, dim, *p);
    return {shard::placement::split(t.shape, dim, std::move(*p), t.name), {}};
  }

 private:
  /// Attention tensors split in whole heads, query heads with their KV heads.
  std::optional<shard::partition> heads(const tensor_decl& t, const style_spec& s, int dim) {
    if (c_.n_heads < 1 || c_.is_mla()) return std::nullopt;
    const std::string_view module = module_of(t.name), last = last_component(module);
    const index_t extent = t.shape[static_cast<std::size_t>(dim)];
    const index_t d = c_.head_dim, q = c_.n_heads * d, kv = c_.n_kv_heads * d;
    const shard::gqa g{c_.n_heads, c_.n_kv_heads, d};
    const bool out_dim = s.kind == family::colwise;
    const auto checked = [&](const shard::gqa& heads) {
      heads.expect_implementable(o_.tp, t.name);
      return true;
    };
    if (out_dim && last == "sinks" && t.name == module && extent == c_.n_heads && checked(g))
      return shard::gqa{c_.n_heads, c_.n_kv_heads, 1}.q_partition(o_.tp);
    if (out_dim && (last == "q_proj" || last == "query") && extent == q && checked(g))
      return g.q_partition(o_.tp);
    if (out_dim && (last == "k_proj" || last == "v_proj" || last == "key" || last == "value") &&
        extent == kv && checked(g)) {
      if (o_.tp > c_.n_kv_heads)
        notes_.add(fmt::format(
            "KV heads replicated: {} KV heads over tp {}, each held by {} ranks (their dK, dV "
            "and weight gradients are summed over those ranks): {}",
            c_.n_kv_heads, o_.tp, g.replicas(o_.tp), name_pattern(t.name)));
      return g.kv_partition(o_.tp);
    }
    if (out_dim && last == "qkv_proj" && extent == q + 2 * kv && checked(g))
      return g.qkv_partition(o_.tp);
    if (s.kind == family::rowwise && (last == "o_proj" || last == "out_proj" || last == "dense") &&
        extent == q && module.find("attn") != std::string_view::npos && checked(g))
      return g.q_partition(o_.tp);
    return std::nullopt;
  }

  /// Whole experts per rank: dim 0 of a fused tensor, or the owner of a per-expert tensor.
  shard::placement experts(const tensor_decl& t) {
    const int tp = o_.tp;
    if (const std::optional<index_t> e = expert_of(t.name)) {
      const index_t n = c_.n_experts;
      expect(n >= 1,
             "{}: grouped_gemm places expert {} on a rank, but the config gives no expert "
             "count (num_local_experts, num_experts or n_routed_experts)",
             t.name, *e);
      expect(n % tp == 0 && *e < n,
             "{}: expert {} of {} cannot be placed whole over {} ranks; the expert count must be a "
             "multiple of ep (E % ep == 0)",
             t.name, *e, n, tp);
      const int owner = static_cast<int>(*e / (n / tp));
      std::vector<shard::pieces> ranks(static_cast<std::size_t>(tp));
      ranks[static_cast<std::size_t>(owner)].parts.push_back({0, t.shape[0]});
      return shard::placement::split(t.shape, 0, {t.shape[0], std::move(ranks)}, t.name);
    }
    const index_t n = t.shape[0];
    expect(n % tp == 0,
           "{}: grouped_gemm splits dim 0 ({} experts) in whole experts over {} ranks, but {} is "
           "not a multiple of {} (E % ep must be 0)",
           t.name, n, tp, n, tp);
    return shard::placement::split(
        t.shape, 0, shard::partition::split(n, tp, shard::split_kind::even, {t.name, 0}), t.name);
  }

  void note_uneven(const tensor_decl& t, int dim, const shard::partition& p) {
    const std::vector<index_t> sizes = p.sizes();
    if (std::adjacent_find(sizes.begin(), sizes.end(), std::not_equal_to<>()) == sizes.end())
      return;
    std::string list;
    for (const index_t n : sizes) list += (list.empty() ? "" : ", ") + std::to_string(n);
    notes_.add(fmt::format(
        "{} dim {} ({}) does not divide over tp {}: split {}{}", name_pattern(t.name), dim,
        t.shape[static_cast<std::size_t>(dim)], o_.tp, list,
        std::find(sizes.begin(), sizes.end(), 0) != sizes.end() ? "; some ranks hold none of it"
                                                                : ""));
  }

  const model_config& c_;
  resolve_options o_;
  note_counter& notes_;
};

/// The communication of a resolved plan, per token per layer (see the file comment).
class comm_counter {
 public:
  comm_counter(const model_config& c, resolve_options o) : c_(c), o_(o) {}

  /// Counts the collectives of `t`; `module` is the module-level rule covering it, if any.
  /// The module-level rules covering a tensor, with their concrete module paths.
  struct cover {
    std::string gather_path;  ///< an SP entry module: its input all-gathered
    std::string reduce_path;  ///< an experts-like module: its output all-reduced
    bool moe = false;         ///< the reducing module is an experts module (top-k weights)
  };

  /// Counts the collectives of `t` under the module rules `m` covering it.
  void add(const resolved_tensor& t, const cover& m) {
    const std::optional<index_t> layer = layer_of(t.tensor.name);
    if (!layer) return;
    layer_totals& l = layers_[*layer];
    const double h = static_cast<double>(c_.hidden_size);
    const bool gathered = !m.gather_path.empty();
    if (gathered && l.modules.insert(m.gather_path).second) {
      l.fwd += h;  // all-gather of the module's input
      l.bwd += h;  // its conjugate: reduce-scatter of dx
    }
    if (!m.reduce_path.empty()) {
      // The module's tensors add nothing of their own.
      if (l.modules.insert(m.reduce_path).second) {
        const double n = o_.sp && !gathered ? 2 * h : h;  // SP: all-gather in, reduce-scatter out
        l.fwd += n;
        // tpx's SP experts gather each token's top-k ids and weights with its row.
        if (m.moe && o_.sp && !gathered) l.fwd += 2 * static_cast<double>(c_.experts_per_token);
        l.bwd += n;  // dx: all-reduce (SP: reduce-scatter, and all-gather of dy)
        if (m.moe) l.bwd += static_cast<double>(c_.experts_per_token);  // d(top-k weights)
      }
      return;
    }
    const std::vector<index_t>& s = t.tensor.shape;
    if (is_bias(t.tensor.name) || s.size() < 2 || t.spec.local) return;
    const std::size_t nd = s.size();
    const double out = static_cast<double>(t.tensor.in_out ? s[nd - 1] : s[nd - 2]),
                 in = static_cast<double>(t.tensor.in_out ? s[nd - 2] : s[nd - 1]);
    const std::optional<index_t> expert = expert_of(t.tensor.name);
    const double share =
        expert && c_.n_experts > 0 && c_.experts_per_token > 0
            ? static_cast<double>(c_.experts_per_token) / static_cast<double>(c_.n_experts)
            : 1.0;
    switch (t.spec.kind) {
      case family::colwise: {
        // Linears reading one input share its collectives: one group per parent module and
        // input size (q, k, v; gate, up — but not MLA's q_b and kv_b, which read different
        // inputs).
        const std::string_view m = module_of(t.tensor.name);
        const std::string group = fmt::format("{}|{}", m.substr(0, m.rfind('.')), in);
        if (!gathered && l.groups.insert(group).second) {  // else the module gathers
          l.fwd += (o_.sp ? in : 0) * share;
          l.bwd += in * share;  // all-reduce (SP: reduce-scatter) of dx
        }
        if (t.spec.output == collective::all_gather) l.fwd += out * share;
        break;
      }
      case family::rowwise:
        l.fwd += out * share;  // all-reduce, or reduce-scatter
        if (o_.sp) l.bwd += out * share;
        if (t.spec.input == collective::split) l.bwd += in * share;
        break;
      case family::mla_kv_a_proj:
        l.bwd += static_cast<double>(c_.qk_rope_head_dim);  // the rope part of dy, all-reduced
        break;
      case family::grouped_gemm: {
        // Dispatch and combine by all-to-all-v, once per experts module.
        const std::string_view m = module_of(t.tensor.name);
        const std::size_t at = m.find("experts");
        if (l.modules.insert(std::string(m.substr(0, at))).second) {
          const double moved = 2.0 * static_cast<double>(c_.experts_per_token) *
                               static_cast<double>(c_.hidden_size) * (o_.ep - 1) / o_.ep;
          l.fwd += moved;
          l.bwd += moved;
        }
        break;
      }
      default:
        break;
    }
  }

  /// Mean bytes per token per layer over `layers` numbered layers: forward, backward.
  std::pair<double, double> per_layer(index_t layers) const {
    double f = 0, b = 0;
    for (const auto& [n, l] : layers_) {
      f += l.fwd;
      b += l.bwd;
    }
    const double n = static_cast<double>(std::max<index_t>(layers, 1)),
                 bytes = static_cast<double>(c_.element_bytes());
    return {f * bytes / n, b * bytes / n};
  }

 private:
  struct layer_totals {
    double fwd = 0, bwd = 0;  // elements per token
    std::set<std::string> groups, modules;
  };
  const model_config& c_;
  resolve_options o_;
  std::map<index_t, layer_totals> layers_;
};

}  // namespace detail

/// Resolves the plan of `tensors` (see the file comment). Errors (tpx::error, one sentence) for
/// bad options and for splits no placement can serve.
inline resolution resolve(const model_config& c, std::vector<tensor_decl> tensors,
                          const plan_sources& src, const registry& styles, resolve_options o = {}) {
  expect(o.tp >= 1, "tp must be at least 1, got {}", o.tp);
  expect(o.ep >= 1 && (o.ep == 1 || o.ep == o.tp),
         "ep {} with tp {}: experts are placed over the TP ranks, so ep must be 1 or equal to tp",
         o.ep, o.tp);
  resolution res;
  res.options = o;
  detail::note_counter notes, unsupported;

  // The HF-layout sources: the given plan and the preset's.
  std::optional<hf_plan> preset_plan;
  if (src.preset != nullptr)
    preset_plan = parse_hf_plan(src.preset->plan(c), "preset " + src.preset->model_type,
                                c.causal_lm(), styles);
  struct hf_source {
    detail::rule_set tp, ep, sp;
  };
  std::vector<hf_source> hf;  // in priority order
  const auto add_hf = [&](const hf_plan& p, std::string origin) {
    hf.push_back({{origin, p.of(plan_kind::tp), styles},
                  {origin, p.of(plan_kind::ep), styles},
                  {origin, p.of(plan_kind::sp), styles}});
  };
  if (src.hf != nullptr) add_hf(*src.hf, src.hf_name);
  if (preset_plan) add_hf(*preset_plan, "preset " + src.preset->model_type);

  const bool ds = src.deepspeed != nullptr && !src.deepspeed->specs.empty();
  res.decided_by = ds               ? "DeepSpeed partition_config"
                   : !hf.empty()    ? hf.front().tp.origin
                   : src.heuristics ? "name heuristics"
                                    : "none (every tensor replicated)";
  hf_source* primary = !ds && !hf.empty() ? &hf.front() : nullptr;

  // Overlays: EP rules (experts and router entries only), SP rules.
  detail::rule_set* ep = nullptr;
  if (o.ep > 1) {
    for (hf_source& h : hf)
      if (!h.ep.empty()) {
        ep = &h.ep;
        break;
      }
    expect(ep != nullptr,
           "ep {} needs an EP plan (base_model_ep_plan), but neither the plan nor a preset for "
           "model type '{}' has one",
           o.ep, c.model_type);
    for (std::size_t i = 0; i < ep->rules.size(); ++i) {
      const rule* r = ep->rules[i];
      const family f = ep->specs[i]->kind;
      if (f != family::grouped_gemm && f != family::ep_router && f != family::moe_experts &&
          f != family::identity_expert && f != family::replicate)
        notes.add(
            fmt::format("{}: EP rule '{}: {}' is not an expert or router entry; ignored "
                        "(the TP plan places that tensor)",
                        ep->origin, r->key, r->style));
    }
  }
  detail::rule_set* sp = nullptr;
  if (o.sp)
    for (hf_source& h : hf)
      if (!h.sp.empty()) {
        sp = &h.sp;
        break;
      }

  detail::placer placer(c, o, notes);
  std::vector<bool> ds_used(ds ? src.deepspeed->specs.size() : 0);
  enum class outcome { placed, cannot, no_rule };

  const style_spec& replicate = styles.at("replicate");
  const style_spec& colwise = styles.at("colwise");
  const style_spec& rowwise = styles.at("rowwise");
  std::vector<std::optional<detail::fused_alias>> aliases;  // per tensor, for the module rules
  for (const tensor_decl& t : tensors) {
    resolved_tensor r{t, "replicate", replicate, "", {}};
    // A rule keyed by transformers' fused in-memory name covers the checkpoint tensor it is made
    // of.
    const std::optional<detail::fused_alias> alias = detail::fused_alias_of(t, c);
    aliases.push_back(alias);
    struct found {
      std::size_t rule;
      bool via_alias;
    };
    const auto rule_for = [&](detail::rule_set& set, bool mark) -> std::optional<found> {
      const auto look = [&](std::string_view name) {
        return mark ? set.use(name, notes) : set.find(name, notes);
      };
      if (const std::optional<std::size_t> i = look(t.name)) return found{*i, false};
      if (alias)
        if (const std::optional<std::size_t> i = look(alias->fused.name)) return found{*i, true};
      return std::nullopt;
    };
    // Applies `style` (from `label`) if it can place the tensor (through its fused tensor when
    // the rule named that).
    const auto apply = [&](const std::string& style, const style_spec& spec,
                           const std::string& label, bool via_alias = false) {
      const tensor_decl& placed = via_alias ? alias->fused : t;
      auto [p, why] = placer.place(placed, spec);
      if (!p) {
        unsupported.add(fmt::format("{}: style '{}' ({}) cannot place a tensor of shape {}: {}",
                                    detail::name_pattern(placed.name), style, label,
                                    shard::shape_string(placed.shape), why));
        return outcome::cannot;
      }
      r.style = style;
      r.spec = spec;
      r.source = via_alias ? fmt::format("{} (as part of transformers' fused {})", label,
                                         detail::name_pattern(alias->fused.name))
                           : label;
      r.placement =
          via_alias ? shard::part_placement(*p, alias->origin, t.shape, t.name) : std::move(*p);
      return outcome::placed;
    };
    const auto from_rules = [&](detail::rule_set& set) {
      const std::optional<found> f = rule_for(set, true);
      if (!f) return outcome::no_rule;
      return apply(set.rules[f->rule]->style, *set.specs[f->rule], set.labels[f->rule],
                   f->via_alias);
    };
    const auto from_deepspeed = [&] {
      const ds_spec* spec = src.deepspeed->first_match(t.name, c.model_type);
      if (spec == nullptr) return outcome::no_rule;
      ds_used[spec->index] = true;
      const std::string label = fmt::format("partition_config.layer_specs[{}]", spec->index);
      const std::string style = spec->partition == ds_spec::type::row      ? "rowwise"
                                : spec->partition == ds_spec::type::column ? "colwise"
                                                                           : "replicate";
      const style_spec& meaning = spec->partition == ds_spec::type::row      ? rowwise
                                  : spec->partition == ds_spec::type::column ? colwise
                                                                             : replicate;
      const bool plain = spec->shape.empty() &&
                         spec->partition_dim == (spec->partition == ds_spec::type::row ? 1 : 0);
      if (plain || spec->partition == ds_spec::type::skip) return apply(style, meaning, label);
      // A shape or a partition dim of its own: the spec places the tensor; sub-parameters of a
      // fused attention projection are split in whole heads.
      index_t unit = 1;
      const std::string_view last = detail::last_component(detail::module_of(t.name));
      if (last.find("qkv") != std::string_view::npos ||
          last.find("query_key_value") != std::string_view::npos)
        unit = c.head_dim;
      for (const ds_spec::dim_shape& d : spec->shape)
        for (const index_t n : d.sub_sizes)
          if (n % unit != 0) unit = 1;
      r.style = style;
      r.spec = meaning;
      r.source = label;
      r.placement = spec->placement(t.name, t.shape, o.tp, o.split, unit);
      return outcome::placed;
    };
    const auto from_heuristics = [&] {
      const std::optional<std::string> h = heuristic_style(t.name, t.shape);
      static const std::string label = "name heuristics";
      return h ? apply(*h, *h == "rowwise" ? rowwise : colwise, label) : outcome::no_rule;
    };

    outcome got = outcome::no_rule;
    // Overlays first: EP rules of experts and the router, then SP rules.
    if (ep != nullptr)
      if (const std::optional<found> f = rule_for(*ep, false)) {
        const family k = ep->specs[f->rule]->kind;
        if (k == family::grouped_gemm || k == family::ep_router || k == family::replicate) {
          ep->used[f->rule] = true;
          got = apply(ep->rules[f->rule]->style, *ep->specs[f->rule], ep->labels[f->rule],
                      f->via_alias);
        }
      }
    if (got != outcome::placed && sp != nullptr) got = from_rules(*sp);
    // A TP rule an overlay overrides still matched its tensor.
    if (got == outcome::placed && primary != nullptr) rule_for(primary->tp, true);
    // Then the sources by priority. The deciding source's silence leaves the tensor replicated
    // (DeepSpeed with use_default_specs passes it on); past a rule that cannot place it, the next
    // source that has a rule decides.
    bool deciding = true, unmatched = false;
    const auto step = [&](outcome now, bool passes_on = false) {
      if (got == outcome::placed || unmatched) return;
      if (now == outcome::placed) {
        got = now;
      } else if (now == outcome::cannot) {
        deciding = false;
      } else if (deciding && !passes_on) {
        unmatched = true;
      }
    };
    if (ds) step(from_deepspeed(), src.deepspeed->use_default_specs);
    for (hf_source& h : hf)
      if (got != outcome::placed && !unmatched) step(from_rules(h.tp));
    if (src.heuristics && got != outcome::placed && !unmatched) step(from_heuristics());
    // transformers' effective plan prepends `embed_tokens: embedding_rowwise` to every TP plan it
    // applies (a key of the plan's own overrides it): the embedding a Hugging Face plan leaves
    // without a rule is vocab-parallel, as transformers places it.
    if (got != outcome::placed && unmatched && primary != nullptr &&
        (t.name == "embed_tokens.weight" || t.name.ends_with(".embed_tokens.weight")) &&
        apply("embedding_rowwise", styles.at("embedding_rowwise"),
              "transformers' effective plan: embed_tokens (prepended to every TP plan)") ==
            outcome::placed)
      got = outcome::placed;
    if (got != outcome::placed) {
      r.style = "replicate";
      r.spec = replicate;
      r.placement = shard::placement::replicated(t.shape);
      r.source = deciding ? "no rule" : "replicated: no source could place it";
      if (deciding) res.report.unmatched.push_back(t.name);
    }
    res.tensors.push_back(std::move(r));
  }

  // Tied embeddings: the LM head computes with the embedding table, so one placement serves both.
  const bool tied =
      c.tie_word_embeddings.value_or(src.preset != nullptr && src.preset->tie_word_embeddings);
  const auto named = [&](std::string_view suffix) -> resolved_tensor* {
    for (resolved_tensor& t : res.tensors)
      if (t.tensor.name == suffix || t.tensor.name.ends_with("." + std::string(suffix))) return &t;
    return nullptr;
  };
  resolved_tensor* embed = named("embed_tokens.weight");
  if (tied && named("lm_head.weight") != nullptr) {
    notes.add(
        "tied embeddings: config.json ties the LM head to the embedding, yet the checkpoint "
        "holds lm_head.weight; it is placed as a tensor of its own");
  } else if (tied && embed != nullptr) {
    std::optional<std::size_t> head;
    if (primary != nullptr) head = primary->tp.use("lm_head.weight", notes);
    const bool vocab_split = head && primary->tp.specs[*head]->kind == family::colwise;
    const std::string head_style = head ? primary->tp.rules[*head]->style : "";
    if (vocab_split && embed->placement.is_replicated()) {
      const std::string& label = primary->tp.labels[*head];
      embed->style = "embedding_rowwise";
      embed->spec = styles.at("embedding_rowwise");
      embed->source = "tied with lm_head (" + label + ")";
      embed->placement = *placer.place(embed->tensor, embed->spec).first;
      std::erase(res.report.unmatched, embed->tensor.name);
      notes.add(fmt::format(
          "tied embeddings: lm_head has no tensor of its own and its rule ({}: {}) splits the "
          "vocabulary, so {} is made vocab-parallel (embedding_rowwise): the embedding and the "
          "LM head use one shard",
          label, head_style, embed->tensor.name));
    } else if (vocab_split && embed->placement.dim == 1) {
      notes.add(fmt::format(
          "tied embeddings: the lm_head rule {} splits the vocabulary, but {} is split on the "
          "hidden dim ({}); the LM head needs the whole table gathered on every rank",
          head_style, embed->tensor.name, embed->style));
    } else {
      notes.add(
          fmt::format("tied embeddings: lm_head has no tensor of its own and computes with "
                      "{} as that tensor is placed ({})",
                      embed->tensor.name, embed->style));
    }
  }

  // Module-level rules (the experts module's all-reduce) cover the tensors under their module.
  struct module_rule {
    detail::rule_set* set;
    std::size_t index;
    std::vector<std::string_view> key;  ///< path components
  };
  std::vector<module_rule> module_rules;
  for (detail::rule_set* set : {primary != nullptr ? &primary->tp : nullptr, ep, sp})
    if (set != nullptr)
      for (std::size_t i = 0; i < set->rules.size(); ++i)
        if (detail::is_module_rule(*set->specs[i]))
          module_rules.push_back({set, i, detail::components(set->rules[i]->key)});

  detail::comm_counter comm(c, o);
  res.param_bytes.assign(static_cast<std::size_t>(o.tp), 0);
  for (const resolved_tensor& t : res.tensors) {
    for (int rank = 0; rank < o.tp; ++rank)
      res.param_bytes[static_cast<std::size_t>(rank)] += t.bytes(rank);
    // The most specific covering rule of each kind.
    detail::comm_counter::cover cover;
    std::size_t gather_depth = 0, reduce_depth = 0;
    // Module keys name transformers' modules: a fused expert tensor's (…mlp.experts) covers
    // the checkpoint tensors it is made of.
    const std::optional<detail::fused_alias>& alias =
        aliases[static_cast<std::size_t>(&t - res.tensors.data())];
    std::vector<std::string_view> parts =
        module_rules.empty() ? std::vector<std::string_view>{} : detail::components(t.tensor.name);
    if (alias && std::none_of(module_rules.begin(), module_rules.end(), [&](const module_rule& m) {
          return detail::covers_prefix(m.key, parts);
        }))
      parts = detail::components(alias->fused.name);
    for (const module_rule& m : module_rules) {
      if (!detail::covers_prefix(m.key, parts)) continue;
      m.set->used[m.index] = true;
      const style_spec& spec = *m.set->specs[m.index];
      const std::size_t n = m.key.size();
      std::string path;
      for (std::size_t i = 0; i < n; ++i) path += (i ? "." : "") + std::string(parts[i]);
      if (spec.input == collective::all_gather && n > gather_depth) {
        gather_depth = n;
        cover.gather_path = path;
      }
      if (spec.output == collective::all_reduce && n > reduce_depth) {
        reduce_depth = n;
        cover.reduce_path = path;
        cover.moe = spec.kind == family::moe_experts;
      }
    }
    comm.add(t, cover);
  }
  std::tie(res.comm_forward, res.comm_backward) = comm.per_layer(c.num_layers);

  // Rules of the deciding source and of the overlays that matched nothing.
  for (detail::rule_set* set : {primary != nullptr ? &primary->tp : nullptr, ep, sp})
    if (set != nullptr)
      for (std::size_t i = 0; i < set->rules.size(); ++i)
        if (!set->used[i])
          res.report.unused_rules.push_back(
              fmt::format("{} → {}", set->labels[i], set->rules[i]->style));
  if (ds)
    for (const ds_spec& spec : src.deepspeed->specs)
      if (!ds_used[spec.index]) {
        std::string patterns;
        for (const std::string& p : spec.patterns) patterns += (patterns.empty() ? "" : ", ") + p;
        res.report.unused_rules.push_back(
            fmt::format("partition_config.layer_specs[{}] (patterns {})", spec.index, patterns));
      }
  // A plan written for transformers' in-memory experts (fused `experts.gate_up_proj`, the module
  // renamed `mlp`) against a checkpoint that stores them one by one: say why they stayed
  // replicated.
  const bool per_expert_unmatched =
      std::any_of(res.report.unmatched.begin(), res.report.unmatched.end(),
                  [](const std::string& n) { return detail::expert_of(n).has_value(); });
  const bool expert_rule_unused =
      std::any_of(res.report.unused_rules.begin(), res.report.unused_rules.end(),
                  [](const std::string& r) { return r.find("experts") != std::string::npos; });
  if (per_expert_unmatched && expert_rule_unused)
    notes.add(
        "the plan's expert keys name transformers' in-memory experts (fused "
        "experts.gate_up_proj / experts.down_proj), but the checkpoint stores each expert on its "
        "own (experts.N.…); those experts are left replicated — use the preset, or a plan keyed "
        "by the checkpoint's names");
  unsupported.flush(res.report.unsupported);
  notes.flush(res.report.warnings);
  return res;
}

/// The resolution as one JSON object (the `tpx-plan --json` schema):
///   {"tensors": [{"name", "style", "source", "global_shape", "split_dim" (−1: replicated),
///                 "rank_intervals" (per rank, the [begin, end) pieces of the split dim it holds),
///                 "rank_shapes", "bytes_per_rank"}],
///    "report": {"decided_by", "unmatched", "unused_rules", "unsupported", "warnings"},
///    "totals": {"param_bytes_per_rank", "param_bytes_max", "param_bytes_min",
///               "comm_bytes_per_token_per_layer": {"forward", "backward"}},
///    "options": {"tp", "sp", "ep"}}
inline nlohmann::json to_json(const resolution& r) {
  nlohmann::json tensors = nlohmann::json::array();
  const int tp = r.options.tp;
  for (const resolved_tensor& t : r.tensors) {
    nlohmann::json shapes = nlohmann::json::array(), bytes = nlohmann::json::array(),
                   intervals = nlohmann::json::array();
    for (int rank = 0; rank < tp; ++rank) {
      shapes.push_back(t.rank_shape(rank));
      bytes.push_back(t.bytes(rank));
      if (!t.placement.is_replicated()) {
        nlohmann::json pieces = nlohmann::json::array();
        for (const shard::interval& i : t.placement.partition.of(rank).parts)
          pieces.push_back({i.begin, i.end});
        intervals.push_back(std::move(pieces));
      }
    }
    tensors.push_back({{"name", t.tensor.name},
                       {"style", t.style},
                       {"source", t.source},
                       {"global_shape", t.tensor.shape},
                       {"split_dim", t.placement.dim},
                       {"rank_intervals", std::move(intervals)},
                       {"rank_shapes", std::move(shapes)},
                       {"bytes_per_rank", std::move(bytes)}});
  }
  const auto [lo, hi] = std::minmax_element(r.param_bytes.begin(), r.param_bytes.end());
  return {{"tensors", std::move(tensors)},
          {"report",
           {{"decided_by", r.decided_by},
            {"unmatched", r.report.unmatched},
            {"unused_rules", r.report.unused_rules},
            {"unsupported", r.report.unsupported},
            {"warnings", r.report.warnings}}},
          {"totals",
           {{"param_bytes_per_rank", r.param_bytes},
            {"param_bytes_max", r.param_bytes.empty() ? 0 : *hi},
            {"param_bytes_min", r.param_bytes.empty() ? 0 : *lo},
            {"comm_bytes_per_token_per_layer",
             {{"forward", r.comm_forward}, {"backward", r.comm_backward}}}}},
          {"options", {{"tp", tp}, {"sp", r.options.sp}, {"ep", r.options.ep}}}};
}

}  // namespace tpx::inline v0::plan
