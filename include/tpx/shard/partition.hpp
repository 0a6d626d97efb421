#pragma once
/// \file
/// Partitions of one dim over `tp` ranks, when a rank's share is not one interval: fused (packed)
/// tensors whose blocks are split one by one, and splits in whole heads.
///
///   packed gate|up [2I, H], tp 2:       rank 0 holds gate[0, I/2) ++ up[0, I/2)
///     ┌ gate ┬──────┐┌ up ──┬──────┐    rank 1 holds gate[I/2, I) ++ up[I/2, I)
///     │ r0   │ r1   ││ r0   │ r1   │
///   fused q|k|v [(nq + 2·nkv)·d, H]: three blocks of unequal size, split in whole heads
///
/// A rank's `pieces` are intervals of the full dim in the order they are concatenated locally.
/// Blocks are split on their own, so uneven blocks lose nothing: over all ranks, the pieces tile
/// the dim exactly once (`overlaps()` is false). KV-head replication (gqa.hpp) makes partitions in
/// which ranks share pieces; `overlaps()` says so.

#include <algorithm>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "tpx/shard/split.hpp"

namespace tpx::inline v0::shard {

/// The intervals of a dim one rank holds, in local order.
struct pieces {
  std::vector<interval> parts;

  /// Elements held: the sum of the parts.
  index_t size() const noexcept {
    index_t n = 0;
    for (const interval& p : parts) n += p.size();
    return n;
  }
  /// Where the full-dim elements `g` (held here) sit among the local elements, as local intervals
  /// in the order of `g`.
  std::vector<interval> local_of(std::span<const interval> g) const {
    std::vector<interval> out;
    for (const interval& want : g) {
      index_t at = 0;
      for (const interval& p : parts) {
        const index_t lo = std::max(want.begin, p.begin), hi = std::min(want.end, p.end);
        if (lo < hi) {
          const interval local{at + lo - p.begin, at + hi - p.begin};
          if (!out.empty() && out.back().end == local.begin)
            out.back().end = local.end;
          else
            out.push_back(local);
        }
        at += p.size();
      }
    }
    return out;
  }
  /// The full-dim index of local element `i` (0 ≤ i < size()).
  index_t global(index_t i) const {
    for (const interval& p : parts) {
      if (i < p.size()) return p.begin + i;
      i -= p.size();
    }
    fail("shard::pieces: local index beyond the {} elements held", size());
  }
  friend bool operator==(const pieces&, const pieces&) = default;
};

/// Elements of a dim that several ranks hold, with the ranks that hold them.
struct sharing {
  std::vector<int> ranks;       ///< two or more, in rank order
  std::vector<interval> parts;  ///< the elements, in order
  bool holds(int rank) const { return std::find(ranks.begin(), ranks.end(), rank) != ranks.end(); }
  index_t size() const noexcept {
    index_t n = 0;
    for (const interval& p : parts) n += p.size();
    return n;
  }
};

/// Rounds for making one sub-group per sharing with split, which gives each rank one group per
/// call: sharings in the same round have no rank in common. Greedy, in order: a sharing takes the
/// first round none of whose sharings holds one of its ranks (for heads split in order, two
/// rounds at most: only neighbouring sharings meet, at one rank).
inline std::vector<int> split_rounds(std::span<const sharing> sets) {
  std::vector<int> round(sets.size(), 0);
  for (std::size_t s = 0; s < sets.size(); ++s) {
    const auto clashes = [&](int candidate) {
      for (std::size_t t = 0; t < s; ++t)
        if (round[t] == candidate)
          for (const int r : sets[s].ranks)
            if (sets[t].holds(r)) return true;
      return false;
    };
    int r = 0;
    while (clashes(r)) ++r;
    round[s] = r;
  }
  return round;
}

/// One block of a fused dim: `size` elements split in whole units of `unit` elements (a head's
/// `head_dim`, or 1).
struct block {
  index_t size = 0;
  index_t unit = 1;
};

/// Every rank's pieces of one dim.
class partition {
 public:
  partition() = default;
  partition(index_t extent, std::vector<pieces> ranks) : extent_(extent), ranks_(std::move(ranks)) {
    for (std::size_t r = 0; r < ranks_.size(); ++r)
      for (const interval& p : ranks_[r].parts)
        expect(0 <= p.begin && p.begin <= p.end && p.end <= extent_,
               "shard::partition: rank {} holds [{}, {}), outside the dim [0, {})", r, p.begin,
               p.end, extent_);
  }

  /// One interval per rank, as `split` gives it.
  static partition split(index_t size, int tp, split_kind kind, dim_ref what = {}) {
    std::vector<pieces> ranks;
    for (const interval& i : split_all(size, tp, kind, what)) ranks.push_back({{i}});
    return {size, std::move(ranks)};
  }

  /// A fused dim of `blocks`: each block split over the ranks in whole units, the rank's pieces
  /// concatenated in block order.
  static partition packed(std::span<const block> blocks, int tp, split_kind kind,
                          dim_ref what = {}) {
    expect(tp >= 1, "{} dim {}: tp must be at least 1, got tp = {}", what.tensor, what.dim, tp);
    std::vector<pieces> ranks(static_cast<std::size_t>(tp));
    index_t offset = 0;
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      const block& blk = blocks[b];
      expect(blk.unit >= 1 && blk.size >= 0 && blk.size % blk.unit == 0,
             "{} dim {}: packed block {} has size {}, which is not a whole number of units of {}",
             what.tensor, what.dim, b, blk.size, blk.unit);
      const std::string block_name = fmt::format("{} (packed block {})", what.tensor, b);
      for (int r = 0; r < tp; ++r) {
        const interval units =
            shard::split(blk.size / blk.unit, tp, r, kind, {block_name, what.dim});
        ranks[static_cast<std::size_t>(r)].parts.push_back(
            {offset + units.begin * blk.unit, offset + units.end * blk.unit});
      }
      offset += blk.size;
    }
    return {offset, std::move(ranks)};
  }

