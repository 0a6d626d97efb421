#pragma once
/// \file
/// Index type and fixed-rank extents.

#include <array>
#include <cstddef>
#include <cstdint>

#include "tpx/version.hpp"

namespace tpx::inline v0 {

/// Signed index and size type used for every dimension and element count.
using index_t = std::int64_t;

/// The sizes of a tensor of rank `Rank`, outermost first (row-major).
template <std::size_t Rank>
struct extents {
  static_assert(Rank >= 1, "tpx::extents: the rank must be at least 1");
  std::array<index_t, Rank> dims{};

  static constexpr std::size_t rank() noexcept { return Rank; }
  constexpr index_t operator[](std::size_t d) const noexcept { return dims[d]; }
  constexpr index_t& operator[](std::size_t d) noexcept { return dims[d]; }
  /// Number of elements: the product of the dims.
  constexpr index_t size() const noexcept {
    index_t n = 1;
    for (index_t d : dims) n *= d;
    return n;
  }
  friend constexpr bool operator==(const extents&, const extents&) = default;
};

template <class... I>
extents(I...) -> extents<sizeof...(I)>;

}  // namespace tpx::inline v0
