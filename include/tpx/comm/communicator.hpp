#pragma once
/// \file
/// The `communicator` concept: what a backend's group of ranks must offer, and the per-kind
/// counters every call updates.
///
/// Buffers are flat spans of elements. "Along dim 0" means concatenated in rank order: an
/// all-gather with per-rank counts c₀ … cₙ₋₁ writes rank r's elements at offset c₀ + … + cᵣ₋₁.
/// Counts may differ between ranks and may be zero.
///
/// Byte counters follow the size convention of nccl-tests, so busbw is the counted bytes times
/// the usual factor: all-reduce and broadcast count the buffer; all-gather the gathered total;
/// reduce-scatter the scattered total (the input); all-to-all-v the bytes this rank sends to
/// other ranks; send and recv their message.

#include <array>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"

namespace tpx::inline v0::comm {

/// Reduction operators of all-reduce and reduce-scatter.
enum class reduce_op { sum, max };

constexpr std::string_view name(reduce_op op) noexcept {
  return op == reduce_op::sum ? "sum" : "max";
}

/// Every kind of call a communicator counts.
enum class kind : int {
  all_reduce,
  all_gather,
  reduce_scatter,
  broadcast,
  all_to_all,
  send,
  recv,
  barrier,
};
inline constexpr int kind_count = 8;

constexpr std::string_view name(kind k) noexcept {
  constexpr std::array<std::string_view, kind_count> names{
      "all_reduce", "all_gather", "reduce_scatter", "broadcast",
      "all_to_all", "send",       "recv",           "barrier"};
  return names[static_cast<int>(k)];
}

/// The nccl-tests bus-bandwidth factor of a collective over `n` ranks: busbw = algbw · factor.
constexpr double bus_factor(kind k, int n) noexcept {
  if (n <= 1) return k == kind::broadcast ? 1.0 : 0.0;
  switch (k) {
    case kind::all_reduce:
      return 2.0 * (n - 1) / n;
    case kind::all_gather:
    case kind::reduce_scatter:
    case kind::all_to_all:
      return static_cast<double>(n - 1) / n;
    default:
      return 1.0;
  }
}

/// Calls and bytes of one kind on one rank.
struct counter {
  std::int64_t calls = 0;
  std::int64_t bytes = 0;
  friend constexpr bool operator==(const counter&, const counter&) = default;
};

/// The counters of one rank, one per kind.
struct stats {
  std::array<counter, kind_count> by_kind{};

