#pragma once
/// \file
/// Layout tags: where a tensor lives across the ranks of a group. Empty structs, compared as
/// types when layers are composed.
///
///   replicate   every rank holds the whole tensor
///   shard<D>    split on dim D (activations: D = 0 tokens, D = 1 features)
///   partial     every rank holds a summand; a reduction is pending

#include <string_view>

#include "tpx/version.hpp"

namespace tpx::inline v0::style::layout {

struct replicate {
  static constexpr std::string_view name = "replicate";
};

template <int D>
struct shard {
  static_assert(D >= 0, "tpx::style::layout::shard: the dim must be non-negative");
  static constexpr int dim = D;
  static constexpr std::string_view name = D == 0 ? "shard<0>" : D == 1 ? "shard<1>" : "shard<D>";
};

struct partial {
  static constexpr std::string_view name = "partial";
};

template <class L>
concept layout_tag = requires {
  { L::name } -> std::convertible_to<std::string_view>;
};

}  // namespace tpx::inline v0::style::layout
