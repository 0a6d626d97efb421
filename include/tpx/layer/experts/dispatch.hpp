#pragma once
/// \file
/// `expert_rows`: the host bookkeeping of a MoE layer — which row of the expert-major buffer each
/// token's choice goes to. Tokens' choices (t, j), j < k, are sorted by group (a local expert, or
/// under all-to-all the global expert whose rank they travel to); the received rows of an
/// all-to-all are then placed expert by expert. Everything here is index arithmetic on the host;
/// the rows themselves move through the backend's ops.

#include <span>
#include <vector>

#include "tpx/core/extents.hpp"

namespace tpx::inline v0::layer::detail {

class expert_rows {
 public:
  /// Counting sort of the k choices of n tokens by `group(t, j)` ∈ [0, groups), −1 for none:
  /// group g's rows are [starts()[g], starts()[g + 1]), each choice's row is in `slots()` (−1 for
  /// none), in token order within a group. The sorted rows are also the expert-major buffer's
  /// (`offsets()`) until `arrive` says otherwise.
  template <class Group>
  void sort(index_t n, index_t k, index_t groups, Group group) {
    starts_.assign(static_cast<std::size_t>(groups + 1), 0);
    slot_.assign(static_cast<std::size_t>(n * k), -1);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        if (const index_t g = group(t, j); g >= 0) ++starts_[static_cast<std::size_t>(g + 1)];
    for (index_t g = 0; g < groups; ++g)
      starts_[static_cast<std::size_t>(g + 1)] += starts_[static_cast<std::size_t>(g)];
    fill_.assign(starts_.begin(), starts_.end() - 1);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        if (const index_t g = group(t, j); g >= 0)
          slot_[static_cast<std::size_t>(t * k + j)] = fill_[static_cast<std::size_t>(g)]++;
    offsets_.assign(starts_.begin(), starts_.end());
  }

  /// An all-to-all's arrivals: rows come source by source (`sources` ranks), each source's rows
  /// expert by expert for the `per` local experts, `got(q, e)` rows from rank q for expert e.
  /// Sets `offsets()` (each local expert's rows in the expert-major buffer) and `arrivals()`
  /// (each received row's row there).
  template <class Got>
  void arrive(int sources, index_t per, Got got) {
    offsets_.assign(static_cast<std::size_t>(per + 1), 0);
    for (int q = 0; q < sources; ++q)
      for (index_t e = 0; e < per; ++e) offsets_[static_cast<std::size_t>(e + 1)] += got(q, e);
    for (index_t e = 0; e < per; ++e)
      offsets_[static_cast<std::size_t>(e + 1)] += offsets_[static_cast<std::size_t>(e)];
    arrival_.resize(static_cast<std::size_t>(offsets_.back()));
    fill_.assign(offsets_.begin(), offsets_.end() - 1);  // the next free row of each expert
    index_t i = 0;
    for (int q = 0; q < sources; ++q)
      for (index_t e = 0; e < per; ++e)
        for (index_t c = got(q, e); c > 0; --c)
          arrival_[static_cast<std::size_t>(i++)] = fill_[static_cast<std::size_t>(e)]++;
  }

  std::span<const index_t> starts() const noexcept { return starts_; }
  /// Rows of the sorted group g: starts()[g + 1] − starts()[g].
  index_t sorted(index_t g) const noexcept {
    return starts_[static_cast<std::size_t>(g + 1)] - starts_[static_cast<std::size_t>(g)];
  }
  std::span<const index_t> offsets() const noexcept { return offsets_; }
  /// The rows of the expert-major buffer.
  index_t rows() const noexcept { return offsets_.empty() ? 0 : offsets_.back(); }
  std::span<const index_t> slots() const noexcept { return slot_; }
  std::span<const index_t> arrivals() const noexcept { return arrival_; }

 private:
  std::vector<index_t> starts_, offsets_, slot_, fill_, arrival_;
};

}  // namespace tpx::inline v0::layer::detail
