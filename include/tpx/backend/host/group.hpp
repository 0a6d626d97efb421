#pragma once
/// \file
/// A group of ranks as threads of one process: the rendezvous every rank waits in, the checks
/// that every rank makes the same call, the mailboxes of send/recv, and `detail::run_group`, which
/// runs one function per rank on its own thread. `host::communicator` moves data in host memory
/// over it; `cuda::local_communicator` moves data in device memory over the same group.
///
/// When one rank throws, every other rank is released from its wait and the runner rethrows the
/// cause (the lowest rank's own error, not a bystander's report of it); when a rank returns while
/// another still waits for it, the waiter gets a `tpx::error` saying so. Nothing hangs.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
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
  std::shared_ptr<void> payload = {};  ///< what a device-memory communicator hands over instead
};

/// State shared by the ranks of one group.
class group {
 public:
  explicit group(int size)
      : size_(size),
        waits_(static_cast<std::size_t>(size)),
        posts_(static_cast<std::size_t>(size)),
        mail_(static_cast<std::size_t>(size) * static_cast<std::size_t>(size)) {}

  int size() const noexcept { return size_; }
  std::vector<post>& posts() noexcept { return posts_; }

  /// Waits until every rank arrived. Throws `released` if a rank failed, and `tpx::error` if a
  /// rank returned from its function while this one waits for it, or if waiting here completes
  /// a deadlock (a rank waits in recv for a message this one would have to send).
  void barrier(int rank, std::string_view what) {
    std::unique_lock lock(mutex_);
    const std::uint64_t gen = generation_.load(std::memory_order_relaxed);
    if (++arrived_ == size_) {
      arrived_ = 0;
      // Every other rank is released now, though it may not run for a while: it no longer waits
      // in the collective (else this rank's next recv from it would be taken for a deadlock).
      for (wait_state& w : waits_)
        if (w.kind == wait_kind::collective) w = {};
      generation_.store(gen + 1, std::memory_order_release);
      cv_.notify_all();
      return;
    }
    // Spin first: the other ranks of a collective usually arrive within microseconds, and waking
    // from a condition variable costs tens of them. Then sleep, with the deadlock checks.
    lock.unlock();
    for (int i = 0; i < spin_rounds; ++i) {
      if (generation_.load(std::memory_order_acquire) != gen) return;
      if (failed_.load(std::memory_order_relaxed)) break;
      if (i % 8 == 7) std::this_thread::yield();
    }
    lock.lock();
    const auto released_now = [&] { return generation_.load(std::memory_order_acquire) != gen; };
    if (released_now()) return;
    const waiting in(*this, rank, {wait_kind::collective, -1, what});
    cv_.wait(lock, [&] { return released_now() || failed_ || left_ >= 0; });
    if (released_now()) return;
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

  /// The next message from `from` to `to`, once it is there. Throws `released` if a rank failed,
  /// and `tpx::error` if `from` returned without sending it or if waiting here completes a
  /// deadlock (no rank can send what another waits for).
  message collect(int from, int to) {
    std::unique_lock lock(mutex_);
    const waiting in(*this, to, {wait_kind::recv, from, "recv"});
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
  enum class wait_kind { running, collective, recv };
  struct wait_state {
    wait_kind kind = wait_kind::running;
    int from = -1;  ///< recv: the rank the message must come from
    std::string_view what;
  };

  /// A rank's wait, from before it blocks to when it wakes (the lock is held at both ends).
  /// Entering a wait that completes a deadlock releases the group and throws its sentence.
  class waiting {
   public:
    waiting(group& g, int rank, wait_state w) : g_(g), rank_(rank) {
      g_.waits_[static_cast<std::size_t>(rank)] = w;
      if (std::optional<std::string> why = g_.deadlock()) {
        g_.waits_[static_cast<std::size_t>(rank)] = {};
        g_.failed_ = true;
        g_.cv_.notify_all();
        throw error(*why);
      }
    }
    ~waiting() { g_.waits_[static_cast<std::size_t>(rank_)] = {}; }
    waiting(const waiting&) = delete;
    waiting& operator=(const waiting&) = delete;

   private:
    group& g_;
    int rank_;
  };

  /// A rank waiting in recv whose sender can never send: the chain of ranks each waiting for a
  /// message from the next (every box on it empty) comes back to itself, or reaches a rank in a
  /// collective — which needs every rank, the first of the chain included. The sentence names
  /// the chain.
  std::optional<std::string> deadlock() {
    for (int start = 0; start < size_; ++start) {
      std::vector<int> chain{start};
      for (int r = start; waits_[static_cast<std::size_t>(r)].kind == wait_kind::recv;) {
        const int from = waits_[static_cast<std::size_t>(r)].from;
        if (!box(from, r).empty() || has_left(from)) break;  // it will wake
        std::string story = fmt::format("rank {} waits in recv for a message from", chain[0]);
        for (std::size_t i = 1; i < chain.size(); ++i)
          story += fmt::format(" rank {}, which waits in recv for a message from", chain[i]);
        if (from == r)
          return fmt::format(
              "{} itself, and it sent none before; nothing can be received from the rank "
              "itself that it did not send first",
              story);
        const wait_state& w = waits_[static_cast<std::size_t>(from)];
        if (w.kind == wait_kind::collective)
          return fmt::format(
              "{} rank {}, which waits in {} for every rank: a deadlock (rank {} must send "
              "before its collective, or rank {} join it before its recv)",
              story, from, w.what, from, chain.back());
        if (w.kind != wait_kind::recv) break;  // running: it may still send
        if (std::find(chain.begin(), chain.end(), from) != chain.end())
          return fmt::format(
              "{} rank {}: a deadlock, each waits for the other to send first (one of them must "
              "send before it receives)",
              story, from);
        chain.push_back(from);
        r = from;
      }
    }
    return std::nullopt;
  }

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
  /// Polls a barrier spins (yielding every 8) before it sleeps on the condition variable.
  static constexpr int spin_rounds = 4096;
  std::atomic<std::uint64_t> generation_ = 0;
  std::atomic<bool> failed_ = false;
  int left_ = -1;
  std::vector<int> left_ranks_;
  std::vector<wait_state> waits_;
  std::vector<post> posts_;
  std::vector<std::deque<message>> mail_;
};

/// One rank's seat in a group: publishes its call, checks that every rank makes the same call
/// with the same element type, counts and sizes (each rank reaches the same verdict, so all of
/// them throw together), and counts bytes. The communicators built on a group (host memory here;
/// device memory in the cuda backend) derive from it and add the data movement. Each `enter_*`
/// checks its arguments, waits for every rank, and returns every rank's post; the caller moves
/// the data and then calls `finish`.
class member {
 public:
  member(group& g, int rank) : group_(&g), rank_(rank) {}

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return group_->size(); }
  const comm::stats& statistics() const noexcept { return stats_; }
  void reset_statistics() noexcept { stats_.reset(); }

 protected:
  template <class T>
  const std::vector<post>& enter_all_reduce(std::span<T> data, comm::reduce_op op) {
    post p = make_post<T>(comm::kind::all_reduce);
    p.out = data.data();
    p.out_count = ssize(data);
    p.op = op;
    const std::vector<post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].out_count == p.out_count, "buffer of {} elements",
            [&](int q) { return all[q].out_count; });
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].op == p.op, "reduction operator {}",
            [&](int q) { return comm::name(all[q].op); });
    return all;
  }

  template <class T>
  const std::vector<post>& enter_all_gather(std::span<const T> send, std::span<T> recv,
                                            std::span<const index_t> counts) {
    comm::detail::expect_gather_args(ssize(send), ssize(recv), counts, size(), rank_,
                                     "all_gather");
    post p = make_post<T>(comm::kind::all_gather);
    p.in = send.data();
    p.out = recv.data();
    p.counts = counts;
    const std::vector<post>& all = publish(p);
    agree_counts(all, "all_gather");
    return all;
  }

  template <class T>
  const std::vector<post>& enter_reduce_scatter(std::span<const T> send, std::span<T> recv,
                                                std::span<const index_t> counts,
                                                comm::reduce_op op) {
    comm::detail::expect_scatter_args(ssize(send), ssize(recv), counts, size(), rank_,
                                      "reduce_scatter");
    post p = make_post<T>(comm::kind::reduce_scatter);
    p.in = send.data();
    p.out = recv.data();
    p.counts = counts;
    p.op = op;
    const std::vector<post>& all = publish(p);
    agree_counts(all, "reduce_scatter");
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].op == op, "reduction operator {}",
            [&](int q) { return comm::name(all[q].op); });
    return all;
  }

  template <class T>
  const std::vector<post>& enter_broadcast(std::span<T> data, int root) {
    expect_rank(root, size(), "broadcast root");
    post p = make_post<T>(comm::kind::broadcast);
    p.out = data.data();
    p.out_count = ssize(data);
    p.root = root;
    const std::vector<post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].root == root, "root {}", [&](int q) { return all[q].root; });
    for (int r = 0; r < size(); ++r)
      agree(all, r, all[r].out_count == p.out_count, "buffer of {} elements",
            [&](int q) { return all[q].out_count; });
    return all;
  }

  template <class T>
  const std::vector<post>& enter_all_to_all_v(std::span<const T> send,
                                              std::span<const index_t> send_counts,
                                              std::span<T> recv,
                                              std::span<const index_t> recv_counts) {
    comm::detail::expect_all_to_all_args(ssize(send), send_counts, ssize(recv), recv_counts,
                                         size(), rank_);
    post p = make_post<T>(comm::kind::all_to_all);
    p.in = send.data();
    p.out = recv.data();
    p.counts = send_counts;
    p.counts2 = recv_counts;
    const std::vector<post>& all = publish(p);
    for (int r = 0; r < size(); ++r)
      for (int q = 0; q < size(); ++q) {
        const index_t sent = all[r].counts[static_cast<std::size_t>(q)];
        const index_t expected = all[q].counts2[static_cast<std::size_t>(r)];
        if (sent != expected)
          fail_together(fmt::format(
              "all_to_all_v: rank {} sends {} elements to rank {}, but rank {} expects {} from "
              "rank {}",
              r, sent, q, q, expected, r));
      }
    return all;
  }

  const std::vector<post>& enter_barrier() { return publish(make_post<char>(comm::kind::barrier)); }

  /// Where rank `to` finds its block in rank `from`'s all-to-all-v send buffer.
  static index_t send_offset(const post& from, int to) {
    index_t offset = 0;
    for (int s = 0; s < to; ++s) offset += from.counts[static_cast<std::size_t>(s)];
    return offset;
  }

  /// Bytes an all-to-all-v sends to other ranks (the nccl-tests convention).
  template <class T>
  index_t all_to_all_bytes(std::span<const index_t> send_counts) const {
    return comm::detail::all_to_all_elements(send_counts, rank_) * static_cast<index_t>(sizeof(T));
  }

  template <class S>
  static index_t ssize(const S& s) noexcept {
    return static_cast<index_t>(s.size());
  }
  static index_t sum(std::span<const index_t> c) { return comm::detail::total(c); }

  /// Waits for every rank (the data movement of this step is done on every rank).
  void sync(std::string_view what) { group_->barrier(rank_, what); }

  /// Waits for every rank, then counts the call.
  void finish(comm::kind k, index_t bytes) {
    sync(comm::name(k));
    stats_.record(k, bytes);
  }

  void record(comm::kind k, index_t bytes) noexcept { stats_.record(k, bytes); }
  group& shared() noexcept { return *group_; }

 private:
  template <class T>
  static post make_post(comm::kind k) {
    post p;
    p.kind = k;
    p.type = &type_key<T>;
    p.elem_size = sizeof(T);
    return p;
  }


  /// Posts this rank's call, waits for every rank, and checks that all ranks make the same call
  /// on the same element type.
  const std::vector<post>& publish(const post& p) {
    std::vector<post>& all = group_->posts();
    all[static_cast<std::size_t>(rank_)] = p;
    sync(comm::name(p.kind));
    for (int r = 0; r < size(); ++r) {
      if (all[r].kind != p.kind)
        fail_together(fmt::format(
            "rank {} calls {} while rank {} calls {}; every rank must make the same collective "
            "calls in the same order",
            rank_, comm::name(p.kind), r, comm::name(all[r].kind)));
      if (all[r].type != p.type)
        fail_together(fmt::format(
            "{}: rank {} passes {}-byte elements of one type while rank {} passes {}-byte "
            "elements of another; every rank must use the same element type",
            comm::name(p.kind), rank_, p.elem_size, r, all[r].elem_size));
    }
    return all;
  }

  /// Checks that rank r's post agrees with this rank's; `value(q)` describes rank q's post.
  template <class Value>
  void agree(const std::vector<post>& all, int r, bool same, std::string_view what, Value value) {
    if (same) return;
    fail_together(fmt::format(
        "{}: rank {} passes a {} while rank {} passes a {}; every rank must pass the same",
        comm::name(all[static_cast<std::size_t>(rank_)].kind), rank_,
        fmt::format(fmt::runtime(what), value(rank_)), r,
        fmt::format(fmt::runtime(what), value(r))));
  }

  void agree_counts(const std::vector<post>& all, std::string_view what) {
    for (int r = 0; r < size(); ++r)
      for (int q = 0; q < size(); ++q) {
        const index_t mine =
            all[static_cast<std::size_t>(rank_)].counts[static_cast<std::size_t>(q)];
        const index_t theirs = all[static_cast<std::size_t>(r)].counts[static_cast<std::size_t>(q)];
        if (mine != theirs)
          fail_together(fmt::format(
              "{}: rank {} passes counts[{}] = {} while rank {} passes counts[{}] = {}; every "
              "rank must pass the same counts",
              what, rank_, q, mine, r, q, theirs));
      }
  }

  /// Every rank sees the same posts, so every rank detects a mismatch. Each composes its message
  /// from the posts first, then waits at this barrier — past it a rank that catches and goes on
  /// may post its next call — and throws.
  [[noreturn]] void fail_together(std::string message) {
    sync("error check");
    throw error(message);
  }

  group* group_;
  int rank_;
  comm::stats stats_;
};

