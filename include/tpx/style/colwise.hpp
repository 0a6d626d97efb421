#pragma once
/// \file
/// Column-wise (output-feature) parallel linear: y = x · Wᵀ + b with W split on its out dim.
///
///        X [T, in]          W [out, in]             Y [T, out]
///   r0  ██████████   ·   ▓▓▓▓ rows 0…o₀    →   ▓▓  cols 0…o₀       (sharded: stays here)
///   r1  ██████████   ·   ░░░░ rows o₀…o₁   →     ░░ cols o₀…o₁
///       replicated        shard<0>              shard<1> ──all-gather dim 1──▶ replicate
///                                                         (only colwise<gathered>)
///   backward: dX = dY_r · W_r is partial on every rank → all-reduce (copy_to_parallel);
///             dW_r = dY_rᵀ · X and db_r = Σ dY_r stay local.

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

/// Whether colwise leaves the output sharded on features or all-gathers it.
enum class colwise_output { sharded, gathered };

template <colwise_output Out = colwise_output::sharded>
struct colwise : detail::split_matrix<0> {
  static constexpr colwise_output output_mode = Out;
  static constexpr std::string_view name =
      Out == colwise_output::sharded ? "colwise" : "colwise_gather_output";
  using input = layout::replicate;
  using output =
      std::conditional_t<Out == colwise_output::sharded, layout::shard<1>, layout::replicate>;
  using weight = layout::shard<0>;
  using input_pair = comm::copy_to_parallel;
  using output_pair = std::conditional_t<Out == colwise_output::sharded, comm::no_collective,
                                         comm::gather_from_parallel>;
};

/// colwise with the output all-gathered on features (HF `colwise_gather_output`, `colwise_rep`).
using colwise_gathered = colwise<colwise_output::gathered>;

static_assert(parallel_style<colwise<>>);
static_assert(parallel_style<colwise_gathered>);

}  // namespace tpx::inline v0::style
