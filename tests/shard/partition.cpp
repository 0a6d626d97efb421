// Packed and head-aligned partitions, and GQA head placement with KV replication.

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tpx/shard/gqa.hpp"
#include "tpx/shard/partition.hpp"
#include "tpx/shard/units.hpp"

using namespace tpx;
using shard::block;
using shard::interval;
using shard::partition;
using shard::split_kind;

TEST_CASE("packed partitions tile the fused dim exactly once, whatever the blocks and tp") {
  const std::vector<std::vector<block>> cases = {
      {{10, 1}, {10, 1}},         // gate|up, even
      {{7, 1}, {7, 1}},           // gate|up, odd
      {{12, 4}, {4, 4}, {4, 4}},  // q|k|v with GQA sizes, head_dim 4
      {{3, 1}, {0, 1}, {9, 3}},   // an empty block
      {{64, 8}, {16, 8}, {16, 8}, {5, 1}}};
  for (const auto& blocks : cases)
    for (int tp = 1; tp <= 8; ++tp)
      for (const split_kind kind : {split_kind::balanced, split_kind::chunk, split_kind::even}) {
        bool divisible = true;
        for (const block& b : blocks) divisible = divisible && (b.size / b.unit) % tp == 0;
        if (kind == split_kind::even && !divisible) {
          CHECK_THROWS_AS(partition::packed(blocks, tp, kind), tpx::error);
          continue;
        }
        const partition p = partition::packed(blocks, tp, kind, {"w", 0});
        CAPTURE(tp);
        CHECK(p.covers());
        CHECK_FALSE(p.overlaps());
        index_t total = 0;
        for (const block& b : blocks) total += b.size;
        CHECK(p.extent() == total);
        index_t held = 0;
        for (int r = 0; r < tp; ++r) {
          const auto& parts = p.of(r).parts;
          REQUIRE(parts.size() == blocks.size());  // one piece per block, in block order
          index_t offset = 0;
          for (std::size_t b = 0; b < blocks.size(); ++b) {
            CHECK(parts[b].begin >= offset);
            CHECK(parts[b].end <= offset + blocks[b].size);
            CHECK((parts[b].begin - offset) % blocks[b].unit == 0);  // whole units
            CHECK(parts[b].size() % blocks[b].unit == 0);
            offset += blocks[b].size;
          }
          held += p.of(r).size();
        }
        CHECK(held == total);
      }
}

TEST_CASE("an uneven gate|up split keeps every row: each block is split on its own") {
  const std::vector<block> gate_up{{5, 1}, {5, 1}};  // intermediate size 5, tp 2
  const partition p = partition::packed(gate_up, 2, split_kind::balanced);
  CHECK(p.of(0).parts == std::vector<interval>{{0, 3}, {5, 8}});
  CHECK(p.of(1).parts == std::vector<interval>{{3, 5}, {8, 10}});
  CHECK(p.sizes() == std::vector<index_t>{6, 4});
  CHECK(p.of(1).global(2) == 8);
  const auto src = p.sources();
  CHECK(src[9] == std::pair<int, index_t>{1, 3});
  CHECK(src[5] == std::pair<int, index_t>{0, 3});
}

TEST_CASE("head splits move whole heads") {
  const partition p = partition::heads(5, 4, 2, split_kind::balanced);
  CHECK(p.of(0).parts == std::vector<interval>{{0, 12}});
  CHECK(p.of(1).parts == std::vector<interval>{{12, 20}});
  CHECK_THROWS_WITH_AS(
      partition::packed(std::vector<block>{{10, 4}}, 2, split_kind::balanced,
                        {"model.layers.0.self_attn.qkv_proj.weight", 0}),
      "model.layers.0.self_attn.qkv_proj.weight dim 0: packed block 0 has size 10, "
      "which is not a whole number of units of 4",
      tpx::error);
}

