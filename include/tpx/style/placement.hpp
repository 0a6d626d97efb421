#pragma once
/// \file
/// Where a rank's shard of each tensor of a style sits — the one place this fact lives. Layers
/// (`linear`, `experts`, `vocab_embedding`), the plan's placer (Hugging Face rules and DeepSpeed
/// specs) and the checkpoint readers all ask here.
///
///   parameter                      style splits        tensor dim split
///   W [.., out, in]                split_dim 0 (rows)  nd − 2        (in_out: nd − 1)
///   W [.., out, in]                split_dim 1 (cols)  nd − 1        (in_out: nd − 2)
///   bias [out]                     split_dim 0         0             split with the out rows
///   bias [out]                     split_dim 1 or −1   —             whole on every rank
///   experts gate_up [E, 2I, H]     TP modes            1, packed     gate rows | up rows
///   experts down [E, H, I]         TP modes            2
///   experts (either)               EP modes            0             whole experts, E / ep each
///   shared expert [2Is, H] / [H, Is]  TP modes         0 packed / 1  (all_to_all: whole)
///
/// How the split dim is cut is a `cut`: a plain split of `kind`, block by block for a fused dim
/// (q | k | v, gate | up), or a partition the caller computed (whole heads, GQA's replicated KV
/// heads, shard/gqa.hpp).

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/shard/placement.hpp"
#include "tpx/style/concept.hpp"
#include "tpx/style/moe_experts.hpp"

namespace tpx::inline v0::style {

/// How a split dim is cut over the ranks. `partition` wins over `blocks`, which win over `kind`.
struct cut {
  shard::split_kind kind = shard::split_kind::balanced;
  std::vector<shard::block> blocks = {};           ///< a fused dim: each block split on its own
  std::optional<shard::partition> partition = {};  ///< computed by the caller (heads, GQA)