/// Runs `fn(comm)` on `tp` threads, one per rank, each with the communicator `make(group, rank)`
/// builds, and returns when all have returned. If any rank throws, the others are released and
/// the cause is rethrown here: the error of the lowest rank that failed because of its own work
/// (a `peer_error`, which reports another rank's failure, only when no rank raised anything
/// else). A `tpx::error` rethrown carries the other ranks' messages as its `notes()`.
template <class Make, class Fn>
void run_group(int tp, std::string_view who, Make make, Fn& fn) {
  expect_group_size(tp, who);
  group g(tp);
  struct failure {
    std::exception_ptr error;
    std::string message;
    bool peer = false;
  };
  std::vector<failure> failures(static_cast<std::size_t>(tp));
  const auto body = [&](int rank) {
    failure& f = failures[static_cast<std::size_t>(rank)];
    try {
      auto comm = make(g, rank);
      fn(comm);
      g.leave(rank);
      return;
    } catch (const released&) {
      return;  // another rank failed; it reports why
    } catch (const peer_error& e) {
      f = {std::current_exception(), e.what(), true};
    } catch (const std::exception& e) {
      f = {std::current_exception(), e.what()};
    } catch (...) {
      f = {std::current_exception(), "an exception not derived from std::exception"};
    }
    g.abort();
  };
  std::optional<std::string> no_thread;
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(tp - 1));
    for (int r = 1; r < tp && !no_thread; ++r) {
      try {
        threads.emplace_back(body, r);
      } catch (const std::system_error& e) {
        // The ranks already started wait for this one: release them, join them, say why.
        no_thread =
            fmt::format("{}: cannot start the thread of rank {} of {}: {}", who, r, tp, e.what());
        g.abort();
      }
    }
    if (!no_thread) body(0);
  }
  if (no_thread) throw error(*no_thread);
  const auto cause = [&]() -> const failure* {
    const failure* peer = nullptr;
    for (const failure& f : failures) {
      if (f.error && !f.peer) return &f;
      if (f.error && !peer) peer = &f;
    }
    return peer;
  }();
  if (!cause) return;
  try {
    std::rethrow_exception(cause->error);
  } catch (error& e) {
    for (int r = 0; r < tp; ++r) {
      const failure& f = failures[static_cast<std::size_t>(r)];
      if (f.error && &f != cause) e.add_note(fmt::format("rank {}: {}", r, f.message));
    }
    throw;
  }
}

}  // namespace detail

}  // namespace tpx::inline v0::host
