#pragma once
/// \file
/// How a `linear` layer is built (`linear_options`: its name, shape, and how its split dim is
/// cut) and the partition of that dim a style gives it; the scratch arena its passes share.

#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"
#include "tpx/shard/partition.hpp"
#include "tpx/shard/units.hpp"
#include "tpx/style/placement.hpp"

namespace tpx::inline v0::layer {

/// How a linear layer is built.
struct linear_options {
  std::string name = "linear";  ///< the tensor name used in error messages
  index_t out_features = 0;     ///< rows of the full weight
  index_t in_features = 0;      ///< columns of the full weight
  shard::split_kind split = shard::split_kind::balanced;
  /// A fused split dim (gate|up, q|k|v): its blocks, each split on its own (HF `packed_colwise`,
  /// `packed_rowwise`). Empty: the dim is one block.
  std::vector<shard::block> blocks = {};
  /// The partition of the split dim, when neither `split` nor `blocks` describes it (whole heads,
  /// GQA with replicated KV heads). Overrides both.
  std::optional<shard::partition> partition = std::nullopt;
};

namespace detail {

/// Hands out consecutive spans of one scratch buffer.
template <class T>
struct arena {
  std::span<T> rest;
  std::span<T> take(index_t n) {
    const std::span<T> s = rest.first(static_cast<std::size_t>(n));
    rest = rest.subspan(static_cast<std::size_t>(n));
    return s;
  }
};

/// The partition of `Style`'s split dim for a layer of `opt` over `tp` ranks, checked: every
/// element on some rank, and input features (rowwise) on one rank only. A replicated layer's
/// "partition" is the whole out dim on every rank.
template <class Style>
shard::partition linear_partition(const linear_options& opt, int tp) {
  constexpr int split_dim = Style::split_dim;
  const extents<2> shape{{opt.out_features, opt.in_features}};
  const std::string what = opt.name + ".weight";
  if constexpr (split_dim < 0) {
    expect(!opt.partition && opt.blocks.empty(),
           "{} ({}): a replicated layer splits no dim, so it takes no blocks or partition",
           opt.name, Style::name);
    return shard::partition(
        shape[0], std::vector<shard::pieces>(static_cast<std::size_t>(tp), {{{0, shape[0]}}}));
  } else {
    const style::cut c{.kind = opt.split, .blocks = opt.blocks, .partition = opt.partition};
    shard::partition p = c.of(shape[split_dim], tp, {what, split_dim});
    expect(p.covers(), "{}: the partition leaves elements of weight dim {} on no rank", what,
           split_dim);
    // Input features shared only as whole replicas (unit_rowwise): the partial outputs are then
    // summed over one rank of each replica group.
    constexpr bool plain_rowwise =
        std::is_same_v<typename Style::input_pair, comm::no_collective> &&
        std::is_same_v<typename Style::output_pair, comm::reduce_from_parallel>;
    expect(split_dim == 0 || !p.overlaps() || (plain_rowwise && shard::replica_axis_of(p)),
           "{} ({}): ranks may share input features only as whole replicas of a row-wise layer "
           "with a sharded input and an all-reduced output (unit_rowwise: ranks in groups of "
           "equal size holding identical pieces, the groups' pieces disjoint); otherwise the "
           "partial sums would count them twice",
           what, Style::name);
    return p;
  }
}

}  // namespace detail

}  // namespace tpx::inline v0::layer
