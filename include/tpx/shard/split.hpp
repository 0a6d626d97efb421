#pragma once
/// \file
/// Per-rank intervals of one dim split over `tp` ranks. Pure functions.
///
///   even      size % tp == 0 required; every rank holds size / tp
///   balanced  the first size % tp ranks hold one more: sizes differ by at most one
///   chunk     torch.chunk: every rank holds ceil(size / tp) until the dim runs out, so trailing
///             ranks may be short or empty (size 10, tp 4 → 3 3 3 1; size 5, tp 4 → 2 2 1 0)
///
/// Every split tiles [0, size): the intervals are disjoint, ordered by rank and cover the dim.

#include <string_view>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"

namespace tpx::inline v0::shard {

/// How a dim is divided among ranks.
enum class split_kind { even, balanced, chunk };

constexpr std::string_view name(split_kind k) noexcept {
  switch (k) {
    case split_kind::even:
      return "even";
    case split_kind::balanced:
      return "balanced";
    case split_kind::chunk:
      return "chunk";
  }
  return "?";
}

/// A half-open range [begin, end) of one dim.
struct interval {
  index_t begin = 0;
  index_t end = 0;
  constexpr index_t size() const noexcept { return end - begin; }
  constexpr bool empty() const noexcept { return end == begin; }
  friend constexpr bool operator==(const interval&, const interval&) = default;
};

/// What is being split, for error messages: a tensor's name and the dim.
struct dim_ref {
  std::string_view tensor = "tensor";
  int dim = 0;
};

/// True when `kind` can split a dim of `size` over `tp` ranks (only `even` can refuse).
constexpr bool can_split(index_t size, int tp, split_kind kind) noexcept {
  return tp >= 1 && size >= 0 && (kind != split_kind::even || size % tp == 0);
}

/// The interval of `rank` when a dim of `size` is split over `tp` ranks.
constexpr interval split(index_t size, int tp, int rank, split_kind kind, dim_ref what = {}) {
  expect(tp >= 1, "{} dim {}: tp must be at least 1, got tp = {}", what.tensor, what.dim, tp);
  expect(rank >= 0 && rank < tp, "{} dim {}: rank {} is outside the group of tp = {} ranks",
         what.tensor, what.dim, rank, tp);
  expect(size >= 0, "{} dim {}: the size {} is negative", what.tensor, what.dim, size);
  switch (kind) {
    case split_kind::even: {
      expect(size % tp == 0,
             "{} dim {} has size {}, which tp = {} does not divide ({} % {} = {}); the even split "
             "needs a multiple of tp: use a balanced or chunk split",
             what.tensor, what.dim, size, tp, size, tp, size % tp);
      const index_t part = size / tp;
      return {rank * part, (rank + 1) * part};
    }
    case split_kind::balanced: {
      const index_t base = size / tp;
      const index_t extra = size % tp;
      const index_t begin = rank * base + (rank < extra ? rank : extra);
      return {begin, begin + base + (rank < extra ? 1 : 0)};
    }
    case split_kind::chunk: {
      const index_t part = (size + tp - 1) / tp;
      const index_t begin = rank * part < size ? rank * part : size;
      const index_t end = (rank + 1) * part < size ? (rank + 1) * part : size;
      return {begin, end};
    }
  }
  return {};
}

/// The intervals of every rank, in rank order.
inline std::vector<interval> split_all(index_t size, int tp, split_kind kind, dim_ref what = {}) {
  std::vector<interval> out;
  expect(tp >= 1, "{} dim {}: tp must be at least 1, got tp = {}", what.tensor, what.dim, tp);
  out.reserve(static_cast<std::size_t>(tp));
  for (int r = 0; r < tp; ++r) out.push_back(split(size, tp, r, kind, what));
  return out;
}

/// The size each rank holds, in rank order (what collectives take as per-rank counts).
inline std::vector<index_t> split_sizes(index_t size, int tp, split_kind kind, dim_ref what = {}) {
  std::vector<index_t> out;
  for (const interval& i : split_all(size, tp, kind, what)) out.push_back(i.size());
  return out;
}

}  // namespace tpx::inline v0::shard