  /// `n_heads × head_dim` split in whole heads.
  static partition heads(index_t n_heads, index_t head_dim, int tp, split_kind kind,
                         dim_ref what = {}) {
    const block b{n_heads * head_dim, head_dim};
    return packed(std::span<const block>(&b, 1), tp, kind, what);
  }

  /// The same partition of a dim whose every element becomes `factor` consecutive elements (a
  /// row of `factor` elements, or an element of `factor` bytes).
  partition scaled(index_t factor) const {
    expect(factor >= 0, "shard::partition: cannot scale by {}", factor);
    std::vector<pieces> ranks = ranks_;
    for (pieces& p : ranks)
      for (interval& i : p.parts) i = {i.begin * factor, i.end * factor};
    return {extent_ * factor, std::move(ranks)};
  }

  index_t extent() const noexcept { return extent_; }
  int ranks() const noexcept { return static_cast<int>(ranks_.size()); }
  const pieces& of(int rank) const {
    expect(rank >= 0 && rank < ranks(), "shard::partition: rank {} of a partition over {} ranks",
           rank, ranks());
    return ranks_[static_cast<std::size_t>(rank)];
  }
  /// Elements each rank holds, in rank order.
  std::vector<index_t> sizes() const {
    std::vector<index_t> s;
    for (const pieces& p : ranks_) s.push_back(p.size());
    return s;
  }
  /// True when every rank holds at most one interval and the intervals follow one another in rank
  /// order without overlap or gap: a rank-ordered concatenation of the shards is then the dim.
  bool is_rank_ordered() const {
    index_t next = 0;
    for (const pieces& p : ranks_) {
      if (p.parts.size() > 1) return false;
      if (p.parts.size() == 1 && !p.parts[0].empty()) {
        if (p.parts[0].begin != next) return false;
        next = p.parts[0].end;
      }
    }
    return next == extent_;
  }
  /// The elements several ranks hold, grouped by the set of ranks holding them (in the order of
  /// each set's first element); empty when nothing overlaps.
  std::vector<sharing> shared_parts() const {
    std::vector<std::vector<int>> holders(static_cast<std::size_t>(extent_));
    for (int r = 0; r < ranks(); ++r)
      for (const interval& i : ranks_[static_cast<std::size_t>(r)].parts)
        for (index_t e = i.begin; e < i.end; ++e) holders[static_cast<std::size_t>(e)].push_back(r);
    std::vector<sharing> out;
    for (index_t e = 0; e < extent_;) {
      const std::vector<int>& h = holders[static_cast<std::size_t>(e)];
      index_t f = e + 1;
      while (f < extent_ && holders[static_cast<std::size_t>(f)] == h) ++f;
      if (h.size() >= 2) {
        auto it = std::find_if(out.begin(), out.end(), [&](const sharing& s) { return s.ranks == h; });
        if (it == out.end()) it = out.insert(out.end(), sharing{h, {}});
        it->parts.push_back({e, f});
      }
      e = f;
    }
    return out;
  }
  /// True when some element is held by more than one rank (replication).
  bool overlaps() const { return coverage_max() > 1; }
  /// True when every element is held by at least one rank.
  bool covers() const {
    const std::vector<int> c = coverage();
    return std::all_of(c.begin(), c.end(), [](int n) { return n >= 1; });
  }
  /// How many ranks hold each element of the dim.
  std::vector<int> coverage() const {
    std::vector<int> c(static_cast<std::size_t>(extent_), 0);
    for (const pieces& p : ranks_)
      for (const interval& i : p.parts)
        for (index_t e = i.begin; e < i.end; ++e) ++c[static_cast<std::size_t>(e)];
    return c;
  }

  /// For every element of the dim, the rank and local index it is read from when gathering: the
  /// lowest rank holding it. Errors if an element is held by no rank.
  std::vector<std::pair<int, index_t>> sources() const {
    std::vector<std::pair<int, index_t>> src(static_cast<std::size_t>(extent_), {-1, 0});
    for (int r = ranks() - 1; r >= 0; --r) {
      index_t local = 0;
      for (const interval& i : ranks_[static_cast<std::size_t>(r)].parts)
        for (index_t e = i.begin; e < i.end; ++e) src[static_cast<std::size_t>(e)] = {r, local++};
    }
    for (std::size_t e = 0; e < src.size(); ++e)
      expect(src[e].first >= 0, "shard::partition: element {} of the dim is held by no rank", e);
    return src;
  }

  /// The same extent and the same pieces per rank.
  friend bool operator==(const partition&, const partition&) = default;

 private:
  int coverage_max() const {
    const std::vector<int> c = coverage();
    return c.empty() ? 0 : *std::max_element(c.begin(), c.end());
  }

  index_t extent_ = 0;
  std::vector<pieces> ranks_;
};

}  // namespace tpx::inline v0::shard
