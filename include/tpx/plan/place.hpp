#pragma once
/// \file
/// The placer: the placement of a tensor under a style string's spec, for one resolution. The
/// placement itself is the style's (style/placement.hpp); the placer decides which weight dim
/// the family splits and how that dim is cut.
///
/// How a style splits a tensor (`[…, out, in]`, or `[…, in, out]` when the tensor says so):
///   colwise family   the out dim; a bias (`.bias`, `…_bias`) or 1-d parameter its last dim
///   rowwise family   the in dim; a bias or 1-d parameter is replicated (added once)
///   embeddings       vocab_embedding dim 0, hidden_embedding dim 1 (matrices only)
///   grouped_gemm     dim 0 of a fused `[E, …]` tensor, E / tp whole experts per rank (E % tp
///                    must be 0); an expert stored on its own (`…experts.7.w1.weight`) goes whole
///                    to the rank owning expert 7
///   everything else  replicated
/// A unit style (`unit_colwise`, `unit_rowwise`, transformers 5.25) cuts the split dim into units
/// of head_dim, as many as it holds, on the unit mesh (shard/units.hpp): gcd(units, tp) groups,
/// each unit on tp / gcd ranks. Otherwise the split dim is cut in whole heads for attention
/// (q/k/v/o, fused qkv and attention sinks follow shard::gqa: any tp ≤ n_heads, a KV head on every
/// rank whose query heads use it), in the blocks a preset declares (fused gate|up, heads of MLA),
/// in two equal halves for a packed style without declared blocks, and otherwise balanced (sizes
/// differ by at most one; reported when they differ).

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/plan/model_config.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/plan/resolution.hpp"
#include "tpx/plan/rules.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/shard/placement.hpp"
#include "tpx/shard/units.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/vocab_parallel.hpp"

namespace tpx::inline v0::plan {

namespace detail {

/// What the placer makes of a tensor under a style: its placement; or why the style cannot
/// place it (another source may); or, `unplaceable`, why no placement can serve the style at
/// this tp (heads over a tp they do not fit, E % tp ≠ 0) — the plan is not usable as it is.
struct placing {
  std::optional<shard::placement> placement = std::nullopt;
  std::string why = {};
  bool unplaceable = false;
};

/// Places tensors by style for one resolution.
class placer {
 public:
  placer(const model_config& c, resolve_options o, note_counter& notes)
      : c_(c), o_(o), notes_(notes) {}

  /// The placement of `t` under `s` (see `placing`).
  placing place(const tensor_decl& t, const style_spec& s) {
    const int nd = static_cast<int>(t.shape.size());
    const style::parameter param{t.name, t.shape, t.in_out, is_bias(t.name) || nd == 1};
    const auto cannot = [&](std::string why) { return placing{std::nullopt, std::move(why)}; };
    // The weight dim the family's style splits; the style says which tensor dim that is.
    int split = -1;
    switch (s.kind) {
      case family::colwise:
      case family::rowwise:
        if (nd == 0) return cannot("a scalar has no dim to split");
        split =
            s.kind == family::colwise ? style::colwise<>::split_dim : style::rowwise<>::split_dim;
        break;
      case family::vocab_embedding:
      case family::hidden_embedding:
        if (nd != 2) return cannot(fmt::format("an embedding table is a matrix, not {}-d", nd));
        // A hidden-split embedding has no tpx style; its table splits on columns.
        split = s.kind == family::vocab_embedding ? style::vocab_parallel<>::split_dim : 1;
        break;
      case family::grouped_gemm:
        if (nd == 0) return cannot("a scalar has no dim to split");
        return experts(t);
      default:
        break;
    }
    const int dim = style::tensor_dim(split, param);
    if (dim < 0) return {style::matrix_placement(split, param, o_.tp)};
    const index_t extent = t.shape[static_cast<std::size_t>(dim)];
    std::string refusal;
    style::cut how{.kind = o_.split,
                   .partition = s.units ? units(t, dim, refusal) : heads(t, s, dim, refusal)};
    if (!refusal.empty()) return {std::nullopt, std::move(refusal), true};
    if (!how.partition && !t.blocks.empty()) {
      index_t sum = 0;
      for (const shard::block& b : t.blocks) sum += b.size;
      if (sum == extent) how.blocks = t.blocks;
    }
    if (!how.partition && how.blocks.empty() && s.packed) {
      if (extent % 2 != 0)
        return cannot(fmt::format(
            "a packed style needs a fused dim of two equal blocks (gate | up), but dim {} has odd "
            "size {}",
            dim, extent));
      how.blocks = {{extent / 2, 1}, {extent / 2, 1}};
    }
    shard::placement p = style::matrix_placement(split, param, o_.tp, how);
    note_uneven(t, dim, p.partition);
    return {std::move(p)};
  }