TEST_CASE(
    "GQA places any tp up to n_heads: query heads tile once, each KV head on exactly the "
    "ranks whose query heads use it") {
  for (const index_t n_kv : {1, 2, 3, 4, 8})
    for (const index_t group : {1, 2, 3, 4, 7, 8})
      for (int tp = 1; tp <= 9; ++tp) {
        const shard::gqa a{n_kv * group, n_kv, 2};
        CAPTURE(n_kv);
        CAPTURE(group);
        CAPTURE(tp);
        REQUIRE(a.can_implement(tp) == (tp <= a.n_heads));
        if (!a.can_implement(tp)) {
          CHECK_THROWS_AS(a.kv_heads(tp, 0), tpx::error);
          continue;
        }
        std::vector<int> q_seen(static_cast<std::size_t>(a.n_heads));
        std::vector<std::vector<int>> users(static_cast<std::size_t>(n_kv)),
            holders(static_cast<std::size_t>(n_kv));
        index_t next_q = 0;
        for (int r = 0; r < tp; ++r) {
          const interval q = a.q_heads(tp, r), kv = a.kv_heads(tp, r);
          CHECK(q.begin == next_q);  // contiguous, in rank order
          CHECK(q.size() >= 1);
          next_q = q.end;
          for (index_t h = q.begin; h < q.end; ++h) {
            ++q_seen[static_cast<std::size_t>(h)];
            CHECK(h / group >= kv.begin);  // the query head's KV head is on this rank
            CHECK(h / group < kv.end);
            // the local map the attention uses: (q_offset + j) / group
            CHECK((a.q_offset(tp, r) + (h - q.begin)) / group == h / group - kv.begin);
            std::vector<int>& u = users[static_cast<std::size_t>(h / group)];
            if (u.empty() || u.back() != r) u.push_back(r);
          }
          for (index_t h = kv.begin; h < kv.end; ++h)
            holders[static_cast<std::size_t>(h)].push_back(r);
        }
        for (int n : q_seen) CHECK(n == 1);  // query heads tile exactly once
        index_t copies = 0;
        for (index_t h = 0; h < n_kv; ++h) {
          const std::vector<int>& hold = holders[static_cast<std::size_t>(h)];
          CHECK(hold == users[static_cast<std::size_t>(h)]);  // held by exactly its users
          CHECK(a.holders(tp, h) == interval{hold.front(), hold.back() + 1});
          copies += static_cast<index_t>(hold.size());
        }
        CHECK(a.kv_copies(tp) == copies);
        // Balanced: query heads per rank differ by at most one once tp exceeds the KV heads.
        if (tp > n_kv)
          for (int r = 0; r < tp; ++r)
            CHECK(a.q_heads(tp, r).size() == a.n_heads / tp + (r < a.n_heads % tp ? 1 : 0));
        // Where the earlier rule applied (tp ≤ n_kv, or a multiple of n_kv dividing n_heads),
        // the placement is that rule's.
        if (tp <= n_kv) {
          for (int r = 0; r < tp; ++r)
            CHECK(a.kv_heads(tp, r) ==
                  shard::split(n_kv, tp, r, shard::split_kind::balanced, {"KV heads", 0}));
        } else if (tp % n_kv == 0 && a.n_heads % tp == 0) {
          for (int r = 0; r < tp; ++r) {
            const index_t per = tp / n_kv;
            CHECK(a.kv_heads(tp, r) == interval{r / per, r / per + 1});
          }
        }
        CHECK(a.q_partition(tp).covers());
        CHECK_FALSE(a.q_partition(tp).overlaps());
        CHECK(a.kv_partition(tp).covers());
        CHECK(a.kv_partition(tp).overlaps() == (copies > n_kv));
        CHECK(a.qkv_partition(tp).covers());
      }
}

TEST_CASE("GQA with tp above the KV heads replicates them: rank r holds KV head r / (tp / n_kv)") {
  const shard::gqa a{8, 2, 4};
  const int tp = 4;
  CHECK(a.kv_copies(tp) == 4);
  CHECK(a.kv_heads(tp, 0) == interval{0, 1});
  CHECK(a.kv_heads(tp, 1) == interval{0, 1});
  CHECK(a.kv_heads(tp, 3) == interval{1, 2});
  CHECK(a.q_heads(tp, 1) == interval{2, 4});
  CHECK(a.q_heads(tp, 2) == interval{4, 6});
  const partition qkv = a.qkv_partition(tp);
  CHECK(qkv.extent() == (8 + 2 + 2) * 4);
  CHECK(qkv.of(3).parts == std::vector<interval>{{24, 32}, {36, 40}, {44, 48}});
}

