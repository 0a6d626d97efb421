#pragma once
/// \file
/// The `linear_style` concept: the styles `layer::linear` runs. A linear style is a
/// `parallel_style` whose conjugate pairs are ones the linear layer knows how to place around its
/// GEMM, consistent with the weight dim it splits:
///
///   split_dim   input pair                                  output pair
///   0 (rows)    copy_to_parallel, gather_from_sequence      no_collective (y shard<1>),
///                                                           gather_from_parallel
///   1 (cols)    no_collective (x shard<1>), split_to_parallel reduce_from_parallel,
///                                                           scatter_to_sequence
///   −1          no_collective                               no_collective
///
/// and whose parameter gradients are all-reduced exactly when `describe<S>().grad_all_reduce`
/// says so. A new style that declares such pairs (see style/colwise.hpp) gets a linear layer with
/// no other change; a style with collectives of its own specialises `layer::linear`.

#include <type_traits>

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

namespace detail {
template <class P, class... Allowed>
inline constexpr bool one_of = (std::is_same_v<P, Allowed> || ...);

template <class S>
constexpr bool linear_pairs() {
  using in = typename S::input_pair;
  using out = typename S::output_pair;
  if constexpr (S::split_dim == 0)
    return one_of<in, comm::copy_to_parallel, comm::gather_from_sequence> &&
           one_of<out, comm::no_collective, comm::gather_from_parallel>;
  else if constexpr (S::split_dim == 1)
    return one_of<in, comm::no_collective, comm::split_to_parallel> &&
           one_of<out, comm::reduce_from_parallel, comm::scatter_to_sequence>;
  else
    return S::split_dim == -1 && one_of<in, comm::no_collective> &&
           one_of<out, comm::no_collective>;
}
}  // namespace detail

template <class S>
concept linear_style = parallel_style<S> && detail::linear_pairs<S>();

}  // namespace tpx::inline v0::style
