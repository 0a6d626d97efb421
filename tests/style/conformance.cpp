// The laws every style obeys, written once and applied to the list of all styles
// (STYLE.md §9): shards tile the weight; can_implement says exactly when a split exists; forward
// and backward, gathered back, reproduce the fp64 oracle for tp ∈ {1, 2, 3, 4, 8} on shapes that
// divide and shapes that do not.

#include <doctest/doctest.h>

#include <tuple>

#include "../linear_harness.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"

using namespace tpx;
using shard::split_kind;

using all_styles =
    std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>, style::rowwise_split,
               style::replicate<>, style::replicate_grad_all_reduce>;

namespace {
constexpr int group_sizes[] = {1, 2, 3, 4, 8};
constexpr split_kind kinds[] = {split_kind::even, split_kind::balanced, split_kind::chunk};
constexpr extents<2> shapes[] = {{{16, 8}}, {{13, 11}}, {{5, 7}}, {{3, 2}}, {{1, 9}}, {{0, 4}}};
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("every rank's shard is its slice, and the slices tile the split dim", S,
                          tiling) {
  for (const extents<2> shape : shapes)
    for (int tp = 1; tp <= 8; ++tp)
      for (const split_kind kind : kinds) {
        CAPTURE(shape[0]);
        CAPTURE(shape[1]);
        CAPTURE(tp);
        if (!S::can_implement(shape, tp, kind)) continue;
        index_t next = 0;
        for (int r = 0; r < tp; ++r) {
          const shard::interval s = S::slice(shape, tp, r, kind);
          const extents<2> local = S::local_shape(shape, tp, r, kind);
          if (S::split_dim < 0) {
            CHECK(s == shard::interval{0, shape[0]});
            CHECK(local == shape);
            continue;
          }
          CHECK(s.begin == next);  // ordered, disjoint, no gap
          CHECK(s.size() >= 0);
          next = s.end;
          extents<2> expected = shape;
          expected[static_cast<std::size_t>(S::split_dim)] = s.size();
          CHECK(local == expected);
        }
        if (S::split_dim >= 0) CHECK(next == shape[static_cast<std::size_t>(S::split_dim)]);
      }
}
TEST_CASE_TEMPLATE_APPLY(tiling, all_styles);

TEST_CASE_TEMPLATE_DEFINE("can_implement holds exactly when slicing does not throw", S, feasible) {
  for (const extents<2> shape : shapes)
    for (int tp = 1; tp <= 8; ++tp)
      for (const split_kind kind : kinds) {
        bool threw = false;
        try {
          for (int r = 0; r < tp; ++r) (void)S::slice(shape, tp, r, kind);
        } catch (const tpx::error&) {
          threw = true;
        }
        CHECK(S::can_implement(shape, tp, kind) == !threw);
      }
  CHECK_FALSE(S::can_implement(extents<2>{{4, 4}}, 0, split_kind::balanced));
}
TEST_CASE_TEMPLATE_APPLY(feasible, all_styles);

TEST_CASE_TEMPLATE_DEFINE("forward and backward reproduce the fp64 oracle in double precision", S,
                          oracle_f64) {
  const test::linear_case cases[] = {
      {.tokens = 6, .out = 16, .in = 8, .bias = true},   // divides 1, 2, 4, 8
      {.tokens = 5, .out = 13, .in = 11, .bias = true},  // divides nothing
      {.tokens = 3, .out = 5, .in = 7, .bias = false},   // tp 8 > dims: empty shards
      {.tokens = 0, .out = 6, .in = 4, .bias = true},    // no tokens
  };
  for (test::linear_case k : cases)
    for (const int tp : group_sizes)
      for (const split_kind kind : kinds) {
        k.split = kind;
        if (!S::can_implement(extents<2>{{k.out, k.in}}, tp, kind)) continue;
        CAPTURE(tp);
        CAPTURE(k.tokens);
        CAPTURE(k.out);
        CAPTURE(k.in);
        CAPTURE(shard::name(kind));
        for (const test::linear_errors& e : test::check_linear<S, double>(tp, k)) {
          CHECK(e[0] < 1e-13);  // y
          CHECK(e[1] < 1e-13);  // dx
          CHECK(e[2] < 1e-13);  // dW
          CHECK(e[3] < 1e-13);  // db
        }
      }
}
TEST_CASE_TEMPLATE_APPLY(oracle_f64, all_styles);

TEST_CASE_TEMPLATE_DEFINE("forward and backward reproduce the fp64 oracle in single precision", S,
                          oracle_f32) {
  test::linear_case k{.tokens = 17, .out = 37, .in = 29, .bias = true, .seed = 7};
  for (const int tp : group_sizes) {
    CAPTURE(tp);
    for (const test::linear_errors& e : test::check_linear<S, float>(tp, k)) {
      CHECK(e[0] < 1e-5);
      CHECK(e[1] < 1e-5);
      CHECK(e[2] < 1e-5);
      CHECK(e[3] < 1e-5);
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(oracle_f32, all_styles);
