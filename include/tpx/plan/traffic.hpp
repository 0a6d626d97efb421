#pragma once
/// \file
/// The communication of a resolved plan, per token per layer, from the styles' descriptions
/// (style/description.hpp, reached through plan::describe).
///
/// Communication per token per layer (bytes of activations, in the config's dtype; nccl-tests
/// sizes as the communicators count them: all-reduce the buffer, all-gather the gathered total,
/// reduce-scatter the input, all-to-all-v the bytes sent to other ranks), from the styles:
///   colwise linears reading one input (q, k, v; gate, up)  fwd: — (SP: all-gather of the input)
///                                                           bwd: all-reduce of dx (SP: reduce-
///                                                           scatter); a gathered output adds
///                                                           an all-gather of the output in fwd
///   rowwise linear        fwd: all-reduce of the output (SP, or rowwise_reduce_scatter: reduce-
///                         scatter; unit_rowwise: over the unit axis, gcd(units, tp) ranks, for
///                         the bus bytes); bwd: — (SP: all-gather of dy; a split input: all-gather
///                         of dx)
///   SP entry module rule (module_allgather…)   fwd: all-gather of [hidden]; bwd: reduce-scatter;
///                         the colwise linears inside add no input collective of their own
///   experts module rule (moe_tp_experts, gather, …)   fwd: all-reduce of [hidden] (SP: all-gather
///                         of [hidden | top-k ids | top-k weights] + reduce-scatter of [hidden]);
///                         bwd: all-reduce of dx and of the top-k weights (SP: reduce-scatter +
///                         all-gather, and the top-k weights). Expert tensors inside such a module
///                         add nothing of their own. (tests/model checks these figures against
///                         the bytes the built layers move.)
///   expert-parallel experts (ep_dispatch_experts, or grouped_gemm experts with no module rule)
///                         by the resolution's dispatch: all_to_all — all-to-all-v dispatch and
///                         combine of top-k × hidden per token, (ep − 1) / ep of it leaving the
///                         rank under uniform routing, in fwd and again in bwd; all_reduce (masked)
///                         — as an experts module rule without SP
///   experts stored one by one with no module rule: their linears' collectives, × top-k / E
///   mla_kv_a_proj         bwd: all-reduce of the rope part of dy (qk_rope_head_dim); SP: fwd
///                         all-gather of the rope part, bwd reduce-scatter of its gradient
///   a shared expert (…shared_expert(s)…) beside the routed ones: nothing of its own (tpx runs it
///                         inside the experts layer, whose reduction carries its output and dx);
///                         split and gated (Qwen2-MoE), the gate's score gradient: bwd all-reduce
///                         of 1
/// The figure is the mean over the numbered layers; parameter-gradient all-reduces (once per
/// step, not per token) and the embedding and LM head (outside the layers) are not included.

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "tpx/plan/model_config.hpp"
#include "tpx/plan/path.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/plan/resolution.hpp"
#include "tpx/plan/rules.hpp"
#include "tpx/plan/visit.hpp"
#include "tpx/shard/units.hpp"
#include "tpx/style/description.hpp"

namespace tpx::inline v0::plan {

namespace detail {

/// Elements one collective moves for an activation of `n` elements per token: all-reduce,
/// all-gather and reduce-scatter the whole activation (nccl-tests sizes); a split moves nothing.
inline double moved(collective c, double n) {
  return c == collective::none || c == collective::split ? 0.0 : n;
}

/// nccl-tests' bus-bandwidth factor of collective `c` over `n` ranks: the bytes each rank's
/// links carry per byte of size — all-reduce 2(n−1)/n, all-gather and reduce-scatter (n−1)/n,
/// all-to-all (n−1)/n, which the all-to-all sizes here already apply (they count only the rows
/// that leave the rank), so 1 on them.
inline double bus_factor(collective c, int n) {
  const double r = n > 1 ? static_cast<double>(n - 1) / n : 0.0;
  switch (c) {
    case collective::all_reduce:
      return 2 * r;
    case collective::all_gather:
    case collective::reduce_scatter:
      return r;
    case collective::all_to_all:
      return n > 1 ? 1.0 : 0.0;
    default:
      return 0.0;
  }
}

/// Elements per token one direction moves: nccl-tests sizes, and bus elements beside them.
struct traffic {
  double size = 0, bus = 0;
};

/// The communication of a resolved plan, per token per layer (see the file comment).
class comm_counter {
 public:
  comm_counter(const model_config& c, resolve_options o, note_counter& notes)
      : c_(c), o_(o), notes_(notes) {}

