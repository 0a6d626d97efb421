// The runtime edge (plan/visit.hpp) and the styles' collective descriptions (style/description.hpp)
// agree with the registry: every string either reaches the style whose description its spec
// states, or is refused with a sentence; every style is reached from its own name.

#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <type_traits>

#include "../error_of.hpp"
#include "tpx/plan/visit.hpp"
#include "tpx/style/description.hpp"

using namespace tpx;

namespace {

using styles =
    std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>, style::rowwise_split,
               style::replicate<>, style::replicate_grad_all_reduce, style::colwise_sp,
               style::rowwise_sp, style::sequence_parallel, style::vocab_parallel<>,
               style::vocab_parallel_sp>;

/// The spec's forward collectives, as a description of the style it names would state them.
bool spec_describes(const plan::style_spec& s, const style::description& d) {
  return s.split_dim() == d.split_dim && s.input == d.forward.input &&
         s.output == d.forward.output && s.grad_all_reduce == d.grad_all_reduce;
}

}  // namespace

TEST_CASE("the styles' descriptions follow their conjugate pairs") {
  using style::collective;
  constexpr style::description col = style::describe<style::colwise<>>();
  static_assert(col.split_dim == 0 && col.forward == style::pass{} &&
                col.backward.input == collective::all_reduce);
  constexpr style::description row = style::describe<style::rowwise<>>();
  static_assert(row.split_dim == 1 && row.forward.output == collective::all_reduce &&
                row.backward == style::pass{});
  constexpr style::description rsp = style::describe<style::rowwise_sp>();
  static_assert(rsp.forward.output == collective::reduce_scatter &&
                rsp.backward.output == collective::all_gather);
  static_assert(style::describe<style::sequence_parallel>().grad_all_reduce);
  static_assert(style::describe<style::replicate_grad_all_reduce>().grad_all_reduce);
  static_assert(!style::describe<style::replicate<>>().grad_all_reduce);
  CHECK(style::describe<style::colwise_gathered>().backward.output == collective::split);
}

TEST_CASE_TEMPLATE_DEFINE("registry.at(S::name) reaches S and describes it", S, named_style) {
  const plan::registry r = plan::registry::builtin();
  const plan::style_spec& spec = r.at(S::name);
  const bool reached = plan::visit_style(spec, []<class V>() { return std::is_same_v<V, S>; });
  CHECK(reached);
  CHECK(spec_describes(spec, style::describe<S>()));
}
TEST_CASE_TEMPLATE_APPLY(named_style, styles);

TEST_CASE(
    "every registered string reaches a style its spec describes, or is refused with a sentence") {
  const plan::registry r = plan::registry::builtin();
  int reached = 0, refused = 0;
  for (const std::string& n : r.names()) {
    CAPTURE(n);
    const plan::style_spec& spec = r.at(n);
    for (const bool sequence : {false, true}) {
      CAPTURE(sequence);
      const std::string e = test::error_of([&] {
        plan::visit_style(
            spec,
            [&]<class S>() {
              if constexpr (style::parallel_style<S>) {
                const style::description d = style::describe<S>();
                CHECK(spec.split_dim() == d.split_dim);
                CHECK(spec.grad_all_reduce == d.grad_all_reduce);
                if (!sequence) {
                  // A packed or loss-parallel colwise is colwise; its spec says nothing more.
                  CHECK(spec.input == d.forward.input);
                  CHECK(spec.output == d.forward.output);
                }
              } else {
                CHECK(spec.kind == plan::family::moe_experts);
              }
            },
            sequence, "model.layers.0.x.weight");
      });
      if (e == "no error") {
        ++reached;
      } else {
        ++refused;
        CHECK(e.find("model.layers.0.x.weight: style family '") == 0);
        CHECK(e.find("has no tpx layer") != std::string::npos);
      }
    }
  }
  CHECK(reached >= 30);
  CHECK(refused >= 10);
}

TEST_CASE("a spec's policy() names the type visit_style reaches") {
  const plan::registry r = plan::registry::builtin();
  const auto policy_of = [&](std::string_view s) {
    return plan::visit_style(r.at(s), []<class S>() -> std::string {
      if constexpr (std::is_same_v<S, style::colwise<>>)
        return "style::colwise<>";
      else if constexpr (std::is_same_v<S, style::colwise_gathered>)
        return "style::colwise_gathered";
      else if constexpr (std::is_same_v<S, style::rowwise<>>)
        return "style::rowwise<>";
      else if constexpr (std::is_same_v<S, style::rowwise_split>)
        return "style::rowwise_split";
      else if constexpr (std::is_same_v<S, style::replicate<>>)
        return "style::replicate<>";
      else if constexpr (std::is_same_v<S, style::replicate_grad_all_reduce>)
        return "style::replicate_grad_all_reduce";
      else
        return "other";
    });
  };
  for (const char* s : {"colwise", "colwise_gather_output", "colwise_rep", "rowwise",
                        "rowwise_split_input", "rowwise_rep", "replicate",
                        "replicated_with_grad_allreduce", "packed_colwise", "colwise_allgather"}) {
    CAPTURE(s);
    CHECK(policy_of(s) == r.at(s).policy());
  }
}
