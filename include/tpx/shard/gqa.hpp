#pragma once
/// \file
/// Grouped-query attention over `tp` ranks: which query and KV heads each rank holds, so that every
/// query head sits on a rank that holds its KV head.
///
///   tp ≤ n_kv:  KV heads split in whole heads (balanced); each rank takes the query heads of its
///               KV heads (n_heads / n_kv per KV head).
///   tp > n_kv:  needs tp % n_kv == 0 and n_heads % tp == 0; KV head h is replicated on the
///               tp / n_kv ranks r with r / (tp / n_kv) == h, which split that head's query heads.
///               (In backward, the dK, dV and dW_k, dW_v of a replicated head are partial on each
///               of those ranks and must be summed over them.)
///
///   n_heads 8, n_kv 2, tp 4:  rank  0    1    2    3
///                             kv    0    0    1    1
///                             q    0-1  2-3  4-5  6-7

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

  /// True when the heads can be placed on `tp` ranks as described above.
  constexpr bool can_implement(int tp) const noexcept {
    if (tp < 1 || n_heads < 1 || n_kv_heads < 1 || head_dim < 1 || n_heads % n_kv_heads != 0)
      return false;
    return tp <= n_kv_heads || (tp % n_kv_heads == 0 && n_heads % tp == 0);
  }

  /// Why the heads cannot be placed on `tp` ranks — a sentence naming `what`, the heads, tp and
  /// the accepted conditions — or an empty string when they can.
  std::string refusal(int tp, std::string_view what = "attention") const {
    if (!(n_heads >= 1 && n_kv_heads >= 1 && head_dim >= 1 && n_heads % n_kv_heads == 0))
      return fmt::format(
          "{}: n_heads = {}, n_kv_heads = {}, head_dim = {} is not grouped-query attention (all "
          "must be positive and n_kv_heads must divide n_heads)",
          what, n_heads, n_kv_heads, head_dim);
    if (!can_implement(tp))
      return fmt::format(
          "{}: n_heads = {} and n_kv_heads = {} cannot be split over tp = {}; tp must be at most "
          "n_kv_heads (KV heads split in whole heads), or a multiple of n_kv_heads that divides "
          "n_heads (each KV head replicated on tp / n_kv_heads ranks)",
          what, n_heads, n_kv_heads, tp);
    return {};
  }

  /// Errors with `refusal`'s sentence when the heads cannot be placed on `tp` ranks.
  void expect_implementable(int tp, std::string_view what = "attention") const {
    if (std::string why = refusal(tp, what); !why.empty()) throw error(std::move(why));
  }

  /// Ranks that hold each KV head: 1, or tp / n_kv_heads when replicated.
  constexpr int replicas(int tp) const noexcept {
    return tp > n_kv_heads ? static_cast<int>(tp / n_kv_heads) : 1;
  }

  /// KV heads of `rank`, as head indices.
  interval kv_heads(int tp, int rank) const {
    expect_implementable(tp);
    if (tp <= n_kv_heads) return split(n_kv_heads, tp, rank, split_kind::balanced, {"KV heads", 0});
    const index_t h = rank / replicas(tp);
    return {h, h + 1};
  }

  /// Query heads of `rank`, as head indices; they all belong to the rank's KV heads.
  interval q_heads(int tp, int rank) const {
    const interval kv = kv_heads(tp, rank);
    const index_t group = n_heads / n_kv_heads;  // query heads per KV head
    if (tp <= n_kv_heads) return {kv.begin * group, kv.end * group};
    const index_t per_rank = group / replicas(tp);
    const index_t first = kv.begin * group + (rank % replicas(tp)) * per_rank;
    return {first, first + per_rank};
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