  constexpr const counter& operator[](kind k) const noexcept {
    return by_kind[static_cast<int>(k)];
  }
  constexpr counter& operator[](kind k) noexcept { return by_kind[static_cast<int>(k)]; }
  constexpr void record(kind k, std::int64_t bytes) noexcept {
    ++(*this)[k].calls;
    (*this)[k].bytes += bytes;
  }
  /// Bytes of every kind added up.
  constexpr std::int64_t total_bytes() const noexcept {
    std::int64_t t = 0;
    for (const counter& c : by_kind) t += c.bytes;
    return t;
  }
  constexpr void reset() noexcept { by_kind = {}; }
  /// Adds another rank's or group's counters (a layer's sub-groups).
  constexpr stats& operator+=(const stats& o) noexcept {
    for (std::size_t k = 0; k < by_kind.size(); ++k) {
      by_kind[k].calls += o.by_kind[k].calls;
      by_kind[k].bytes += o.by_kind[k].bytes;
    }
    return *this;
  }
};

namespace detail {

/// Σ counts.
inline index_t total(std::span<const index_t> counts) {
  index_t t = 0;
  for (const index_t n : counts) t += n;
  return t;
}

/// Checks one rank's per-rank counts: one per rank of the group, none negative.
inline void check_counts(std::span<const index_t> counts, int size, int rank,
                         std::string_view what) {
  expect(static_cast<int>(counts.size()) == size,
         "{}: rank {} passed {} per-rank counts for a group of {} ranks", what, rank, counts.size(),
         size);
  for (std::size_t q = 0; q < counts.size(); ++q)
    expect(counts[q] >= 0, "{}: rank {} passed a negative count {} for rank {}", what, rank,
           counts[q], q);
}

/// Checks one rank's all-gather arguments: its send buffer holds counts[rank] elements and its
/// receive buffer Σ counts.
inline void expect_gather_args(index_t send, index_t recv, std::span<const index_t> counts,
                               int size, int rank, std::string_view what) {
  check_counts(counts, size, rank, what);
  expect(send == counts[static_cast<std::size_t>(rank)],
         "{}: rank {} passed a send buffer of {} elements, but counts[{}] = {}", what, rank, send,
         rank, counts[static_cast<std::size_t>(rank)]);
  expect(recv == total(counts),
         "{}: rank {} passed a receive buffer of {} elements, but the counts add up to {}", what,
         rank, recv, total(counts));
}

/// Checks one rank's reduce-scatter arguments: its send buffer holds Σ counts elements and its
/// receive buffer counts[rank].
inline void expect_scatter_args(index_t send, index_t recv, std::span<const index_t> counts,
                                int size, int rank, std::string_view what) {
  check_counts(counts, size, rank, what);
  expect(send == total(counts),
         "{}: rank {} passed a send buffer of {} elements, but the counts add up to {}", what, rank,
         send, total(counts));
  expect(recv == counts[static_cast<std::size_t>(rank)],
         "{}: rank {} passed a receive buffer of {} elements, but counts[{}] = {}", what, rank,
         recv, rank, counts[static_cast<std::size_t>(rank)]);
}

/// Checks one rank's all-to-all-v arguments: each buffer holds the sum of its counts.
inline void expect_all_to_all_args(index_t send, std::span<const index_t> send_counts,
                                   index_t recv, std::span<const index_t> recv_counts, int size,
                                   int rank) {
  check_counts(send_counts, size, rank, "all_to_all_v send");
  check_counts(recv_counts, size, rank, "all_to_all_v receive");
  expect(send == total(send_counts),
         "all_to_all_v: rank {} passed a send buffer of {} elements, but its send counts add up "
         "to {}",
         rank, send, total(send_counts));
  expect(recv == total(recv_counts),
         "all_to_all_v: rank {} passed a receive buffer of {} elements, but its receive counts "
         "add up to {}",
         rank, recv, total(recv_counts));
}

/// The elements an all-to-all-v sends to other ranks: what its byte counter counts (nccl-tests).
inline index_t all_to_all_elements(std::span<const index_t> send_counts, int rank) {
  index_t n = 0;
  for (std::size_t q = 0; q < send_counts.size(); ++q)
    if (static_cast<int>(q) != rank) n += send_counts[q];
  return n;
}

}  // namespace detail

/// A group of ranks that can run every collective tpx uses on element type `T`.
///
/// - `all_reduce(data, op)`: in place; every rank ends with the same elementwise reduction.
/// - `all_gather(send, recv, counts)`: `send.size() == counts[rank]`,
///   `recv.size() == Σ counts`; recv holds every rank's send in rank order.
/// - `reduce_scatter(send, recv, counts, op)`: `send.size() == Σ counts`,
///   `recv.size() == counts[rank]`; recv is the reduction of every rank's block `rank`.
/// - `broadcast(data, root)`: every rank ends with root's data.
/// - `all_to_all_v(send, send_counts, recv, recv_counts)`: send holds blocks for ranks 0…n−1 in
///   order; recv gets the blocks from ranks 0…n−1 in order; rank r's send_counts[q] must equal
///   rank q's recv_counts[r].
/// - `send(data, peer)`, `recv(data, peer)`: one message, matched in order per pair.
/// - `barrier()`; `statistics()` the counters of this rank.
///
/// Every mismatch between ranks (sizes, counts, kinds, roots) is a `tpx::error` on every rank,
/// never a hang or a read out of bounds.
template <class C, class T>
concept communicator_of = requires(C& c, const C& cc, std::span<T> data, std::span<const T> in,
                                   std::span<const index_t> counts, reduce_op op, int peer) {
  { cc.rank() } -> std::convertible_to<int>;
  { cc.size() } -> std::convertible_to<int>;
  c.all_reduce(data, op);
  c.all_gather(in, data, counts);
  c.reduce_scatter(in, data, counts, op);
  c.broadcast(data, peer);
  c.all_to_all_v(in, counts, data, counts);
  c.send(in, peer);
  c.recv(data, peer);
  c.barrier();
  { cc.statistics() } -> std::convertible_to<const stats&>;
};

/// A communicator that makes sub-groups: `split(color, key)` as MPI_Comm_split and ncclCommSplit
/// define it — collective over the communicator; the ranks passing the same color (≥ 0) form a new
/// communicator of the same type, ranked by key, then by their rank in this one.
template <class C>
concept splittable = requires(C& c, int color, int key) {
  { c.split(color, key) } -> std::same_as<C>;
};

/// A communicator for the two compute types, f32 and f64.
template <class C>
concept communicator = communicator_of<C, float> && communicator_of<C, double>;

}  // namespace tpx::inline v0::comm
