#pragma once
/// \file
/// Sequence parallelism (Megatron-style SP): between the tensor-parallel regions, activations are
/// split on tokens (dim 0) instead of replicated, so norms, residuals and dropout run on 1/tp of
/// the tokens and the all-reduces become all-gather + reduce-scatter pairs of the same volume.
///
///   x [T_r, H] ─ norm (sequence_parallel) ─ all-gather dim 0 ─▶ colwise_sp ─▶ [T, out_r]
///   [T, in_r] ─ rowwise_sp ─ reduce-scatter dim 0 ─▶ y [T_r, H] (bias added once, on own tokens)
///
///   colwise_sp  weight rows (out), input shard<0>, output shard<1>;
///               fwd all-gather tokens; bwd reduce-scatter dX (the gathered x is kept for dW).
///   rowwise_sp  weight cols (in), input shard<1>, output shard<0>;
///               fwd reduce-scatter tokens; bwd all-gather dY.
///   sequence_parallel  (norms) weight replicated, activations shard<0>, no activation collective;
///               bwd all-reduce of the parameter gradients (each rank saw only its tokens).
///
/// Token counts need not divide tp: rank r holds the balanced block of `shard::split(T, tp, r,
/// balanced)` (the first T mod tp ranks one token more). Layers infer T from the token-complete
/// side (colwise_sp's output, rowwise_sp's input) and check every local block against it.

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

/// Column-parallel linear whose input arrives split on tokens.
struct colwise_sp : detail::split_matrix<0> {
  static constexpr std::string_view name = "colwise_sequence_parallel";
  using input = layout::shard<0>;
  using output = layout::shard<1>;
  using weight = layout::shard<0>;
  using input_pair = comm::gather_from_sequence;
  using output_pair = comm::no_collective;
};

/// Row-parallel linear whose output leaves split on tokens.
struct rowwise_sp : detail::split_matrix<1> {
  static constexpr std::string_view name = "rowwise_sequence_parallel";
  using input = layout::shard<1>;
  using output = layout::shard<0>;
  using weight = layout::shard<1>;
  using input_pair = comm::no_collective;
  using output_pair = comm::scatter_to_sequence;
};

/// A norm (or any per-token op with replicated parameters) on token shards; parameter gradients
/// are all-reduced.
struct sequence_parallel : detail::split_matrix<-1> {
  static constexpr std::string_view name = "sequence_parallel";
  static constexpr bool grad_all_reduce = true;
  using input = layout::shard<0>;
  using output = layout::shard<0>;
  using weight = layout::replicate;
  using input_pair = comm::no_collective;
  using output_pair = comm::no_collective;
};

static_assert(parallel_style<colwise_sp>);
static_assert(parallel_style<rowwise_sp>);
static_assert(parallel_style<sequence_parallel>);

}  // namespace tpx::inline v0::style
