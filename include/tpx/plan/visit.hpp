#pragma once
/// \file
/// The runtime edge: a style string's spec (registry.hpp) becomes a compile-time policy in one
/// place. `visit_style(spec, f)` calls `f.template operator()<S>()` with the style type `S` the
/// spec describes and returns its result, so an engine that reads a plan at run time builds its
/// layers with ordinary templates after this call:
///
///   plan::visit_style(registry.at("colwise_gather_output"), [&]<class S>() {
///     layers.push_back(std::make_unique<my_layer<tpx::layer::linear<S, Backend, T>>>(…));
///   });
///
///   family              spec                                   S
///   colwise             output none (packed, loss-parallel)    style::colwise<>
///                       output all_gather                      style::colwise_gathered
///                       input all_gather, or `sequence`        style::colwise_sp
///   rowwise             input none, output all_reduce          style::rowwise<>
///                       input split                            style::rowwise_split
///                       output reduce_scatter, or `sequence`   style::rowwise_sp
///   replicate           (grad_all_reduce)                      style::replicate<>
///                                                              (…_grad_all_reduce)
///   sequence_parallel                                          style::sequence_parallel
///   vocab_embedding     output all_reduce / reduce_scatter     style::vocab_parallel<> / _sp
///   moe_experts         module all-reduce of the expert output style::moe_tensor (_sp)
///                       a dispatch (ep_dispatch_experts)       style::moe_all_to_all or
///                                                              style::moe_masked (dispatch)
///
/// `sequence` asks for the sequence-parallel form of a linear or experts spec (an HF plan spells
/// colwise / rowwise the same with or without SP; the SP plan decides). Every other family — an
/// embedding split on the hidden dim, `local*` slices whose collective an enclosing module runs,
/// module-level rules, the identity expert, MLA's kv_a projection, expert-parallel routers and
/// grouped experts (whose style is the experts module's, not the tensor's) — has no tpx layer of
/// its own: the call throws a sentence naming `what` (the tensor or rule), the string's family and
/// what tpx offers instead.

#include <optional>
#include <string_view>
#include <utility>

#include "tpx/plan/registry.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/description.hpp"
#include "tpx/style/moe_experts.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"
#include "tpx/style/vocab_parallel.hpp"

namespace tpx::inline v0::plan {

namespace detail {
/// visit_style's switch: `f.template operator()<S>()` for the spec's style, else `none(why)`.
template <class F, class None>
decltype(auto) visit_or(const style_spec& spec, F&& f, bool sequence, None&& none) {
  using c = collective;
  if (spec.local || spec.divide_by_tp)
    return none(
        "its slices run no collective of their own (an enclosing module rule does); tpx's linear "
        "styles run their collectives themselves");
  switch (spec.kind) {
    case family::colwise:
      if (spec.output == c::all_gather) {
        if (sequence || spec.input == c::all_gather)
          return none("a gathered output under sequence parallelism is not a tpx style");
        return f.template operator()<style::colwise_gathered>();
      }
      if (sequence || spec.input == c::all_gather)
        return f.template operator()<style::colwise_sp>();
      return f.template operator()<style::colwise<>>();
    case family::rowwise:
      if (spec.input == c::split) {
        if (sequence) return none("a split input under sequence parallelism is not a tpx style");
        return f.template operator()<style::rowwise_split>();
      }
      if (sequence || spec.output == c::reduce_scatter)
        return f.template operator()<style::rowwise_sp>();
      return f.template operator()<style::rowwise<>>();
    case family::replicate:
      if (spec.grad_all_reduce) return f.template operator()<style::replicate_grad_all_reduce>();
      return f.template operator()<style::replicate<>>();
    case family::sequence_parallel:
      return f.template operator()<style::sequence_parallel>();
    case family::vocab_embedding:
      if (sequence || spec.output == c::reduce_scatter)
        return f.template operator()<style::vocab_parallel_sp>();
      return f.template operator()<style::vocab_parallel<>>();
    case family::moe_experts:
      if (spec.dispatch) {  // expert parallel (ep_dispatch_experts)
        if (*spec.dispatch == dispatch::all_to_all ||
            (*spec.dispatch == dispatch::automatic && sequence))
          return f.template operator()<style::moe_all_to_all>();
        if (sequence)
          return none(
              "an all_reduce dispatch needs every token on every rank; under sequence "
              "parallelism tpx dispatches by all_to_all (or auto)");
        return f.template operator()<style::moe_masked>();
      }
      if (sequence) return f.template operator()<style::moe_tensor_sp>();
      return f.template operator()<style::moe_tensor>();
    case family::hidden_embedding:
      return none("tpx splits embeddings on the vocabulary (embedding_rowwise, vocab_allreduce)");
    case family::grouped_gemm:
    case family::ep_router:
      return none(
          "expert parallelism is the experts module's style (style::moe_all_to_all or "
          "style::moe_masked), chosen for the module, not per tensor");
    default:
      return none("it is a module-level rule or a special parameter, not a layer style");
  }
}
}  // namespace detail

template <class F>
decltype(auto) visit_style(const style_spec& spec, F&& f, bool sequence = false,
                           std::string_view what = "tensor") {
  return detail::visit_or(
      spec, std::forward<F>(f), sequence,
      [&](std::string_view why) -> decltype(f.template operator()<style::replicate<>>()) {
        fail("{}: style family '{}' ({} vocabulary) has no tpx layer: {}", what, name(spec.kind),
             spec.vocabulary, why);
      });
}

/// The collectives of the style `spec` reaches (`sequence`: its sequence-parallel form), or
/// nothing when it reaches none: `style::describe<S>()` of visit_style's `S`.
inline std::optional<style::description> describe(const style_spec& spec, bool sequence = false) {
  return detail::visit_or(
      spec, []<class S>() { return std::optional<style::description>(style::describe<S>()); },
      sequence, [](std::string_view) { return std::optional<style::description>(); });
}

/// The name of the tpx style `spec` runs as (`sequence`: its SP form), e.g.
/// "colwise_sequence_parallel"; nothing for a family without a tpx layer of its own.
inline std::optional<std::string_view> runs_as(const style_spec& spec, bool sequence = false) {
  return detail::visit_or(
      spec, []<class S>() { return std::optional<std::string_view>(S::name); }, sequence,
      [](std::string_view) { return std::optional<std::string_view>(); });
}

/// `spec` under a resolution's dispatch `d` (`sequence`: with SP) when it is an expert-parallel
/// experts module (`ep_dispatch_experts`): its collectives become those of the style the dispatch
/// selects. Any other spec comes back unchanged.
inline style_spec with_dispatch(style_spec spec, dispatch d, bool sequence) {
  if (!spec.dispatch) return spec;
  spec.dispatch = d;
  if (const std::optional<style::description> x = describe(spec, sequence)) {
    spec.input = x->forward.input;
    spec.output = x->forward.output;
  }
  return spec;
}

}  // namespace tpx::inline v0::plan
