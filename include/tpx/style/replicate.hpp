#pragma once
/// \file
/// Replicated linear: every rank holds the whole weight and runs the whole GEMM.
///
///   replicate<grad_sync::none>        X, Y replicated; nothing to communicate.
///   replicate<grad_sync::all_reduce>  X, Y sharded on tokens (each rank sees other tokens);
///       r0  X[tokens of r0] · Wᵀ → Y[tokens of r0]        dW, db partial on every rank
///       r1  X[tokens of r1] · Wᵀ → Y[tokens of r1]        → all-reduce in backward
///   (HF `replicated_with_grad_allreduce`: per-head q/k norms, routers under SP.)

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

/// Whether parameter gradients are all-reduced in backward.
enum class grad_sync { none, all_reduce };

template <grad_sync Sync = grad_sync::none>
struct replicate : detail::split_matrix<-1> {
  static constexpr grad_sync sync = Sync;
  static constexpr bool grad_all_reduce = Sync == grad_sync::all_reduce;
  static constexpr std::string_view name =
      Sync == grad_sync::none ? "replicate" : "replicated_with_grad_allreduce";
  using input = std::conditional_t<Sync == grad_sync::none, layout::replicate, layout::shard<0>>;
  using output = input;
  using weight = layout::replicate;
  using input_pair = comm::no_collective;
  using output_pair = comm::no_collective;
};

/// Replicated weight whose gradients are all-reduced; activations sharded on tokens.
using replicate_grad_all_reduce = replicate<grad_sync::all_reduce>;

static_assert(parallel_style<replicate<>>);
static_assert(parallel_style<replicate_grad_all_reduce>);

}  // namespace tpx::inline v0::style
