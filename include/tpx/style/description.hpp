#pragma once
/// \file
/// Which collectives a style runs, as a `constexpr` value derived from the style's conjugate
/// pairs (comm/conjugate.hpp) — the one place this fact lives. The plan's registry and reports
/// read it from here rather than restating it.
///
///   style              forward: on x / on y         backward: on dx / on dy     grads
///   colwise            –        / –                 all_reduce / –              –
///   colwise_gathered   –        / all_gather        all_reduce / split          –
///   rowwise            –        / all_reduce        –          / –              –
///   rowwise_split      split    / all_reduce        all_gather / –              –
///   colwise_sp         all_gather / –               reduce_scatter / –          –
///   rowwise_sp         –        / reduce_scatter    –          / all_gather     –
///   replicate          –        / –                 –          / –              –
///   replicate_grad_all_reduce, sequence_parallel    –                           all_reduce
///   vocab_parallel     – / all_reduce (lookup)      –                           –
///   vocab_parallel_sp  – / reduce_scatter           – / all_gather              –
///
/// An experts module's styles (style/moe_experts.hpp) describe the module's tokens in and out:
///   moe_tensor, moe_masked   –          / all_reduce    all_reduce / –
///   moe_tensor_sp            all_gather / reduce_scatter  reduce_scatter / all_gather
///   moe_all_to_all           all_to_all / all_to_all    all_to_all / all_to_all
///                            (dispatch / combine)

#include <type_traits>

#include "tpx/comm/conjugate.hpp"
#include "tpx/style/concept.hpp"
#include "tpx/style/moe_experts.hpp"

namespace tpx::inline v0::style {

/// A collective on one activation.
enum class collective { none, all_reduce, all_gather, reduce_scatter, split, all_to_all };

constexpr std::string_view name(collective c) noexcept {
  constexpr std::string_view names[] = {"none",           "all_reduce", "all_gather",
                                        "reduce_scatter", "split",      "all_to_all"};
  return names[static_cast<int>(c)];
}

/// The collectives of one direction: on the layer's input side (x in forward, dx in backward)
/// and its output side (y, dy).
struct pass {
  collective input = collective::none;
  collective output = collective::none;
  friend constexpr bool operator==(const pass&, const pass&) = default;
};

struct description {
  int split_dim = -1;            ///< the weight dim split over the ranks (−1: none)
  pass forward, backward;        ///< activation collectives
  bool grad_all_reduce = false;  ///< parameter gradients all-reduced in backward
  friend constexpr bool operator==(const description&, const description&) = default;
};

namespace detail {
/// A conjugate pair's collective in forward and in backward.
template <class Pair>
struct pair_collectives {
  static_assert(std::is_same_v<Pair, comm::no_collective>,
                "tpx::style::describe: a conjugate pair without a description; add a "
                "pair_collectives specialisation for it in style/description.hpp");
  static constexpr collective forward = collective::none, backward = collective::none;
};
template <>
struct pair_collectives<comm::copy_to_parallel> {
  static constexpr collective forward = collective::none, backward = collective::all_reduce;
};
template <>
struct pair_collectives<comm::reduce_from_parallel> {
  static constexpr collective forward = collective::all_reduce, backward = collective::none;
};
template <>
struct pair_collectives<comm::gather_from_parallel> {
  static constexpr collective forward = collective::all_gather, backward = collective::split;
};
template <>
struct pair_collectives<comm::split_to_parallel> {
  static constexpr collective forward = collective::split, backward = collective::all_gather;
};
template <>
struct pair_collectives<comm::gather_from_sequence> {
  static constexpr collective forward = collective::all_gather,
                              backward = collective::reduce_scatter;
};
template <>
struct pair_collectives<comm::scatter_to_sequence> {
  static constexpr collective forward = collective::reduce_scatter,
                              backward = collective::all_gather;
};
}  // namespace detail

/// The collectives style `S` runs. A style whose parameter gradients are all-reduced says so
/// with `static constexpr bool grad_all_reduce = true`.
template <parallel_style S>
constexpr description describe() noexcept {
  using in = detail::pair_collectives<typename S::input_pair>;
  using out = detail::pair_collectives<typename S::output_pair>;
  bool grads = false;
  if constexpr (requires { S::grad_all_reduce; }) grads = S::grad_all_reduce;
  return {.split_dim = S::split_dim,
          .forward = {in::forward, out::forward},
          .backward = {in::backward, out::backward},
          .grad_all_reduce = grads};
}

/// The collectives the experts module style `moe_experts<M>` runs on the module's tokens (its
/// routing ids and weights travel with them; their few bytes are the plan's to count).
template <class S>
requires std::is_same_v<S, moe_experts<S::mode>>
constexpr description describe() noexcept {
  using c = collective;
  switch (S::mode) {
    case expert_split::tensor_sequence:
      return {.forward = {c::all_gather, c::reduce_scatter},
              .backward = {c::reduce_scatter, c::all_gather}};
    case expert_split::all_to_all:
      return {.split_dim = 0,
              .forward = {c::all_to_all, c::all_to_all},
              .backward = {c::all_to_all, c::all_to_all}};
    case expert_split::masked:
      return {.split_dim = 0,
              .forward = {c::none, c::all_reduce},
              .backward = {c::all_reduce, c::none}};
    case expert_split::tensor:
    default:
      return {.forward = {c::none, c::all_reduce}, .backward = {c::all_reduce, c::none}};
  }
}

}  // namespace tpx::inline v0::style
