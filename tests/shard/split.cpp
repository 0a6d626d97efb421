#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "tpx/shard/format.hpp"
#include "tpx/shard/split.hpp"

using namespace tpx;
using shard::interval;
using shard::split_kind;

TEST_CASE("every split kind tiles the dim: ordered, disjoint and complete") {
  for (index_t size = 0; size <= 40; ++size)
    for (int tp = 1; tp <= 9; ++tp)
      for (const split_kind kind : {split_kind::even, split_kind::balanced, split_kind::chunk}) {
        if (!shard::can_split(size, tp, kind)) continue;
        index_t next = 0;
        for (const interval i : shard::split_all(size, tp, kind)) {
          CHECK(i.begin == next);
          CHECK(i.end >= i.begin);
          next = i.end;
        }
        CHECK(next == size);
      }
}

TEST_CASE("balanced gives the remainder to the first ranks") {
  CHECK(shard::split_sizes(10, 4, split_kind::balanced) == std::vector<index_t>{3, 3, 2, 2});
  CHECK(shard::split_sizes(3, 8, split_kind::balanced) ==
        std::vector<index_t>{1, 1, 1, 0, 0, 0, 0, 0});
  for (index_t size = 0; size <= 40; ++size)
    for (int tp = 1; tp <= 9; ++tp) {
      const auto s = shard::split_sizes(size, tp, split_kind::balanced);
      CHECK(*std::max_element(s.begin(), s.end()) - *std::min_element(s.begin(), s.end()) <= 1);
    }
}

TEST_CASE("chunk matches torch.chunk: ceil-sized pieces, trailing ranks short or empty") {
  CHECK(shard::split_sizes(10, 4, split_kind::chunk) == std::vector<index_t>{3, 3, 3, 1});
  CHECK(shard::split_sizes(5, 4, split_kind::chunk) == std::vector<index_t>{2, 2, 1, 0});
  CHECK(shard::split_sizes(6, 4, split_kind::chunk) == std::vector<index_t>{2, 2, 2, 0});
  CHECK(shard::split(10, 4, 3, split_kind::chunk) == interval{9, 10});
  static_assert(shard::split(12, 4, 2, split_kind::chunk) == interval{6, 9});
}

TEST_CASE("even splits equal parts and refuses an indivisible dim with a sentence") {
  static_assert(shard::split(12, 4, 3, split_kind::even) == interval{9, 12});
  CHECK_THROWS_WITH_AS(
      shard::split(10, 4, 0, split_kind::even, {"model.layers.0.mlp.down_proj.weight", 1}),
      "model.layers.0.mlp.down_proj.weight dim 1 has size 10, which tp = 4 does not divide (10 % "
      "4 = 2); the even split needs a multiple of tp: use a balanced or chunk split",
      tpx::error);
  CHECK_FALSE(shard::can_split(10, 4, split_kind::even));
}

TEST_CASE("bad group sizes, ranks and sizes are errors") {
  CHECK_THROWS_WITH_AS(shard::split(8, 0, 0, split_kind::balanced, {"w", 0}),
                       "w dim 0: tp must be at least 1, got tp = 0", tpx::error);
  CHECK_THROWS_WITH_AS(shard::split(8, 2, 2, split_kind::balanced, {"w", 0}),
                       "w dim 0: rank 2 is outside the group of tp = 2 ranks", tpx::error);
  CHECK_THROWS_AS(shard::split(-1, 2, 0, split_kind::balanced), tpx::error);
  CHECK_THROWS_AS(shard::split_all(8, -3, split_kind::chunk), tpx::error);
  CHECK(fmt::format("{}", shard::split(10, 3, 1, split_kind::balanced)) == "[4, 7)");
}
