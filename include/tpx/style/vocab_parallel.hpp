#pragma once
/// \file
/// Vocab-parallel embedding (and its tied LM head): the [vocab, hidden] table split on vocab rows.
///
///        ids [T] (replicated)     W [V, H]                  out [T, H]
///   r0   t: id ∈ [0, v₀)    →    rows 0…v₀     → row or 0 ─┐
///   r1   t: id ∈ [v₀, v₁)   →    rows v₀…v₁    → row or 0 ─┴─ all-reduce → replicate
///                                                             reduce-scatter → shard<0> (SP)
///   Every token's row lives on exactly one rank, the others contribute zeros, so the reduction
///   is the lookup. Backward: dW rows of the rank's own ids, local (SP: dY all-gathered first).
///   Tied LM head: logits_r = x · W_rᵀ [T, V_r] (shard<1>, fed to vocab-parallel cross-entropy);
///   its dX is partial and reduced like colwise's, its dW adds to the same shard.

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"

namespace tpx::inline v0::style {

/// Whether the looked-up rows leave replicated (all-reduce) or split on tokens (reduce-scatter).
enum class vocab_output { replicate, sequence };

template <vocab_output Out = vocab_output::replicate>
struct vocab_parallel : detail::split_matrix<0> {
  static constexpr vocab_output output_mode = Out;
  static constexpr std::string_view name =
      Out == vocab_output::replicate ? "vocab_parallel" : "vocab_parallel_sequence";
  using input = layout::replicate;  // token ids
  using output =
      std::conditional_t<Out == vocab_output::replicate, layout::replicate, layout::shard<0>>;
  using weight = layout::shard<0>;
  using input_pair = comm::no_collective;
  using output_pair = std::conditional_t<Out == vocab_output::replicate, comm::reduce_from_parallel,
                                         comm::scatter_to_sequence>;
};

/// The vocab-parallel embedding under sequence parallelism.
using vocab_parallel_sp = vocab_parallel<vocab_output::sequence>;

static_assert(parallel_style<vocab_parallel<>>);
static_assert(parallel_style<vocab_parallel_sp>);

}  // namespace tpx::inline v0::style
