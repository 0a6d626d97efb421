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

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/shard/partition.hpp"

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

/// Number of elements of a shape: the product of its dims (1 for a scalar).
inline index_t element_count(const std::vector<index_t>& shape) {
  index_t n = 1;
  for (const index_t d : shape) n *= d;
  return n;
}

/// "[4096, 11008]": a shape as messages print it.
inline std::string shape_string(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
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
           "{}: cannot split dim {} of a tensor of shape {}", tensor, dim, shape_string(shape));
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

}  // namespace tpx::inline v0::shard
