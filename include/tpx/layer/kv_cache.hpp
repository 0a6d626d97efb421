#pragma once
/// \file
/// `kv_cache<T>`: one attention layer's keys and values on one rank, for inference. The rank
/// caches only its own KV heads (a KV head replicated over several ranks is cached on each of
/// them), per sequence, with a capacity of tokens per sequence fixed when it is made and
/// allocated once:
///
///   keys(seq)    [rows, kv_r · d]   rotated (RoPE'd, q/k-normed) keys, position p in row
///                                   p % rows
///   values(seq)  [rows, kv_r · d]   values as the v projection gives them
///   length(seq)  positions filled so far
///
/// rows is the capacity, or — for a sliding-window layer — the window when it is shorter: the
/// positions a window no longer reaches are overwritten (evicted).
///
/// `causal_attention::forward_cached` appends a step's keys and values and attends over the
/// filled prefix. Multi-head latent attention (`mla_attention`) caches one latent per token in
/// the keys — [normed kv latent | rotated k_rope], the same on every rank — and no values. A step
/// that would pass the capacity is a sentence, not a wrap-around.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::layer {

/// A run of packed tokens of one sequence in a batched inference step: its slot in the cache and
/// its token count.
struct segment {
  index_t seq = 0;
  index_t tokens = 0;
};

template <class T>
class kv_cache {
 public:
  kv_cache() = default;
  /// Room for `sequences` sequences of up to `capacity` tokens each, `kv_cols` = kv_r · head_dim
  /// key columns per token and `value_cols` value columns (−1: as many as keys; 0: none, for a
  /// cache of one latent per token, MLA's).
  /// With a sliding `window` (> 0), only the last `window` positions are kept: position p sits
  /// in row p % window, evicting position p − window.
  kv_cache(index_t sequences, index_t capacity, index_t kv_cols, index_t window = 0,
           index_t value_cols = -1)
      : sequences_(sequences),
        capacity_(capacity),
        kv_cols_(kv_cols),
        value_cols_(value_cols < 0 ? kv_cols : value_cols) {
    expect(sequences >= 1 && capacity >= 1 && kv_cols >= 0 && window >= 0,
           "kv_cache: needs at least one sequence of at least one token (got {} sequences of {} "
           "tokens, {} columns, window {})",
           sequences, capacity, kv_cols, window);
    rows_ = window > 0 ? std::min(capacity, window) : capacity;
    keys_.assign(static_cast<std::size_t>(sequences * rows_ * kv_cols_), T(0));
    values_.assign(static_cast<std::size_t>(sequences * rows_ * value_cols_), T(0));
    lengths_.assign(static_cast<std::size_t>(sequences), 0);
  }

  index_t sequences() const noexcept { return sequences_; }
  index_t capacity() const noexcept { return capacity_; }
  index_t kv_cols() const noexcept { return kv_cols_; }
  index_t value_cols() const noexcept { return value_cols_; }
  /// Rows held per sequence: the capacity, or the window when it is shorter. Position p of a
  /// sequence is row p % rows().
  index_t rows() const noexcept { return rows_; }
  /// Positions of sequence `seq` filled so far.
  index_t length(index_t seq) const { return lengths_[checked(seq)]; }
  /// Bytes the cache holds (keys and values, every row of every sequence).
  index_t bytes() const noexcept {
    return sequences_ * rows_ * (kv_cols_ + value_cols_) * static_cast<index_t>(sizeof(T));
  }

  matrix_view<T> keys(index_t seq) { return block(keys_, seq, kv_cols_); }
  matrix_view<T> values(index_t seq) { return block(values_, seq, value_cols_); }

  /// Claims the next `n` positions of `seq` and returns the first; `who` (the layer) names the
  /// overflow in the error.
  index_t reserve(index_t seq, index_t n, std::string_view who) {
    expect_room(seq, n, who);
    index_t& len = lengths_[checked(seq)];
    const index_t start = len;
    len += n;
    return start;
  }
  /// Checks that `n` more tokens of `seq` fit; `who` names the overflow in the error.
  void expect_room(index_t seq, index_t n, std::string_view who) const {
    const index_t len = length(seq);
    expect(n >= 0 && len + n <= capacity_,
           "{}: sequence {} holds {} tokens and {} more would pass the cache's capacity of {} "
           "tokens per sequence",
           who, seq, len, n, capacity_);
  }
  /// Forgets sequence `seq` (its slot takes a new sequence), or every sequence.
  void clear(index_t seq) { lengths_[checked(seq)] = 0; }
  void clear() { lengths_.assign(lengths_.size(), 0); }

 private:
  std::size_t checked(index_t seq) const {
    expect(seq >= 0 && seq < sequences_, "kv_cache: sequence {} is outside the cache's {}", seq,
           sequences_);
    return static_cast<std::size_t>(seq);
  }
  matrix_view<T> block(std::vector<T>& b, index_t seq, index_t cols) {
    return make_matrix(
        b.data() + static_cast<std::size_t>(checked(seq)) * static_cast<std::size_t>(rows_ * cols),
        rows_, cols);
  }

  index_t sequences_ = 0, capacity_ = 0, kv_cols_ = 0, value_cols_ = 0, rows_ = 0;
  std::vector<T> keys_, values_;
  std::vector<index_t> lengths_;
};

/// Checks one inference step's `segments` against `cache`: each sequence at most once, a
/// non-negative token count that fits its room, `rows` tokens in all (the rows of the layer's
/// input, `what`). Returns the longest prefix the step reaches, which its RoPE tables must cover;
/// `who` (the layer) names every error.
template <class T>
index_t expect_segments(const kv_cache<T>& cache, std::span<const segment> segments, index_t rows,
                        std::string_view who, std::string_view what) {
  index_t total = 0, longest = 0;
  for (const segment& g : segments) {
    expect(g.tokens >= 0, "{}: sequence {} has {} tokens", who, g.seq, g.tokens);
    expect(std::count_if(segments.begin(), segments.end(),
                         [&](const segment& other) { return other.seq == g.seq; }) == 1,
           "{}: sequence {} appears twice in one step; give each sequence one run of tokens", who,
           g.seq);
    cache.expect_room(g.seq, g.tokens, who);
    total += g.tokens;
    longest = std::max(longest, cache.length(g.seq) + g.tokens);
  }
  expect(total == rows, "{}: the segments hold {} tokens but {} has {} rows", who, total, what,
         rows);
  return longest;
}

}  // namespace tpx::inline v0::layer
