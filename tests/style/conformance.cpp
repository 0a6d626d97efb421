// The laws every style obeys, written once and applied to the list of all styles
// (STYLE.md §9): shards tile the weight; can_implement says exactly when a split exists; forward
// and backward, gathered back, reproduce the fp64 oracle for tp ∈ {1, 2, 3, 4, 8} on shapes that
// divide and shapes that do not.

#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <tuple>
#include <utility>

#include "../linear_harness.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/shard/units.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

using namespace tpx;
using shard::split_kind;

using all_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                              style::rowwise_split, style::colwise_sp, style::rowwise_sp,
                              style::replicate<>, style::replicate_grad_all_reduce>;

namespace {
constexpr int group_sizes[] = {1, 2, 3, 4, 8};
constexpr split_kind kinds[] = {split_kind::even, split_kind::balanced, split_kind::chunk};
/// Every rank's y, dx, dW and db errors are below `tolerance`.
void expect_close(const std::vector<test::linear_errors>& errors, double tolerance) {
  for (const test::linear_errors& e : errors) {
    CHECK(e[0] < tolerance);  // y
    CHECK(e[1] < tolerance);  // dx
    CHECK(e[2] < tolerance);  // dW
    CHECK(e[3] < tolerance);  // db
  }
}
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
        expect_close(test::check_linear<S, double>(tp, k), 1e-13);
      }
}
TEST_CASE_TEMPLATE_APPLY(oracle_f64, all_styles);

TEST_CASE_TEMPLATE_DEFINE("forward and backward reproduce the fp64 oracle in single precision", S,
                          oracle_f32) {
  test::linear_case k{.tokens = 17, .out = 37, .in = 29, .bias = true, .seed = 7};
  for (const int tp : group_sizes) {
    CAPTURE(tp);
    expect_close(test::check_linear<S, float>(tp, k), 1e-5);
  }
}
TEST_CASE_TEMPLATE_APPLY(oracle_f32, all_styles);

using split_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                                style::rowwise_split, style::colwise_sp, style::rowwise_sp>;

using test::on_split_dim;

TEST_CASE_TEMPLATE_DEFINE("packed weights split block by block reproduce the fp64 oracle", S,
                          packed) {
  const std::vector<std::vector<shard::block>> packings = {
      {{7, 1}, {7, 1}},           // gate|up with an odd intermediate size
      {{12, 3}, {6, 3}, {6, 3}},  // q|k|v: 4 query heads, 2 KV heads, head_dim 3
      {{5, 1}, {0, 1}, {9, 1}}};  // an empty block
  for (const auto& blocks : packings)
    for (const int tp : group_sizes)
      for (const split_kind kind : {split_kind::balanced, split_kind::chunk}) {
        index_t extent = 0;
        for (const shard::block& b : blocks) extent += b.size;
        test::linear_case k = on_split_dim<S>(extent, 6);
        k.blocks = blocks;
        k.split = kind;
        CAPTURE(tp);
        CAPTURE(extent);
        CAPTURE(shard::name(kind));
        expect_close(test::check_linear<S, double>(tp, k), 1e-13);
      }
}
TEST_CASE_TEMPLATE_APPLY(packed, split_styles);

TEST_CASE_TEMPLATE_DEFINE(
    "head-aligned q, k, v and fused qkv, with KV heads replicated past n_kv, reproduce the oracle",
    S, heads) {
  const shard::gqa attn{8, 2, 3};  // 8 query heads, 2 KV heads, head_dim 3
  using make = std::function<shard::partition(int)>;
  std::vector<std::pair<index_t, make>> partitions = {
      {8 * 3, [&](int tp) { return attn.q_partition(tp); }}};
  if (S::split_dim == 0) {  // KV and fused qkv only for the out dim (colwise)
    partitions.push_back({2 * 3, [&](int tp) { return attn.kv_partition(tp); }});
    partitions.push_back({12 * 3, [&](int tp) { return attn.qkv_partition(tp); }});
  }
  for (const auto& [extent, partition] : partitions)
    for (const int tp : group_sizes) {
      if (!attn.can_implement(tp)) continue;
      test::linear_case k = on_split_dim<S>(extent, 7);
      k.partition = partition;
      CAPTURE(tp);
      CAPTURE(extent);
      expect_close(test::check_linear<S, double>(tp, k), 1e-13);
    }
}
TEST_CASE_TEMPLATE_APPLY(heads, split_styles);

