#pragma once
/// \file
/// Grouped-query attention over `tp` ranks: which query and KV heads each rank holds, so that every
/// query head sits on a rank that holds its KV head. Any 1 ≤ tp ≤ n_heads places.
///
///   tp ≤ n_kv:  KV heads split in whole heads (balanced); each rank takes the query heads of its
///               KV heads (group = n_heads / n_kv per KV head). Nothing is replicated.
///   tp > n_kv:  query heads split in whole heads (balanced, contiguous, in rank order); each rank
///               holds every KV head its query heads use — one, or several where its query heads
///               straddle a group boundary — so a KV head is replicated on exactly the ranks whose
///               query heads use it. (In backward, the dK, dV and dW_k, dW_v rows of a KV head
///               held by several ranks are partial on each of them and are summed over them.)
///
///   n_heads 8, n_kv 2, tp 4:  rank  0    1    2    3        (tp a multiple of n_kv that divides
///                             kv    0    0    1    1         n_heads: every KV head on tp / n_kv
///                             q    0-1  2-3  4-5  6-7        ranks, each rank one KV head)
///
///   n_heads 6, n_kv 2, tp 4:  rank  0    1    2    3        (KV head 0 on ranks 0, 1; KV head 1
///                             kv    0    0-1  1    1         on ranks 1, 2, 3; rank 1's query
///                             q    0-1  2-3  4    5          heads 2 and 3 use KV heads 0 and 1)
///
/// A rank's local query head j is global head q_heads(tp, rank).begin + j; it reads local KV head
/// (q_offset(tp, rank) + j) / group() (ops::attention_shape::kv_of).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::shard {

struct gqa {
  index_t n_heads = 0;
  index_t n_kv_heads = 0;
  index_t head_dim = 0;

  /// True when the heads are grouped-query attention and 1 ≤ tp ≤ n_heads.
  constexpr bool can_implement(int tp) const noexcept {
    return valid() && tp >= 1 && tp <= n_heads;
  }

  /// Why the heads cannot be placed on `tp` ranks — a sentence naming `what`, the heads, tp and
  /// the rule — or an empty string when they can.
  std::string refusal(int tp, std::string_view what = "attention") const {
    if (!valid())
      return fmt::format(
          "{}: n_heads = {}, n_kv_heads = {}, head_dim = {} is not grouped-query attention (all "
          "must be positive and n_kv_heads must divide n_heads)",
          what, n_heads, n_kv_heads, head_dim);
    if (!can_implement(tp))
      return fmt::format(
          "{}: n_heads = {} query heads cannot be split over tp = {}; attention is split in whole "
          "query heads, so tp must be between 1 and n_heads = {}",
          what, n_heads, tp, n_heads);
    return {};
  }

  /// Errors with `refusal`'s sentence when the heads cannot be placed on `tp` ranks.
  void expect_implementable(int tp, std::string_view what = "attention") const {
    if (std::string why = refusal(tp, what); !why.empty()) throw error(std::move(why));
  }

  /// Query heads per KV head.
  constexpr index_t group() const noexcept { return n_kv_heads == 0 ? 0 : n_heads / n_kv_heads; }

  /// Query heads of `rank`, as head indices.
  interval q_heads(int tp, int rank) const {
    expect_implementable(tp);
    if (tp <= n_kv_heads) {
      const interval kv = split(n_kv_heads, tp, rank, split_kind::balanced, {"KV heads", 0});
      return {kv.begin * group(), kv.end * group()};
    }
    return split(n_heads, tp, rank, split_kind::balanced, {"query heads", 0});
  }

  /// KV heads of `rank`, as head indices: those its query heads use.
  interval kv_heads(int tp, int rank) const {
    const interval q = q_heads(tp, rank);
    return {q.begin / group(), (q.end - 1) / group() + 1};
  }

  /// Where `rank`'s first query head sits in the group of its first KV head (0 when tp ≤ n_kv).
  index_t q_offset(int tp, int rank) const {
    return q_heads(tp, rank).begin - kv_heads(tp, rank).begin * group();
  }

  /// The ranks that hold KV head `h`: a contiguous run (one rank when tp ≤ n_kv).
  interval holders(int tp, index_t h) const {
    expect(0 <= h && h < n_kv_heads, "shard::gqa: KV head {} of {}", h, n_kv_heads);
    index_t first = -1, last = -1;
    for (int r = 0; r < tp; ++r) {
      const interval kv = kv_heads(tp, r);
      if (kv.begin <= h && h < kv.end) {
        if (first < 0) first = r;
        last = r;
      }
    }
    return {first, last + 1};
  }

  /// KV heads held over all ranks, counting each copy: n_kv_heads when nothing is replicated.
  index_t kv_copies(int tp) const {
    index_t n = 0;
    for (int r = 0; r < tp; ++r) n += kv_heads(tp, r).size();
    return n;
  }

  /// Each rank's KV heads, as messages show them: "0 | 0-1 | 1 | 1".
  std::string kv_heads_by_rank(int tp) const {
    std::string s;
    for (int r = 0; r < tp; ++r) {
      const interval kv = kv_heads(tp, r);
      s += fmt::format("{}{}", r ? " | " : "", kv.begin);
      if (kv.size() > 1) s += fmt::format("-{}", kv.end - 1);
    }
    return s;
  }

  /// Partitions of the q, k and v projections' out dim ([heads × head_dim]).
  partition q_partition(int tp) const { return by_heads(tp, n_heads, false); }
  partition kv_partition(int tp) const { return by_heads(tp, n_kv_heads, true); }

  /// Partition of a fused q|k|v out dim [(n_heads + 2·n_kv_heads) × head_dim]: each rank holds
  /// its q heads, then its k heads, then its v heads.
  partition qkv_partition(int tp) const {
    std::vector<pieces> ranks;
    const index_t k0 = n_heads * head_dim, v0 = k0 + n_kv_heads * head_dim;
    for (int r = 0; r < tp; ++r) {
      const interval q = q_heads(tp, r), kv = kv_heads(tp, r);
      ranks.push_back({{{q.begin * head_dim, q.end * head_dim},
                        {k0 + kv.begin * head_dim, k0 + kv.end * head_dim},
                        {v0 + kv.begin * head_dim, v0 + kv.end * head_dim}}});
    }
    return {v0 + n_kv_heads * head_dim, std::move(ranks)};
  }

 private:
  constexpr bool valid() const noexcept {
    return n_heads >= 1 && n_kv_heads >= 1 && head_dim >= 1 && n_heads % n_kv_heads == 0;
  }

  partition by_heads(int tp, index_t heads, bool kv) const {
    std::vector<pieces> ranks;
    for (int r = 0; r < tp; ++r) {
      const interval h = kv ? kv_heads(tp, r) : q_heads(tp, r);
      ranks.push_back({{{h.begin * head_dim, h.end * head_dim}}});
    }
    return {heads * head_dim, std::move(ranks)};
  }
};

}  // namespace tpx::inline v0::shard