 private:
  /// Attention tensors split in whole heads, query heads with their KV heads; `refusal` says why
  /// when the heads do not fit the tp.
  std::optional<shard::partition> heads(const tensor_decl& t, const style_spec& s, int dim,
                                        std::string& refusal) {
    if (c_.n_heads < 1 || c_.is_mla()) return std::nullopt;
    const std::string_view module = module_of(t.name), last = last_component(module);
    const index_t extent = t.shape[static_cast<std::size_t>(dim)];
    const index_t d = c_.head_dim, q = c_.n_heads * d, kv = c_.n_kv_heads * d;
    const shard::gqa g{c_.n_heads, c_.n_kv_heads, d};
    const bool out_dim = s.kind == family::colwise;
    const auto checked = [&](const shard::gqa& heads) {
      refusal = heads.refusal(o_.tp, t.name);
      return refusal.empty();
    };
    if (out_dim && last == "sinks" && t.name == module && extent == c_.n_heads && checked(g))
      return shard::gqa{c_.n_heads, c_.n_kv_heads, 1}.q_partition(o_.tp);
    if (out_dim && (last == "q_proj" || last == "query") && extent == q && checked(g))
      return g.q_partition(o_.tp);
    if (out_dim && (last == "k_proj" || last == "v_proj" || last == "key" || last == "value") &&
        extent == kv && checked(g)) {
      if (const index_t copies = g.kv_copies(o_.tp); copies > c_.n_kv_heads)
        notes_.add(fmt::format(
            "KV heads replicated: {} KV heads over tp {} are held {} times in all, +{:.0f}% of "
            "the tensor's bytes over the group (each on the ranks whose query heads use it; its "
            "dK, dV and weight gradients are summed over those ranks); KV heads by rank: {}: {}",
            c_.n_kv_heads, o_.tp, copies,
            100.0 * static_cast<double>(copies - c_.n_kv_heads) /
                static_cast<double>(c_.n_kv_heads),
            g.kv_heads_by_rank(o_.tp), name_pattern(t.name)));
      return g.kv_partition(o_.tp);
    }
    if (out_dim && last == "qkv_proj" && extent == q + 2 * kv && checked(g))
      return g.qkv_partition(o_.tp);
    if (s.kind == family::rowwise && (last == "o_proj" || last == "out_proj" || last == "dense") &&
        extent == q && module.find("attn") != std::string_view::npos && checked(g))
      return g.q_partition(o_.tp);
    return std::nullopt;
  }

  /// The unit mesh of a unit style: the dim in units of head_dim (transformers: the config's
  /// head_dim, else hidden_size / n_heads); `refusal` says why when it is not whole units.
  std::optional<shard::partition> units(const tensor_decl& t, int dim, std::string& refusal) {
    const index_t extent = t.shape[static_cast<std::size_t>(dim)], d = c_.head_dim;
    if (d < 1 || extent % d != 0) {
      refusal = fmt::format(
          "{}: a unit style splits dim {} ({}) in whole units of head_dim, but {} is not a "
          "multiple of head_dim {}",
          t.name, dim, extent, extent, d);
      return std::nullopt;
    }
    const shard::units u{extent / d, d};
    if (const int replicas = u.replicas(o_.tp); replicas > 1)
      notes_.add(fmt::format(
          "units replicated: {} units of {} over tp {} form a ({} × {}) mesh: each unit is held "
          "by {} ranks, +{:.0f}% of the tensor's bytes over the group (transformers 5.25's unit "
          "styles; the replicas' weight gradients are summed over them, a rowwise output over "
          "one rank of each): {}",
          u.n_units, d, o_.tp, u.groups(o_.tp), replicas, replicas, 100.0 * (replicas - 1),
          name_pattern(t.name)));
    return u.of(o_.tp);
  }

  /// Whole experts per rank (style::whole_experts): dim 0 of a fused tensor; a tensor stored
  /// per expert goes whole to the rank owning its expert.
  placing experts(const tensor_decl& t) {
    const std::optional<index_t> e = expert_of(t.name);
    const index_t n = e ? c_.n_experts : t.shape[0];
    if (std::string why = style::expert_refusal(n, o_.tp, t.name); !why.empty() && (!e || n >= 1))
      return {std::nullopt, std::move(why), true};
    if (!e) return {style::whole_experts(t.shape, o_.tp, t.name)};
    expect(n >= 1,
           "{}: grouped_gemm places expert {} on a rank, but the config gives no expert "
           "count (num_local_experts, num_experts or n_routed_experts)",
           t.name, *e);
    expect(*e < n, "{}: expert {} is outside the config's {} experts", t.name, *e, n);
    std::vector<index_t> stacked{n}, origin(t.shape.size() + 1, 0);
    stacked.insert(stacked.end(), t.shape.begin(), t.shape.end());
    origin[0] = *e;
    return {shard::part_placement(style::whole_experts(std::move(stacked), o_.tp, t.name), origin,
                                  t.shape, t.name)};
  }

  void note_uneven(const tensor_decl& t, int dim, const shard::partition& p) {
    const std::vector<index_t> sizes = p.sizes();
    if (std::adjacent_find(sizes.begin(), sizes.end(), std::not_equal_to<>()) == sizes.end())
      return;
    const index_t extent = t.shape[static_cast<std::size_t>(dim)];
    // Built in place (fmt 9's join trips GCC 12's -Wstringop-overflow at -O3).
    std::string list;
    for (const index_t n : sizes) {
      if (!list.empty()) list += ", ";
      list += std::to_string(n);
    }
    const std::string none = std::find(sizes.begin(), sizes.end(), 0) != sizes.end()
                                 ? "; some ranks hold none of it"
                                 : "";
    // A dim that divides can still split unevenly: in whole heads (3 KV heads over 2 ranks) or
    // blocks, which is what then does not divide.
    if (extent % o_.tp == 0)
      notes_.add(fmt::format(
          "{} dim {} ({}) divides over tp {} but is split {}: its whole heads or blocks do not{}",
          name_pattern(t.name), dim, extent, o_.tp, list, none));
    else
      notes_.add(fmt::format("{} dim {} ({}) does not divide over tp {}: split {}{}",
                             name_pattern(t.name), dim, extent, o_.tp, list, none));
  }

  const model_config& c_;
  resolve_options o_;
  note_counter& notes_;
};

}  // namespace detail

}  // namespace tpx::inline v0::plan
