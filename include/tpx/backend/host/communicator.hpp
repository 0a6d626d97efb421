#pragma once
/// \file
/// Ranks as threads of one process: `tpx::host::run(tp, fn)` calls `fn(comm)` on `tp` threads,
/// each with its own `host::communicator` over one shared-memory group.
///
///   rank 0 ─┐ publish (pointer, count, kind) ─ barrier ─ check every rank agrees ─┐
///   rank 1 ─┤                                                                      ├─ copy /
///   reduce …      ─┘                                                                      ┘  ─
///   barrier
///
/// Reductions add in rank order on every rank, so all ranks end with bit-identical results.
/// When one rank throws, every other rank is released from its wait and `run` rethrows the first
/// error; when a rank returns while another still waits for it, the waiter gets a `tpx::error`
/// saying so. Nothing hangs.

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <span>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "tpx/comm/communicator.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::host {

namespace detail {

/// Thrown inside a rank when another rank failed; never escapes `run`.
struct released {};

template <class T>
inline constexpr char type_key = 0;

/// What one rank posted for the collective in progress.
struct post {
  comm::kind kind = comm::kind::barrier;
  const void* type = nullptr;
  std::size_t elem_size = 0;
  const void* in = nullptr;
  void* out = nullptr;
  index_t in_count = 0;
  index_t out_count = 0;
  std::span<const index_t> counts;
  std::span<const index_t> counts2;
  int root = 0;
  comm::reduce_op op = comm::reduce_op::sum;
};

struct message {
  const void* type = nullptr;
  index_t count = 0;
  std::vector<std::byte> bytes;
};

/// State shared by the ranks of one group.
class group {
 public:
  explicit group(int size)
      : size_(size),
        posts_(static_cast<std::size_t>(size)),
        mail_(static_cast<std::size_t>(size) * static_cast<std::size_t>(size)) {}

  int size() const noexcept { return size_; }
  std::vector<post>& posts() noexcept { return posts_; }

  /// Waits until every rank arrived. Throws `released` if a rank failed, and `tpx::error` if a
  /// rank returned from its function while this one waits for it.
  void barrier(int rank, std::string_view what) {
    std::unique_lock lock(mutex_);
    const std::uint64_t gen = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || failed_ || left_ >= 0; });
    if (generation_ != gen) return;
    if (failed_) throw released{};
    fail(
        "rank {} waits in {}, but rank {} has already returned from its function; every rank "
        "must make the same collective calls in the same order",
        rank, what, left_);
  }

  void deliver(int from, int to, message m) {
    std::lock_guard lock(mutex_);
    box(from, to).push_back(std::move(m));
    cv_.notify_all();
  }

  message collect(int from, int to) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !box(from, to).empty() || failed_ || has_left(from); });
    if (!box(from, to).empty()) {
      message m = std::move(box(from, to).front());
      box(from, to).pop_front();
      return m;
    }
    if (failed_) throw released{};
    fail(
        "rank {} waits in recv for a message from rank {}, which has returned from its function "
        "without sending it",
        to, from);
  }

  /// A rank failed: release everyone.
  void abort() {
    std::lock_guard lock(mutex_);
    failed_ = true;
    cv_.notify_all();
  }

  /// A rank returned from its function.
  void leave(int rank) {
    std::lock_guard lock(mutex_);
    if (left_ < 0) left_ = rank;
    left_ranks_.push_back(rank);
    cv_.notify_all();
  }

 private:
  std::deque<message>& box(int from, int to) {
    return mail_[static_cast<std::size_t>(from) * static_cast<std::size_t>(size_) +
                 static_cast<std::size_t>(to)];
  }
  bool has_left(int rank) const {
    return std::find(left_ranks_.begin(), left_ranks_.end(), rank) != left_ranks_.end();
  }

  int size_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  bool failed_ = false;
  int left_ = -1;
  std::vector<int> left_ranks_;
  std::vector<post> posts_;
  std::vector<std::deque<message>> mail_;
};

}  // namespace detail

