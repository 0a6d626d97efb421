// The styles' placements (style/placement.hpp): which tensor dim each style cuts for weights
// stored [out, in] and [in, out], biases and stacked experts; that the cut follows `kind`, the
// blocks of a fused dim or a given partition; and that every placement's shards tile its tensor.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "../error_of.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"
#include "tpx/style/vocab_parallel.hpp"

using namespace tpx;
using shard::split_kind;

namespace {
constexpr int group_sizes[] = {1, 2, 3, 4, 8};

/// Every element of the split dim is held by at least one rank, and the local shapes are the
/// shape with the split dim replaced by each rank's share.
void expect_tiles(const shard::placement& p, int tp) {
  if (p.is_replicated()) {
    for (int r = 0; r < tp; ++r) CHECK(p.local_shape(r) == p.shape);
    return;
  }
  const index_t n = p.shape[static_cast<std::size_t>(p.dim)];
  std::vector<int> held(static_cast<std::size_t>(n), 0);
  for (int r = 0; r < tp; ++r) {
    for (const shard::interval& i : p.partition.of(r).parts)
      for (index_t x = i.begin; x < i.end; ++x) ++held[static_cast<std::size_t>(x)];
    std::vector<index_t> want = p.shape;
    want[static_cast<std::size_t>(p.dim)] = p.partition.of(r).size();
    CHECK(p.local_shape(r) == want);
  }
  for (const int h : held) CHECK(h >= 1);
}
}  // namespace

TEST_CASE("each style cuts the tensor dim of its weight dim, stored [out, in] or [in, out]") {
  const std::vector<index_t> w{12, 7};
  CHECK(style::placement<style::colwise<>>({"w", w}, 2).dim == 0);
  CHECK(style::placement<style::colwise_gathered>({"w", w}, 2).dim == 0);
  CHECK(style::placement<style::colwise_sp>({"w", w}, 2).dim == 0);
  CHECK(style::placement<style::rowwise<>>({"w", w}, 2).dim == 1);
  CHECK(style::placement<style::rowwise_sp>({"w", w}, 2).dim == 1);
  CHECK(style::placement<style::vocab_parallel<>>({"w", w}, 2).dim == 0);
  CHECK(style::placement<style::replicate<>>({"w", w}, 2).is_replicated());
  CHECK(style::placement<style::sequence_parallel>({"norm", {12}}, 2).is_replicated());
  // GPT-2's Conv1D stores [in, out]: the same styles cut the other dim.
  CHECK(style::placement<style::colwise<>>({"w", w, true}, 2).dim == 1);
  CHECK(style::placement<style::rowwise<>>({"w", w, true}, 2).dim == 0);
  // Stacked experts [E, out, in]: the leading dim is never a linear style's.
  CHECK(style::placement<style::colwise<>>({"e", {4, 12, 7}}, 2).dim == 1);
  CHECK(style::placement<style::rowwise<>>({"e", {4, 12, 7}}, 2).dim == 2);
  // A bias splits with the out rows, and is whole under a column split.
  CHECK(style::placement<style::colwise<>>({"b", {12}, false, true}, 2).dim == 0);
  CHECK(style::placement<style::rowwise<>>({"b", {12}, false, true}, 2).is_replicated());
  CHECK(test::error_of([] {
          style::placement<style::colwise<>>({"s", {}}, 2);
        }) == "s: a scalar has no dim to split");
}

TEST_CASE("the cut follows the split kind, the blocks of a fused dim, or a given partition") {
  for (const int tp : group_sizes) {
    CAPTURE(tp);
    for (const split_kind k : {split_kind::balanced, split_kind::chunk}) {
      const shard::placement p =
          style::placement<style::colwise<>>({"w", {13, 5}}, tp, {.kind = k});
      CHECK(p.partition == shard::partition::split(13, tp, k, {"w", 0}));
      expect_tiles(p, tp);
    }
    // gate | up: each block split on its own.
    const std::vector<shard::block> halves{{6, 1}, {6, 1}};
    const shard::placement packed =
        style::placement<style::colwise<>>({"gate_up", {12, 5}}, tp, {.blocks = halves});
    CHECK(packed.partition ==
          shard::partition::packed(halves, tp, split_kind::balanced, {"gate_up", 0}));
    expect_tiles(packed, tp);
    // Whole heads, as the attention block computes them (8 query / 2 KV heads: not tp = 3).
    const shard::gqa g{8, 2, 4};
    if (!g.can_implement(tp)) continue;
    const shard::placement kv =
        style::placement<style::colwise<>>({"k", {8, 16}}, tp, {.partition = g.kv_partition(tp)});
    CHECK(kv.partition == g.kv_partition(tp));
    expect_tiles(kv, tp);
  }
  CHECK(test::error_of([] {
          style::placement<style::colwise<>>(
              {"w", {12, 5}}, 3,
              {.partition = shard::partition::split(12, 2, split_kind::balanced, {"w", 0})});
        }) == "w dim 0: the partition covers 12 elements over 2 ranks, but the dim has 12 over 3");
}

TEST_CASE("experts: every expert's I slice under TP, whole experts under EP") {
  const style::experts_dims d{.n_experts = 8, .hidden = 6, .inter = 5, .shared_inter = 3};
  using et = style::expert_tensor;
  for (const int tp : {1, 2, 4, 8}) {
    CAPTURE(tp);
    const shard::placement gu =
        style::placement(style::moe_tensor{}, et::gate_up, d, tp, "experts.gate_up_proj");
    CHECK(gu.shape == std::vector<index_t>{8, 10, 6});
    CHECK(gu.dim == 1);
    CHECK(gu.partition == shard::partition::packed(std::vector<shard::block>{{5, 1}, {5, 1}}, tp,
                                                   split_kind::balanced, {"g", 1}));
    const shard::placement dn =
        style::placement(style::moe_tensor_sp{}, et::down, d, tp, "experts.down_proj");
    CHECK(dn.dim == 2);
    expect_tiles(gu, tp);
    expect_tiles(dn, tp);
    for (const auto& ep : {style::placement(style::moe_all_to_all{}, et::gate_up, d, tp, "g"),
                           style::placement(style::moe_masked{}, et::down, d, tp, "d")}) {
      CHECK(ep.dim == 0);
      for (int r = 0; r < tp; ++r)
        CHECK(ep.partition.of(r).parts ==
              std::vector<shard::interval>{{r * 8 / tp, (r + 1) * 8 / tp}});
    }
    // The shared expert: split like a packed colwise / rowwise pair, whole under all_to_all.
    CHECK(style::placement(style::moe_masked{}, et::shared_gate_up, d, tp, "s").dim == 0);
    CHECK(style::placement(style::moe_tensor{}, et::shared_down, d, tp, "s").dim == 1);
    CHECK(
        style::placement(style::moe_all_to_all{}, et::shared_gate_up, d, tp, "s").is_replicated());
  }
  CHECK(test::error_of([&] {
          style::placement(style::moe_all_to_all{}, et::down,
                           {.n_experts = 6, .hidden = 2, .inter = 2}, 4, "experts.down_proj");
        }) ==
        "experts.down_proj: 6 experts cannot be split over ep = 4 ranks; expert parallelism "
        "needs n_experts % ep == 0 (6 % 4 = 2)");
}
