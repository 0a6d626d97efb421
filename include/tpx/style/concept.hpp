#pragma once
/// \file
/// The `parallel_style` concept: what every style policy declares.
///
/// - `name`: the style's string, as Hugging Face plans spell it where they have one;
/// - `input`, `output`, `weight`: layout tags of the activation in, out and of the weight;
/// - `input_pair`, `output_pair`: the conjugate collective pairs around the GEMM;
/// - `split_dim`: the weight dim the style splits (−1: none);
/// - `can_implement(shape, tp, kind)`: whether a `[out, in]` weight can be split over tp ranks;
/// - `local_shape(shape, tp, rank, kind)`: the `[out, in]` shard rank `rank` holds;
/// - `slice(shape, tp, rank, kind)`: the interval of `split_dim` that shard covers.

#include <concepts>
#include <string_view>
#include <type_traits>

#include "tpx/core/extents.hpp"
#include "tpx/shard/split.hpp"
#include "tpx/style/layout.hpp"

namespace tpx::inline v0::style {

template <class S>
concept parallel_style = layout::layout_tag<typename S::input> &&
    layout::layout_tag<typename S::output> && layout::layout_tag<typename S::weight> && requires {
  typename S::input_pair;
  typename S::output_pair;
  { S::name } -> std::convertible_to<std::string_view>;
  { S::split_dim } -> std::convertible_to<int>;
} && requires(extents<2> shape, int tp, int rank, shard::split_kind kind) {
  { S::can_implement(shape, tp, kind) } -> std::same_as<bool>;
  { S::local_shape(shape, tp, rank, kind) } -> std::same_as<extents<2>>;
  { S::slice(shape, tp, rank, kind) } -> std::same_as<shard::interval>;
};

namespace detail {

/// The shared shard helpers of a style that splits weight dim `Dim` of a `[out, in]` matrix
/// (Dim < 0: replicated).
template <int Dim>
struct split_matrix {
  static constexpr int split_dim = Dim;

  static constexpr bool can_implement(extents<2> shape, int tp, shard::split_kind kind) noexcept {
    return Dim < 0 ? tp >= 1 : shard::can_split(shape[Dim < 0 ? 0 : Dim], tp, kind);
  }
  static constexpr shard::interval slice(extents<2> shape, int tp, int rank, shard::split_kind kind,
                                         std::string_view tensor = "weight") {
    if constexpr (Dim < 0) {
      expect_rank(rank, tp, tensor);
      return {0, shape[0]};
    } else {
      return shard::split(shape[Dim], tp, rank, kind, {tensor, Dim});
    }
  }
  static constexpr extents<2> local_shape(extents<2> shape, int tp, int rank,
                                          shard::split_kind kind,
                                          std::string_view tensor = "weight") {
    if constexpr (Dim >= 0)
      shape[Dim] = slice(shape, tp, rank, kind, tensor).size();
    else
      expect_rank(rank, tp, tensor);
    return shape;
  }
};

}  // namespace detail

}  // namespace tpx::inline v0::style
