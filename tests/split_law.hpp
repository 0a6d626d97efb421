#pragma once
// The law of split(color, key), for any communicator that models comm::splittable (the host
// group's, MPI's): ranks split by parity, keyed in reverse, form sub-groups of the right size and
// order that run their own collectives and count them on their own.

#include <doctest/doctest.h>

#include <span>
#include <vector>

#include "tpx/comm/communicator.hpp"

namespace tpx::test {

/// Rank r of n split by parity and keyed in reverse (split(r % 2, -r)): the size of its
/// sub-group, its rank there, and the sum of its members' ranks.
struct parity_place {
  int size = 0, rank = 0, rank_sum = 0;
  parity_place(int n, int r) {
    for (int q = r % 2; q < n; q += 2) {
      ++size;
      rank_sum += q;
      if (q > r) ++rank;
    }
  }
};

/// Splits `world` into its even and odd ranks in reverse order; returns the sub-group.
template <comm::splittable C>
C check_parity_split(C& world) {
  const int r = world.rank();
  const parity_place want(world.size(), r);
  C sub = world.split(r % 2, -r);
  CHECK(sub.size() == want.size);
  CHECK(sub.rank() == want.rank);
  std::vector<double> mine{static_cast<double>(r)};
  sub.all_reduce(std::span<double>(mine));
  CHECK(mine[0] == want.rank_sum);
  CHECK(sub.statistics()[comm::kind::all_reduce].calls == 1);
  return sub;
}

}  // namespace tpx::test