  /// The module-level rules covering a tensor, with their concrete module paths.
  struct cover {
    std::string gather_path;    ///< an SP entry module: its input all-gathered
    std::string reduce_path;    ///< an experts-like module: its output all-reduced
    bool moe = false;           ///< the reducing module is an experts module (top-k weights)
    std::string dispatch_path;  ///< an expert-parallel module dispatching by all-to-all
  };

  /// Counts the collectives of `t` under the module rules `m` covering it.
  void add(const resolved_tensor& t, const cover& m) {
    const std::optional<index_t> layer = layer_of(t.tensor.name);
    if (!layer) return;
    layer_totals& l = layers_[*layer];
    const double h = static_cast<double>(c_.hidden_size);
    const bool gathered = !m.gather_path.empty();
    if (const std::optional<std::string> shared = shared_expert_of(t.tensor.name)) {
      // tpx runs a shared expert inside the experts layer beside the routed ones: its output
      // joins theirs in the experts' one reduction and its dx theirs, so it adds no collective
      // of its own. Split over the group, a gated one (Qwen2-MoE) all-reduces its gate's score
      // gradient: one element a token, in backward.
      if (c_.shared_expert_intermediate_size > 0 && !t.placement.is_replicated() &&
          l.modules.insert(*shared + " gate scores").second)
        add(l.bwd, collective::all_reduce, 1.0);
      return;
    }
    if (!m.dispatch_path.empty()) {
      all_to_all(l, m.dispatch_path);
      return;
    }
    if (gathered && l.modules.insert(m.gather_path).second) {
      add(l.fwd, collective::all_gather, h);      // of the module's input
      add(l.bwd, collective::reduce_scatter, h);  // its conjugate, of dx
    }
    if (!m.reduce_path.empty()) {
      // A module whose output is all-reduced runs the experts module's collectives on its tokens
      // (style::moe_tensor; under SP, unless the module's input is gathered already,
      // moe_tensor_sp); its tensors add nothing of their own.
      if (l.modules.insert(m.reduce_path).second) {
        const style::description d = o_.sp && !gathered ? style::describe<style::moe_tensor_sp>()
                                                        : style::describe<style::moe_tensor>();
        add(l.fwd, d.forward, h);
        add(l.bwd, d.backward, h);
        // tpx's SP experts gather each token's top-k ids and weights with its row; d(top-k
        // weights) goes back as dx does.
        const double k = static_cast<double>(c_.experts_per_token);
        if (m.moe && o_.sp && !gathered) add(l.fwd, d.forward.input, 2 * k);
        if (m.moe) add(l.bwd, d.backward.input, k);
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
      case family::colwise:
      case family::rowwise:
        linear(l, t, describe_linear(t), in * share, out * share, gathered);
        break;
      case family::mla_kv_a_proj: {
        // The shared k_rope: its gradient all-reduced; under SP the rank's tokens' k_rope
        // gathered, and its gradient reduce-scattered.
        const double r = static_cast<double>(c_.qk_rope_head_dim);
        if (o_.sp) {
          add(l.fwd, collective::all_gather, r);
          add(l.bwd, collective::reduce_scatter, r);
        } else {
          add(l.bwd, collective::all_reduce, r);
        }
        break;
      }
      case family::grouped_gemm: {
        // No module rule: the experts module runs the resolution's dispatch, once per module.
        const std::string_view mod = module_of(t.tensor.name);
        const std::string module(mod.substr(0, mod.find("experts")));
        const std::optional<style::description> d =
            plan::describe(style_spec{.kind = family::moe_experts, .dispatch = o_.dispatch}, o_.sp);
        if (d && d->forward.input == collective::all_to_all) {
          all_to_all(l, module);
        } else if (d && l.modules.insert(module).second) {  // masked: the output all-reduced
          add(l.fwd, d->forward, h);
          add(l.bwd, d->backward, h);
          add(l.bwd, d->backward.input, static_cast<double>(c_.experts_per_token));  // d(w)
        }
        break;
      }
      default:
        break;
    }
  }

  /// Mean bytes per token per layer over `layers` numbered layers: forward, backward.
  std::pair<traffic, traffic> per_layer(index_t layers) const {
    traffic f, b;
    for (const auto& [n, l] : layers_) {
      f.size += l.fwd.size;
      f.bus += l.fwd.bus;
      b.size += l.bwd.size;
      b.bus += l.bwd.bus;
    }
    const double scale =
        static_cast<double>(c_.element_bytes()) / static_cast<double>(std::max<index_t>(layers, 1));
    return {{f.size * scale, f.bus * scale}, {b.size * scale, b.bus * scale}};
  }

 private:
  /// The module path of the shared expert `name` belongs to (`….mlp.shared_expert`,
  /// `shared_experts`, the gate `shared_expert_gate`), or nothing.
  static std::optional<std::string> shared_expert_of(std::string_view name) {
    std::string path;
    for (const std::string_view c : components(name)) {
      if (c.starts_with("shared_expert")) return path + std::string(c);
      path += std::string(c) + ".";
    }
    return std::nullopt;
  }

  struct layer_totals {
    traffic fwd, bwd;  // elements per token
    std::set<std::string> groups, modules;
  };
  /// Counts collective `c` on an activation of `n` elements per token, over `ranks` ranks (−1:
  /// the group).
  void add(traffic& t, collective c, double n, int ranks = -1) const {
    t.size += moved(c, n);
    t.bus += moved(c, n) * bus_factor(c, ranks < 0 ? o_.tp : ranks);
  }
  /// Counts both sides of a pass on an activation of `n` elements per token.
  void add(traffic& t, style::pass p, double n) const {
    add(t, p.input, n);
    add(t, p.output, n);
  }
  /// Dispatch and combine by all-to-all-v, once per experts `module`: the collectives of
  /// style::moe_all_to_all, (ep − 1) / ep of each token's top-k rows leaving the rank.
  void all_to_all(layer_totals& l, const std::string& module) {
    if (!l.modules.insert(module).second) return;
    constexpr style::description d = style::describe<style::moe_all_to_all>();
    const double rows = static_cast<double>(c_.experts_per_token) *
                        static_cast<double>(c_.hidden_size) * (o_.ep - 1) / o_.ep;
    add(l.fwd, d.forward, rows);
    add(l.bwd, d.backward, rows);
  }

  /// The collectives of a linear tensor's style: its SP form under `sp`; a style tpx has no SP
  /// form of is counted as it runs without SP (and noted).
  std::optional<style::description> describe_linear(const resolved_tensor& t) {
    if (const std::optional<style::description> d = plan::describe(t.spec, o_.sp)) return d;
    const std::optional<style::description> d = plan::describe(t.spec, false);
    if (d && o_.sp)
      notes_.add(fmt::format(
          "{}: style '{}' has no sequence-parallel form in tpx; its communication is counted as "
          "without SP",
          name_pattern(t.tensor.name), t.style));
    return d;
  }

  /// A linear's collectives: those on its input side (x in forward, dx in backward) are shared
  /// by the linears of one module reading one input (q, k, v; gate, up — not MLA's q_b and kv_b,
  /// which read different inputs); under a module that all-gathers its input, a row-split
  /// weight's input collectives are that gather.
  void linear(layer_totals& l, const resolved_tensor& t, std::optional<style::description> d,
              double in, double out, bool gathered) {
    if (!d) return;
    const bool input_side =
        d->forward.input != collective::none || d->backward.input != collective::none;
    if (input_side && !(gathered && d->split_dim == 0)) {
      const std::string_view m = module_of(t.tensor.name);
      const std::string group =
          fmt::format("{}|{}|{}|{}", m.substr(0, m.rfind('.')), in, style::name(d->forward.input),
                      style::name(d->backward.input));
      if (l.groups.insert(group).second) {
        add(l.fwd, d->forward.input, in);
        add(l.bwd, d->backward.input, in);
      }
    }
    add(l.fwd, d->forward.output, out, output_ranks(t, in));
    add(l.bwd, d->backward.output, out);
  }

  /// The ranks a linear's output collective spans: unit_rowwise's unit axis, gcd(units, tp) of
  /// the in dim's units of head_dim; else the group.
  int output_ranks(const resolved_tensor& t, double in) const {
    const index_t d = c_.head_dim, n = static_cast<index_t>(in);
    if (!t.spec.units || t.spec.kind != family::rowwise || d < 1 || n % d != 0) return o_.tp;
    return shard::units{n / d, d}.groups(o_.tp);
  }

  const model_config& c_;
  resolve_options o_;
  note_counter& notes_;
  std::map<index_t, layer_totals> layers_;
};

}  // namespace detail

}  // namespace tpx::inline v0::plan
