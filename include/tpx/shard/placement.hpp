#pragma once
/// \file
/// Where each rank's shard of an N-d tensor sits in the full tensor: the tensor's shape, the one
/// dim that is split (or none) and the partition of that dim. Loaders read a rank's `selection`
/// from a checkpoint; gatherers rebuild the full tensor from every rank's shard.
///
///   W [out, in] colwise, tp 2:   dim 0, rank 0 holds rows [0, out/2) × all columns
///   W [out, in] rowwise, tp 2:   dim 1, rank 0 holds all rows × columns [0, in/2)
///   gate_up [E, 2I, H] packed:   dim 1, rank 0 holds gate[0, I/2) ++ up[0, I/2) of every expert
///
/// A `selection` takes, along every dim, a list of intervals in local order; the shard is their
/// cartesian product, stored row-major.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::shard {

/// A shape as messages print it, "[4096, 11008]", written only when a message is formatted: an
/// `expect` given `shape_text(s)` builds no string when its check passes (`shape_string` would).
/// It refers to the shape, so it lives no longer than the full expression it is made in.
struct shape_text {
  explicit shape_text(std::span<const index_t> d) noexcept : dims(d) {}
  std::span<const index_t> dims;
};

}  // namespace tpx::inline v0::shard

template <>
struct fmt::formatter<tpx::shard::shape_text> {
  // No format spec: "{}" only (nothing to parse, and no fill state for GCC's -O3 to misjudge).
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <class Ctx>
  auto format(const tpx::shard::shape_text& s, Ctx& ctx) const {
    auto out = fmt::format_to(ctx.out(), "[");
    for (std::size_t i = 0; i < s.dims.size(); ++i)
      out = fmt::format_to(out, "{}{}", i ? ", " : "", s.dims[i]);
    return fmt::format_to(out, "]");
  }
};

namespace tpx::inline v0::shard {

/// A block of an N-d tensor: along every dim, the intervals taken in local order.
struct selection {
  std::vector<pieces> dims;

  /// The whole tensor of `shape`.
  static selection all(const std::vector<index_t>& shape) {
    selection s;
    for (const index_t n : shape) s.dims.push_back({{{0, n}}});
    return s;
  }
  /// The local shape: elements taken along every dim.
  std::vector<index_t> shape() const {
    std::vector<index_t> out;
    for (const pieces& p : dims) out.push_back(p.size());
    return out;
  }
  /// Elements in the block.
  index_t size() const {
    index_t n = 1;
    for (const pieces& p : dims) n *= p.size();
    return n;
  }
  friend bool operator==(const selection&, const selection&) = default;
};

/// "[4096, 11008]": a shape as messages print it, as a string.
inline std::string shape_string(const std::vector<index_t>& shape);

/// Number of elements of a shape: the product of its dims (1 for a scalar); an error naming
/// `what` (the tensor) when the product overflows 64 bits.
inline index_t element_count(const std::vector<index_t>& shape, std::string_view what = "tensor") {
  index_t n = 1;
  for (const index_t d : shape) {
    index_t r = 0;
    expect(!__builtin_mul_overflow(n, d, &r), "{}: the shape {} holds more than 2^63 elements",
           what, shape_text(shape));
    n = r;
  }
  return n;
}

/// "[4096, 11008]": a shape as messages print it.
inline std::string shape_string(const std::vector<index_t>& shape) {
  return fmt::format("{}", shape_text(shape));
}

/// Tag selecting the constructors that take a rank's shard rather than the full tensor.
struct from_shard_t {
  explicit from_shard_t() = default;
};
inline constexpr from_shard_t from_shard{};

/// A tensor's placement over the ranks of a group.
struct placement {
  std::vector<index_t> shape;  ///< the full tensor
  int dim = -1;                ///< the split dim; -1: every rank holds the whole tensor
  shard::partition partition;  ///< of `shape[dim]` over the group (unused when dim = -1)

  /// Every rank holds the whole tensor.
  static placement replicated(std::vector<index_t> shape) { return {std::move(shape), -1, {}}; }
  /// `shape[dim]` partitioned by `p`.
  static placement split(std::vector<index_t> shape, int dim, shard::partition p,
                         std::string_view tensor = "tensor") {
    expect(dim >= 0 && static_cast<std::size_t>(dim) < shape.size(),
           "{}: cannot split dim {} of a tensor of shape {}", tensor, dim, shape_text(shape));
    expect(p.extent() == shape[static_cast<std::size_t>(dim)],
           "{} dim {}: the partition covers {} elements but the dim has {}", tensor, dim,
           p.extent(), shape[static_cast<std::size_t>(dim)]);
    return {std::move(shape), dim, std::move(p)};
  }

  bool is_replicated() const noexcept { return dim < 0; }
  /// The block `rank` holds.
  selection of(int rank) const {
    selection s = selection::all(shape);
    if (!is_replicated()) s.dims[static_cast<std::size_t>(dim)] = partition.of(rank);
    return s;
  }
  /// The shape of the block `rank` holds.
  std::vector<index_t> local_shape(int rank) const { return of(rank).shape(); }
};

/// The placement a part of a larger tensor inherits: the part of `part_shape` sits at `origin`
/// of the tensor placed by `p` (a part of fewer dims fills the trailing dims: an expert's [I, H]
/// at (e, 0, 0) of [E, 2I, H]). A split along a dim the part fills is clipped to it; along a
/// leading unit dim, the part goes whole to the ranks that hold its index (split on the part's
/// first dim, the other ranks holding none of it). `name` names the part in errors.
inline placement part_placement(const placement& p, const std::vector<index_t>& origin,
                                const std::vector<index_t>& part_shape, std::string_view name) {
  if (p.is_replicated()) return placement::replicated(part_shape);
  expect(origin.size() == p.shape.size() && part_shape.size() <= p.shape.size(),
         "{}: a part of shape {} at {} cannot sit in a tensor of shape {}", name,
         shape_text(part_shape), shape_text(origin), shape_text(p.shape));
  const std::size_t lead = p.shape.size() - part_shape.size(), d = static_cast<std::size_t>(p.dim);
  const auto clip = [](const pieces& want, index_t lo, index_t hi) {
    pieces out;
    for (const interval& i : want.parts) {
      const index_t b = std::max(i.begin, lo), e = std::min(i.end, hi);
      if (b < e) out.parts.push_back({b - lo, e - lo});
    }
    return out;
  };
  std::vector<pieces> ranks;
  if (d >= lead) {
    const index_t lo = origin[d], n = part_shape[d - lead];
    for (int r = 0; r < p.partition.ranks(); ++r)
      ranks.push_back(clip(p.partition.of(r), lo, lo + n));
    return placement::split(part_shape, static_cast<int>(d - lead), {n, std::move(ranks)}, name);
  }
  expect(!part_shape.empty(), "{}: a scalar part cannot follow a split", name);
  for (int r = 0; r < p.partition.ranks(); ++r) {
    const bool holds = !clip(p.partition.of(r), origin[d], origin[d] + 1).parts.empty();
    ranks.push_back(holds ? pieces{{{0, part_shape[0]}}} : pieces{});
  }
  return placement::split(part_shape, 0, {part_shape[0], std::move(ranks)}, name);
}

}  // namespace tpx::inline v0::shard