TEST_CASE(
    "GQA at a tp the KV heads do not divide: a rank whose query heads straddle a group "
    "boundary holds both KV heads") {
  const shard::gqa a{6, 2, 4};  // groups {0, 1, 2} → KV 0 and {3, 4, 5} → KV 1
  const int tp = 4;             // query heads 2 | 2 | 1 | 1
  CHECK(a.q_heads(tp, 0) == interval{0, 2});
  CHECK(a.q_heads(tp, 1) == interval{2, 4});
  CHECK(a.kv_heads(tp, 1) == interval{0, 2});
  CHECK(a.q_offset(tp, 1) == 2);  // its first query head is the last of KV head 0's group
  CHECK(a.kv_heads(tp, 2) == interval{1, 2});
  CHECK(a.q_offset(tp, 3) == 2);
  CHECK(a.holders(tp, 0) == interval{0, 2});
  CHECK(a.holders(tp, 1) == interval{1, 4});
  CHECK(a.kv_copies(tp) == 5);
  CHECK(a.kv_heads_by_rank(tp) == "0 | 0-1 | 1 | 1");
  CHECK(a.qkv_partition(tp).of(1).parts ==
        std::vector<interval>{{8, 16}, {24, 32}, {32, 40}});  // q 2-3, k 0-1, v 0-1
  // 28 query / 4 KV heads (Qwen2-7B) at tp 8: 4 | 4 | 4 | 4 | 3 | 3 | 3 | 3 query heads.
  const shard::gqa qwen{28, 4, 128};
  CHECK(qwen.kv_heads_by_rank(8) == "0 | 0-1 | 1 | 1-2 | 2 | 2-3 | 3 | 3");
}

TEST_CASE("GQA that tp cannot serve is an error naming the heads, tp and the rule") {
  CHECK_THROWS_WITH_AS(
      shard::gqa({32, 8, 128}).expect_implementable(33, "model.layers.0.self_attn"),
      "model.layers.0.self_attn: n_heads = 32 query heads cannot be split over tp = 33; "
      "attention is split in whole query heads, so tp must be between 1 and n_heads = 32",
      tpx::error);
  CHECK_THROWS_AS(shard::gqa({6, 4, 8}).expect_implementable(2), tpx::error);  // 4 ∤ 6
  CHECK_THROWS_AS(shard::gqa({6, 2, 8}).expect_implementable(0), tpx::error);
  CHECK(shard::gqa{32, 8, 128}.can_implement(12));
  CHECK(shard::gqa{32, 8, 128}.can_implement(32));
  CHECK_FALSE(shard::gqa{32, 8, 128}.can_implement(64));  // more ranks than query heads
}

TEST_CASE(
    "shared parts group what several ranks hold by its holders; split rounds keep a rank in "
    "one set per round") {
  const shard::gqa a{6, 2, 2};
  const std::vector<shard::sharing> kv = a.kv_partition(4).shared_parts();
  REQUIRE(kv.size() == 2);
  CHECK(kv[0].ranks == std::vector<int>{0, 1});
  CHECK(kv[0].parts == std::vector<interval>{{0, 2}});
  CHECK(kv[1].ranks == std::vector<int>{1, 2, 3});
  CHECK(kv[1].parts == std::vector<interval>{{2, 4}});
  CHECK(shard::split_rounds(kv) == std::vector<int>{0, 1});  // both hold rank 1
  // Fused q|k|v: a KV head's k rows and v rows have the same holders, one set of two parts.
  const std::vector<shard::sharing> qkv = a.qkv_partition(4).shared_parts();
  REQUIRE(qkv.size() == 2);
  CHECK(qkv[0].parts == std::vector<interval>{{12, 14}, {16, 18}});
  CHECK(qkv[1].parts == std::vector<interval>{{14, 16}, {18, 20}});
  CHECK(a.qkv_partition(4).of(1).local_of(qkv[1].parts) == std::vector<interval>{{6, 8}, {10, 12}});
  CHECK(a.kv_partition(2).shared_parts().empty());
  // 28 / 4 heads at tp 8: KV heads on ranks 0-1, 1-3, 3-5, 5-7: two rounds.
  CHECK(shard::split_rounds(shard::gqa{28, 4, 1}.kv_partition(8).shared_parts()) ==
        std::vector<int>{0, 1, 0, 1});
  CHECK(shard::pieces{{{0, 4}, {10, 12}}}.local_of(std::vector<interval>{{2, 4}, {10, 11}}) ==
        std::vector<interval>{{2, 5}});
  // The law, for every placement of the GQA test above: each shared element's set is exactly
  // its holders, and no round holds a rank twice.
  for (const index_t n_kv : {1, 2, 3, 4})
    for (const index_t group : {1, 2, 3, 7})
      for (int tp = 1; tp <= std::min<index_t>(9, n_kv * group); ++tp) {
        const partition p = shard::gqa{n_kv * group, n_kv, 1}.qkv_partition(tp);
        const std::vector<shard::sharing> sets = p.shared_parts();
        const std::vector<int> round = shard::split_rounds(sets);
        const std::vector<int> cover = p.coverage();
        index_t shared = 0;
        for (std::size_t s = 0; s < sets.size(); ++s) {
          shared += sets[s].size();
          for (const interval& part : sets[s].parts)
            for (index_t e = part.begin; e < part.end; ++e) {
              CHECK(cover[static_cast<std::size_t>(e)] == static_cast<int>(sets[s].ranks.size()));
              for (const int r : sets[s].ranks)
                CHECK(!p.of(r).local_of(std::vector<interval>{{e, e + 1}}).empty());
            }
          for (std::size_t t = 0; t < s; ++t)
            if (round[t] == round[s])
              for (const int r : sets[s].ranks) CHECK_FALSE(sets[t].holds(r));
          CHECK(round[s] <= 1);  // heads split in order: two rounds at most
        }
        index_t want = 0;
        for (const int c : cover) want += c > 1 ? 1 : 0;
        CHECK(shared == want);
      }
}

