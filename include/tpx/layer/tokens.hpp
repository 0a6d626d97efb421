#pragma once
/// \file
/// Token shards under sequence parallelism: rank r holds the balanced block
/// `shard::split(T, tp, r, balanced)` of the T tokens (the first T mod tp ranks one token more).
/// Layers keep one `token_shards` and ask it per call; it allocates once per group size.

#include <span>
#include <vector>

#include "tpx/shard/split.hpp"

namespace tpx::inline v0::layer::detail {

class token_shards {
 public:
  /// Every rank's token count for `tokens` tokens over `tp` ranks, in rank order.
  std::span<const index_t> counts(index_t tokens, int tp) {
    counts_.resize(static_cast<std::size_t>(tp));
    for (int r = 0; r < tp; ++r)
      counts_[static_cast<std::size_t>(r)] =
          shard::split(tokens, tp, r, shard::split_kind::balanced).size();
    return counts_;
  }
  /// Rank `rank`'s token count.
  index_t of(index_t tokens, int tp, int rank) {
    return counts(tokens, tp)[static_cast<std::size_t>(rank)];
  }

 private:
  std::vector<index_t> counts_;
};

}  // namespace tpx::inline v0::layer::detail
