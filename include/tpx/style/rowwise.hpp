#pragma once
/// \file
/// Row-wise (input-feature) parallel linear: y = x · Wᵀ + b with W split on its in dim.
///
///        X [T, in]            W [out, in]           Y [T, out]
///   r0  ▓▓ cols 0…i₀     ·   ▓▓ cols 0…i₀     →   partial ─┐
///   r1    ░░ cols i₀…i₁  ·     ░░ cols i₀…i₁  →   partial ─┴─ all-reduce → replicate, then + b
///       shard<1>              shard<1>                      (b whole, added exactly once)
///   split input: X arrives replicated and each rank keeps its own columns (split_to_parallel).
///   backward: dX_r = dY · W_r (all-gathered on features for the split input);
///             dW_r = dYᵀ · X_r; db = Σ dY on every rank.

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

/// Whether rowwise receives its input already sharded on features or replicated (then split).
enum class rowwise_input { sharded, split };

template <rowwise_input In = rowwise_input::sharded>
struct rowwise : detail::split_matrix<1> {
  static constexpr rowwise_input input_mode = In;
  static constexpr std::string_view name =
      In == rowwise_input::sharded ? "rowwise" : "rowwise_split_input";
  using input =
      std::conditional_t<In == rowwise_input::sharded, layout::shard<1>, layout::replicate>;
  using output = layout::replicate;
  using weight = layout::shard<1>;
  using input_pair = std::conditional_t<In == rowwise_input::sharded, comm::no_collective,
                                        comm::split_to_parallel>;
  using output_pair = comm::reduce_from_parallel;
};

/// rowwise that takes a replicated input and keeps its own columns (HF `rowwise_split_input`).
using rowwise_split = rowwise<rowwise_input::split>;

static_assert(parallel_style<rowwise<>>);
static_assert(parallel_style<rowwise_split>);

}  // namespace tpx::inline v0::style
