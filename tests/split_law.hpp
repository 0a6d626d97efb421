#pragma once
// The law of split(color, key), for any communicator that models comm::splittable (the host
// group's, MPI's): ranks split by parity, keyed in reverse, form sub-groups of the right size and
// order that run their own collectives and count them on their own.

#include <doctest/doctest.h>

#include <span>
#include <vector>

#include "tpx/comm/communicator.hpp"

namespace tpx::test {

/// Splits `world` into its even and odd ranks in reverse order; returns the sub-group.
template <comm::splittable C>
C check_parity_split(C& world) {
  const int n = world.size(), r = world.rank();
  C sub = world.split(r % 2, -r);
  int members = 0, before = 0;
  for (int q = r % 2; q < n; q += 2) {
    ++members;
    if (q > r) ++before;
  }
  CHECK(sub.size() == members);
  CHECK(sub.rank() == before);
  std::vector<double> mine{static_cast<double>(r)};
  sub.all_reduce(std::span<double>(mine));
  double want = 0;
  for (int q = r % 2; q < n; q += 2) want += q;
  CHECK(mine[0] == want);
  CHECK(sub.statistics()[comm::kind::all_reduce].calls == 1);
  return sub;
}

}  // namespace tpx::test