TEST_CASE_TEMPLATE_DEFINE(
    "whole units on a (gcd(units, tp), tp / gcd) mesh (unit_colwise, unit_rowwise) reproduce the "
    "oracle",
    S, unit_mesh) {
  // 2 and 6 units of 3 (transformers 5.25's examples), 4 units of 2, each at tp 1 … 8: units
  // replicated over tp / gcd ranks wherever gcd < tp. Rowwise takes replicas only with a sharded
  // input and an all-reduced output.
  for (const shard::units u : {shard::units{2, 3}, shard::units{6, 3}, shard::units{4, 2}})
    for (const int tp : group_sizes) {
      test::linear_case k = on_split_dim<S>(u.n_units * u.unit_size, 7);
      k.partition = [&](int n) { return u.of(n); };
      CAPTURE(tp);
      CAPTURE(u.n_units);
      expect_close(test::check_linear<S, double>(tp, k), 1e-13);
      expect_close(test::check_linear<S, float>(tp, k), 1e-5);
    }
}
TEST_CASE_TEMPLATE_APPLY(unit_mesh,
                         std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>>);

TEST_CASE("rowwise refuses input features shared other than as whole replicas") {
  // 6 query heads over 2 KV heads at tp 4: KV head 0 on ranks 0, 1; KV head 1 on ranks 1, 2, 3
  // — no equal groups of identical pieces. And a split input cannot take replicas at all.
  const shard::gqa attn{6, 2, 2};
  const test::linear_case k{
      .tokens = 2, .out = 3, .in = 4, .partition = [&](int tp) { return attn.kv_partition(tp); }};
  const std::string rule =
      "ranks may share input features only as whole replicas of a row-wise layer with a sharded "
      "input and an all-reduced output (unit_rowwise: ranks in groups of equal size holding "
      "identical pieces, the groups' pieces disjoint); otherwise the partial sums would count "
      "them twice";
  CHECK_THROWS_WITH_AS((test::check_linear<style::rowwise<>, double>(4, k)),
                       ("test.proj.weight (rowwise): " + rule).c_str(), tpx::error);
  const shard::units two{2, 2};
  const test::linear_case split{
      .tokens = 2, .out = 3, .in = 4, .partition = [&](int tp) { return two.of(tp); }};
  CHECK_THROWS_WITH_AS((test::check_linear<style::rowwise_split, double>(4, split)),
                       ("test.proj.weight (rowwise_split_input): " + rule).c_str(), tpx::error);
  CHECK_THROWS_WITH_AS((test::check_linear<style::rowwise_sp, double>(4, split)),
                       ("test.proj.weight (rowwise_sequence_parallel): " + rule).c_str(),
                       tpx::error);
}

TEST_CASE("a sequence-parallel layer names the token block a rank should hold") {
  const std::vector<double> w(12, 0.5);
  host::gemm_engine engine;
  const std::string message = test::error_of(2, [&](host::communicator& c) {
    layer::linear<style::colwise_sp, host::backend, double> lin(
        engine, c, make_matrix(w.data(), 4, 3), {},
        {.name = "q_proj", .out_features = 4, .in_features = 3});
    std::vector<double> x(3 * 3), y(5 * lin.output_cols());
    lin.forward(make_matrix<const double>(x.data(), 3, 3), make_matrix(y.data(), 5, 2));
  });
  // 5 tokens over 2 ranks: rank 0 holds 3, rank 1 holds 2.
  CHECK(message ==
        "q_proj (colwise_sequence_parallel, tp = 2, rank 1): the input is [3 × 3] but must be "
        "[2 × 3] (tokens × features, shard<0> layout)");
}
