#pragma once
/// \file
/// The unit mesh of transformers 5.25's `unit_colwise` / `unit_rowwise`: a dim of `n_units` whole
/// units (a projection's heads) over `tp` ranks that form a 2-d mesh (g, tp / g) with
/// g = gcd(n_units, tp). The units are split over the first axis and replicated over the second,
/// so every rank holds n_units / g whole units and each unit sits on tp / g ranks, side by side:
///
///   2 units, tp 4 (g 2):   rank   0     1     2     3
///                          units  0     0     1     1
///   6 units, tp 4 (g 2):   units  0-2   0-2   3-5   3-5
///   8 units, tp 4 (g 4):   units  0-1   2-3   4-5   6-7     (no replicas: a plain split)
///
/// Rank r is in unit group r / replicas and has replica index r % replicas; the ranks of one
/// replica index hold disjoint units that together cover the dim (the "unit axis" a row-wise
/// partial sum is reduced over).
///
/// `replica_axis` finds that structure in any partition: ranks in groups of equal size holding
/// identical pieces, the groups' pieces disjoint — what a row-wise layer needs to sum its partial
/// outputs once per element of its input dim.

#include <numeric>
#include <optional>
#include <vector>

#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::shard {

struct units {
  index_t n_units = 0;    ///< whole units of the dim (heads)
  index_t unit_size = 1;  ///< elements per unit (head_dim)

  /// Unit groups: the first axis of the mesh, gcd(n_units, tp).
  int groups(int tp) const {
    check(tp);
    return static_cast<int>(std::gcd(n_units, static_cast<index_t>(tp)));
  }
  /// Ranks holding each unit: the second axis, tp / groups.
  int replicas(int tp) const { return tp / groups(tp); }
  /// The units `rank` holds.
  interval units_of(int tp, int rank) const {
    expect(rank >= 0 && rank < tp, "shard::units: rank {} of tp = {}", rank, tp);
    const int g = groups(tp);
    const index_t per = n_units / g, group = rank / (tp / g);
    return {group * per, (group + 1) * per};
  }
  /// The partition of the dim (n_units · unit_size elements): every rank its units' elements.
  partition of(int tp) const {
    std::vector<pieces> ranks;
    for (int r = 0; r < tp; ++r) {
      const interval u = units_of(tp, r);
      ranks.push_back({{{u.begin * unit_size, u.end * unit_size}}});
    }
    return {n_units * unit_size, std::move(ranks)};
  }

 private:
  void check(int tp) const {
    expect(n_units >= 1 && unit_size >= 1 && tp >= 1,
           "shard::units: {} units of {} elements cannot be placed over tp = {} ranks (all must be "
           "at least 1)",
           n_units, unit_size, tp);
  }
};

/// A partition whose ranks hold whole replicas: `replicas` ranks per distinct set of pieces.
struct replica_axis {
  int replicas = 1;
  std::vector<int>
      index;  ///< each rank's replica index: its place among the ranks holding its pieces

  int of(int rank) const { return index[static_cast<std::size_t>(rank)]; }
};

/// The replica axis of `p` when its ranks fall into groups of `replicas` ranks holding identical
/// pieces, the groups holding disjoint elements (one group's pieces, one from each group, tile the
/// dim once); nothing otherwise. A partition without overlap has the axis `replicas` = 1.
inline std::optional<replica_axis> replica_axis_of(const partition& p) {
  const int tp = p.ranks();
  replica_axis axis{0, std::vector<int>(static_cast<std::size_t>(tp), 0)};
  std::vector<int> first;  // the first rank of each group, in rank order
  std::vector<int> count;
  for (int r = 0; r < tp; ++r) {
    std::size_t g = 0;
    while (g < first.size() && !(p.of(first[g]) == p.of(r))) ++g;
    if (g == first.size()) {
      first.push_back(r);
      count.push_back(0);
    }
    axis.index[static_cast<std::size_t>(r)] = count[g]++;
  }
  for (const int n : count)
    if (n != count.front()) return std::nullopt;
  // One rank of each group must hold every element once.
  std::vector<int> coverage(static_cast<std::size_t>(p.extent()), 0);
  for (const int r : first)
    for (const interval& i : p.of(r).parts)
      for (index_t e = i.begin; e < i.end; ++e) ++coverage[static_cast<std::size_t>(e)];
  for (const int c : coverage)
    if (c != 1) return std::nullopt;
  axis.replicas = count.empty() ? 1 : count.front();
  return axis;
}

}  // namespace tpx::inline v0::shard