/// One rank's handle on a shared-memory group. Models `comm::communicator`.
class communicator {
 public:
  communicator(detail::group& g, int rank) : group_(&g), rank_(rank) {}

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return group_->size(); }
  const comm::stats& statistics() const noexcept { return stats_; }
  void reset_statistics() noexcept { stats_.reset(); }

  template <class T>
  void all_reduce(std::span<T> data, comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>,
                  "tpx::host::communicator: all_reduce needs arithmetic T");
    detail::post p = make_post<T>(comm::kind::all_reduce);
    p.out = data.data();
    p.out_count = ssize(data);
    p.op = op;
    const std::vector<detail::post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].out_count == p.out_count && all[r].op == p.op, "buffer of {} elements",
            [&](int q) { return all[q].out_count; });
    // Phase 1: rank r reduces its own segment of every buffer into its own buffer (only rank r
    // touches segment r). Phase 2: every rank copies the other segments from their owners.
    const auto segment = [&](int r) { return segment_of(p.out_count, r); };
    const auto [lo, hi] = segment(rank_);
    for (index_t i = lo; i < hi; ++i) {
      T acc = static_cast<const T*>(all[0].out)[i];
      for (int q = 1; q < size(); ++q) acc = combine(acc, static_cast<const T*>(all[q].out)[i], op);
      data[static_cast<std::size_t>(i)] = acc;
    }
    sync("all_reduce");
    for (int q = 0; q < size(); ++q) {
      if (q == rank_) continue;
      const auto [b, e] = segment(q);
      copy(static_cast<const T*>(all[q].out) + b, data.data() + b, e - b);
    }
    finish(comm::kind::all_reduce, p.out_count * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts) {
    check_counts(counts, "all_gather");
    expect(ssize(send) == counts[static_cast<std::size_t>(rank_)],
           "all_gather: rank {} passed a send buffer of {} elements, but counts[{}] = {}", rank_,
           ssize(send), rank_, counts[static_cast<std::size_t>(rank_)]);
    const index_t total = sum(counts);
    expect(
        ssize(recv) == total,
        "all_gather: rank {} passed a receive buffer of {} elements, but the counts add up to {}",
        rank_, ssize(recv), total);
    detail::post p = make_post<T>(comm::kind::all_gather);
    p.in = send.data();
    p.counts = counts;
    const std::vector<detail::post>& all = publish(p);
    agree_counts(all, "all_gather");
    index_t offset = 0;
    for (int q = 0; q < size(); ++q) {
      const index_t n = counts[static_cast<std::size_t>(q)];
      copy(static_cast<const T*>(all[q].in), recv.data() + offset, n);
      offset += n;
    }
    finish(comm::kind::all_gather, total * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts,
                      comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>,
                  "tpx::host::communicator: reduce_scatter needs arithmetic T");
    check_counts(counts, "reduce_scatter");
    const index_t total = sum(counts);
    expect(
        ssize(send) == total,
        "reduce_scatter: rank {} passed a send buffer of {} elements, but the counts add up to {}",
        rank_, ssize(send), total);
    expect(ssize(recv) == counts[static_cast<std::size_t>(rank_)],
           "reduce_scatter: rank {} passed a receive buffer of {} elements, but counts[{}] = {}",
           rank_, ssize(recv), rank_, counts[static_cast<std::size_t>(rank_)]);
    detail::post p = make_post<T>(comm::kind::reduce_scatter);
    p.in = send.data();
    p.counts = counts;
    p.op = op;
    const std::vector<detail::post>& all = publish(p);
    agree_counts(all, "reduce_scatter");
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].op == op, "reduction operator {}",
            [&](int q) { return static_cast<int>(all[q].op); });
    index_t offset = 0;
    for (int q = 0; q < rank_; ++q) offset += counts[static_cast<std::size_t>(q)];
    for (index_t i = 0; i < ssize(recv); ++i) {
      T acc = static_cast<const T*>(all[0].in)[offset + i];
      for (int q = 1; q < size(); ++q)
        acc = combine(acc, static_cast<const T*>(all[q].in)[offset + i], op);
      recv[static_cast<std::size_t>(i)] = acc;
    }
    finish(comm::kind::reduce_scatter, total * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void broadcast(std::span<T> data, int root) {
    expect_rank(root, size(), "broadcast root");
    detail::post p = make_post<T>(comm::kind::broadcast);
    p.out = data.data();
    p.out_count = ssize(data);
    p.root = root;
    const std::vector<detail::post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].root == root, "root {}", [&](int q) { return all[q].root; });
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].out_count == p.out_count, "buffer of {} elements",
            [&](int q) { return all[q].out_count; });
    if (rank_ != root) copy(static_cast<const T*>(all[root].out), data.data(), p.out_count);
    finish(comm::kind::broadcast, p.out_count * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts,
                    std::span<T> recv, std::span<const index_t> recv_counts) {
    check_counts(send_counts, "all_to_all_v send");
    check_counts(recv_counts, "all_to_all_v receive");
    expect(ssize(send) == sum(send_counts),
           "all_to_all_v: rank {} passed a send buffer of {} elements, but its send counts add up "
           "to {}",
           rank_, ssize(send), sum(send_counts));
    expect(ssize(recv) == sum(recv_counts),
           "all_to_all_v: rank {} passed a receive buffer of {} elements, but its receive counts "
           "add up to {}",
           rank_, ssize(recv), sum(recv_counts));
    detail::post p = make_post<T>(comm::kind::all_to_all);
    p.in = send.data();
    p.counts = send_counts;
    p.counts2 = recv_counts;
    const std::vector<detail::post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      for (int q = 0; q < size(); ++q) {
        const index_t sent = all[r].counts[static_cast<std::size_t>(q)];
        const index_t expected = all[q].counts2[static_cast<std::size_t>(r)];
        if (sent != expected) {
          sync_after_error();
          fail(
              "all_to_all_v: rank {} sends {} elements to rank {}, but rank {} expects {} from "
              "rank {}",
              r, sent, q, q, expected, r);
        }
      }
    index_t out = 0;
    index_t bytes = 0;
    for (int q = 0; q < size(); ++q) {
      index_t from = 0;
      for (int s = 0; s < rank_; ++s) from += all[q].counts[static_cast<std::size_t>(s)];
      const index_t n = recv_counts[static_cast<std::size_t>(q)];
      copy(static_cast<const T*>(all[q].in) + from, recv.data() + out, n);
      out += n;
      if (q != rank_) bytes += send_counts[static_cast<std::size_t>(q)];
    }
    finish(comm::kind::all_to_all, bytes * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void send(std::span<const T> data, int peer) {
    expect_rank(peer, size(), "send peer");
    detail::message m{&detail::type_key<T>, ssize(data), {}};
    m.bytes.resize(data.size_bytes());
    if (!data.empty()) std::memcpy(m.bytes.data(), data.data(), data.size_bytes());
    group_->deliver(rank_, peer, std::move(m));
    stats_.record(comm::kind::send, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void recv(std::span<T> data, int peer) {
    expect_rank(peer, size(), "recv peer");
    detail::message m = group_->collect(peer, rank_);
    expect(m.type == &detail::type_key<T>,
           "recv: rank {} expects elements of another type than rank {} sent", rank_, peer);
    expect(m.count == ssize(data),
           "recv: rank {} expects {} elements from rank {}, but the message holds {}", rank_,
           ssize(data), peer, m.count);
    if (!data.empty()) std::memcpy(data.data(), m.bytes.data(), data.size_bytes());
    stats_.record(comm::kind::recv, static_cast<index_t>(data.size_bytes()));
  }

  void barrier() {
    publish(make_post<char>(comm::kind::barrier));
    finish(comm::kind::barrier, 0);
  }

 private:
  template <class S>
  static index_t ssize(const S& s) noexcept {
    return static_cast<index_t>(s.size());
  }
  static index_t sum(std::span<const index_t> c) {
    return std::accumulate(c.begin(), c.end(), index_t{0});
  }

  template <class T>
  static T combine(T a, T b, comm::reduce_op op) noexcept {
    return op == comm::reduce_op::sum ? static_cast<T>(a + b) : (b > a ? b : a);
  }
  template <class T>
  static void copy(const T* from, T* to, index_t n) noexcept {
    if (n > 0) std::memcpy(to, from, static_cast<std::size_t>(n) * sizeof(T));
  }

  /// The slice of an all-reduce buffer rank r reduces: a balanced split of n elements.
  std::pair<index_t, index_t> segment_of(index_t n, int r) const noexcept {
    const index_t base = n / size();
    const index_t extra = n % size();
    const index_t begin = r * base + std::min<index_t>(r, extra);
    return {begin, begin + base + (r < extra ? 1 : 0)};
  }

  template <class T>
  static detail::post make_post(comm::kind k) {
    detail::post p;
    p.kind = k;
    p.type = &detail::type_key<T>;
    p.elem_size = sizeof(T);
    return p;
  }

  void check_counts(std::span<const index_t> counts, std::string_view what) const {
    expect(ssize(counts) == size(), "{}: rank {} passed {} per-rank counts for a group of {} ranks",
           what, rank_, counts.size(), size());
    for (std::size_t q = 0; q < counts.size(); ++q)
      expect(counts[q] >= 0, "{}: rank {} passed a negative count {} for rank {}", what, rank_,
             counts[q], q);
  }

  /// Posts this rank's call, waits for every rank, and checks that all ranks make the same call
  /// on the same element type.
  const std::vector<detail::post>& publish(const detail::post& p) {
    std::vector<detail::post>& all = group_->posts();
    all[static_cast<std::size_t>(rank_)] = p;
    sync(comm::name(p.kind));
    for (int r = 0; r < size(); ++r) {
      if (all[r].kind != p.kind) {
        sync_after_error();
        fail(
            "rank {} calls {} while rank {} calls {}; every rank must make the same collective "
            "calls in the same order",
            rank_, comm::name(p.kind), r, comm::name(all[r].kind));
      }
      if (all[r].type != p.type) {
        sync_after_error();
        fail(
            "{}: rank {} passes {}-byte elements of one type while rank {} passes {}-byte "
            "elements of another; every rank must use the same element type",
            comm::name(p.kind), rank_, p.elem_size, r, all[r].elem_size);
      }
    }
    return all;
  }

  /// Checks that rank r's post agrees with this rank's; `value(q)` describes rank q's post.
  template <class Value>
  void agree(const std::vector<detail::post>& all, int r, bool same, std::string_view what,
             Value value) {
    if (same) return;
    sync_after_error();
    fail("{}: rank {} passes a {} while rank {} passes a {}; every rank must pass the same",
         comm::name(all[static_cast<std::size_t>(rank_)].kind), rank_,
         fmt::format(fmt::runtime(what), value(rank_)), r,
         fmt::format(fmt::runtime(what), value(r)));
  }

  void agree_counts(const std::vector<detail::post>& all, std::string_view what) {
    for (int r = 0; r < size(); ++r)
      for (int q = 0; q < size(); ++q) {
        const index_t mine =
            all[static_cast<std::size_t>(rank_)].counts[static_cast<std::size_t>(q)];
        const index_t theirs = all[static_cast<std::size_t>(r)].counts[static_cast<std::size_t>(q)];
        if (mine != theirs) {
          sync_after_error();
          fail(
              "{}: rank {} passes counts[{}] = {} while rank {} passes counts[{}] = {}; every "
              "rank must pass the same counts",
              what, rank_, q, mine, r, q, theirs);
        }
      }
  }

  /// Every rank sees the same posts, so every rank detects the same mismatch; this barrier keeps
  /// the posts alive until all of them have read them, then each throws.
  void sync_after_error() { sync("error check"); }

  void sync(std::string_view what) { group_->barrier(rank_, what); }

  void finish(comm::kind k, index_t bytes) {
    sync(comm::name(k));
    stats_.record(k, bytes);
  }

  detail::group* group_;
  int rank_;
  comm::stats stats_;
};

static_assert(comm::communicator<communicator>);

/// Runs `fn(communicator&)` on `tp` threads, one per rank, and returns when all have returned.
/// If any rank throws, the others are released and the first exception is rethrown here.
template <class Fn>
requires std::invocable<Fn&, communicator&>
void run(int tp, Fn&& fn) {
  expect_group_size(tp, "host::run");
  detail::group group(tp);
  std::mutex first_mutex;
  std::exception_ptr first;
  const auto body = [&](int rank) {
    communicator comm(group, rank);
    try {
      fn(comm);
      group.leave(rank);
    } catch (const detail::released&) {
      // Another rank failed first; its exception is the one reported.
    } catch (...) {
      {
        std::lock_guard lock(first_mutex);
        if (!first) first = std::current_exception();
      }
      group.abort();
    }
  };
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(tp - 1));
    for (int r = 1; r < tp; ++r) threads.emplace_back(body, r);
    body(0);
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace tpx::inline v0::host