  /// The partition of a dim of `extent` over `tp` ranks; an error naming `what` when the given
  /// partition does not cover the dim over `tp` ranks.
  shard::partition of(index_t extent, int tp, shard::dim_ref what) const {
    if (partition) {
      expect(partition->extent() == extent && partition->ranks() == tp,
             "{} dim {}: the partition covers {} elements over {} ranks, but the dim has {} over "
             "{}",
             what.tensor, what.dim, partition->extent(), partition->ranks(), extent, tp);
      return *partition;
    }
    if (!blocks.empty()) return shard::partition::packed(blocks, tp, kind, what);
    return shard::partition::split(extent, tp, kind, what);
  }
};

/// `shape[dim]` cut by `c` over `tp` ranks (dim < 0: whole on every rank).
inline shard::placement dim_placement(std::vector<index_t> shape, int dim, int tp, const cut& c,
                                      std::string_view name) {
  expect(tp >= 1, "{}: cannot place a tensor over {} ranks", name, tp);
  if (dim < 0) return shard::placement::replicated(std::move(shape));
  expect(static_cast<std::size_t>(dim) < shape.size(),
         "{}: cannot split dim {} of a tensor of shape {}", name, dim, shard::shape_text(shape));
  shard::partition p = c.of(shape[static_cast<std::size_t>(dim)], tp, {name, dim});
  return shard::placement::split(std::move(shape), dim, std::move(p), name);
}

/// A parameter as a linear-like style sees it: the trailing two dims of a weight are [out, in]
/// ([in, out] with `in_out`, as GPT-2's Conv1D stores them); a bias, or any 1-d tensor, is [out].
/// Leading dims (experts) are never split by such a style.
struct parameter {
  std::string_view name;
  std::vector<index_t> shape;
  bool in_out = false;
  bool bias = false;
};

/// The tensor dim of `p` a style splitting weight dim `split_dim` (0 rows, 1 columns, −1 none)
/// cuts, or −1 when every rank holds `p` whole.
inline int tensor_dim(int split_dim, const parameter& p) {
  const int nd = static_cast<int>(p.shape.size());
  expect(nd >= 1 || split_dim < 0, "{}: a scalar has no dim to split", p.name);
  if (split_dim < 0) return -1;
  if (p.bias || nd == 1) return split_dim == 0 ? nd - 1 : -1;
  expect(split_dim <= 1, "{}: a style splits weight dim 0 or 1, not {}", p.name, split_dim);
  return nd - 2 + (split_dim == 0 ? (p.in_out ? 1 : 0) : (p.in_out ? 0 : 1));
}

/// Where each rank's shard of `p` sits under a style splitting weight dim `split_dim`.
inline shard::placement matrix_placement(int split_dim, const parameter& p, int tp,
                                         const cut& c = {}) {
  return dim_placement(p.shape, tensor_dim(split_dim, p), tp, c, p.name);
}

/// Where each rank's shard of `p` sits under the linear-like style `S` (`S::split_dim`).
template <parallel_style S>
shard::placement placement(const parameter& p, int tp, const cut& c = {}) {
  return matrix_placement(S::split_dim, p, tp, c);
}

// --- experts --------------------------------------------------------------------------------

/// Why `n_experts` cannot be held whole over `ep` ranks (a sentence naming `name`), or an empty
/// string when E % ep == 0.
inline std::string expert_refusal(index_t n_experts, int ep, std::string_view name) {
  if (ep >= 1 && n_experts >= 1 && n_experts % ep == 0) return {};
  return fmt::format(
      "{}: {} experts cannot be split over ep = {} ranks; expert parallelism needs n_experts % "
      "ep == 0 ({} % {} = {})",
      name, n_experts, ep, n_experts, ep, ep >= 1 ? n_experts % ep : 0);
}

/// Whole experts over the ranks, E / ep each in rank order; an error unless E % ep == 0.
inline shard::partition expert_partition(index_t n_experts, int ep, std::string_view name) {
  if (std::string why = expert_refusal(n_experts, ep, name); !why.empty())
    throw error(std::move(why));
  return shard::partition::split(n_experts, ep, shard::split_kind::even, {name, 0});
}

/// An expert-stacked tensor [E, …] placed in whole experts over `ep` ranks (dim 0).
inline shard::placement whole_experts(std::vector<index_t> shape, int ep, std::string_view name) {
  expect(!shape.empty(), "{}: a scalar holds no experts", name);
  shard::partition p = expert_partition(shape[0], ep, name);
  return shard::placement::split(std::move(shape), 0, std::move(p), name);
}

/// The dims of an experts module: E experts of intermediate size I over hidden H, and a shared
/// expert of intermediate size Is (0: none).
struct experts_dims {
  index_t n_experts = 0, hidden = 0, inter = 0, shared_inter = 0;
};

/// The tensors of an experts module a placement is asked for.
enum class expert_tensor { gate_up, down, shared_gate_up, shared_down };

/// Where each rank's shard of tensor `which` of an experts module sits under `moe_experts<M>`:
/// routed gate|up [E, 2I, H] and down [E, H, I] in whole experts under expert parallelism, else
/// every expert's I slice (gate_up packed colwise, down rowwise); the shared expert's
/// [2Is, H] / [H, Is] like a packed colwise / rowwise pair, or whole under all_to_all (its
/// tokens stay on their rank).
template <expert_split M>
shard::placement placement(moe_experts<M>, expert_tensor which, const experts_dims& d, int tp,
                           std::string_view name) {
  constexpr bool ep = moe_experts<M>::expert_parallel;
  const auto halves = [](index_t n) { return cut{.blocks = {{n, 1}, {n, 1}}}; };
  switch (which) {
    case expert_tensor::gate_up:
      if constexpr (ep) return whole_experts({d.n_experts, 2 * d.inter, d.hidden}, tp, name);
      return matrix_placement(0, {name, {d.n_experts, 2 * d.inter, d.hidden}}, tp, halves(d.inter));
    case expert_tensor::down:
      if constexpr (ep) return whole_experts({d.n_experts, d.hidden, d.inter}, tp, name);
      return matrix_placement(1, {name, {d.n_experts, d.hidden, d.inter}}, tp);
    case expert_tensor::shared_gate_up:
      if constexpr (M == expert_split::all_to_all)
        return shard::placement::replicated({2 * d.shared_inter, d.hidden});
      return matrix_placement(0, {name, {2 * d.shared_inter, d.hidden}}, tp,
                              halves(d.shared_inter));
    case expert_tensor::shared_down:
    default:
      if constexpr (M == expert_split::all_to_all)
        return shard::placement::replicated({d.hidden, d.shared_inter});
      return matrix_placement(1, {name, {d.hidden, d.shared_inter}}, tp);
  }
}

}  // namespace tpx::inline v0::style