TEST_CASE("the unit mesh: gcd(units, tp) groups of whole units, each unit on tp / gcd ranks") {
  // transformers 5.25's examples (UnitColwiseParallel): 2 heads on 4 ranks → h0 h0 h1 h1; 6 heads
  // on 4 → h0h1h2 h0h1h2 h3h4h5 h3h4h5.
  const auto units_by_rank = [](shard::units u, int tp) {
    std::vector<interval> out;
    for (int r = 0; r < tp; ++r) out.push_back(u.units_of(tp, r));
    return out;
  };
  CHECK(units_by_rank({2, 64}, 4) == std::vector<interval>{{0, 1}, {0, 1}, {1, 2}, {1, 2}});
  CHECK(units_by_rank({6, 64}, 4) == std::vector<interval>{{0, 3}, {0, 3}, {3, 6}, {3, 6}});
  CHECK(units_by_rank({8, 64}, 4) == std::vector<interval>{{0, 2}, {2, 4}, {4, 6}, {6, 8}});
  CHECK(shard::units{6, 64}.of(4).of(1).parts == std::vector<interval>{{0, 192}});
  for (index_t n = 1; n <= 12; ++n)
    for (int tp = 1; tp <= 12; ++tp) {
      CAPTURE(n);
      CAPTURE(tp);
      const shard::units u{n, 3};
      const int g = u.groups(tp), replicas = u.replicas(tp);
      CHECK(g * replicas == tp);
      CHECK(n % g == 0);
      const partition p = u.of(tp);
      CHECK(p.extent() == 3 * n);
      CHECK(p.covers());
      for (const int c : p.coverage()) CHECK(c == replicas);  // every unit on tp / g ranks
      CHECK(p.overlaps() == (replicas > 1));
      // Its replica axis is the mesh's second axis: rank r has replica index r % replicas.
      const auto axis = shard::replica_axis_of(p);
      REQUIRE(axis);
      CHECK(axis->replicas == replicas);
      for (int r = 0; r < tp; ++r) CHECK(axis->of(r) == r % replicas);
    }
  CHECK_THROWS_AS(shard::units(0, 3).of(2), tpx::error);
}

TEST_CASE("a replica axis exists only for equal groups of identical pieces that tile the dim") {
  // KV heads of 6 query heads over 2 KV heads at tp 4: 0 | 0-1 | 1 | 1 — groups of 1, 1, 2.
  CHECK_FALSE(shard::replica_axis_of(shard::gqa{6, 2, 1}.kv_partition(4)));
  // 8 over 2 at tp 4: 0 | 0 | 1 | 1 — two groups of two.
  const auto axis = shard::replica_axis_of(shard::gqa{8, 2, 1}.kv_partition(4));
  REQUIRE(axis);
  CHECK(axis->replicas == 2);
  CHECK(axis->index == std::vector<int>{0, 1, 0, 1});
  // Equal groups whose pieces overlap one another: [0, 2) twice and [1, 3) twice.
  const partition crossed(3, {{{{0, 2}}}, {{{0, 2}}}, {{{1, 3}}}, {{{1, 3}}}});
  CHECK_FALSE(shard::replica_axis_of(crossed));
  // A plain split is its own axis, one replica each.
  const auto plain = shard::replica_axis_of(partition::split(7, 3, split_kind::balanced));
  REQUIRE(plain);
  CHECK(plain->replicas == 1);
}
