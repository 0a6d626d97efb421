#pragma once
/// \file
/// A group of ranks as threads of one process: the rendezvous every rank waits in and the
/// mailboxes of send/recv. Each rank's seat, with the checks that every rank makes the same call,
/// is `detail::member` (host/member.hpp); `detail::run_group` (host/run_group.hpp) runs one
/// function per rank on its own thread. `host::communicator` moves data in host memory
/// over it; `cuda::local_communicator` moves data in device memory over the same group.
///
/// `member::split` makes sub-groups (the ranks of one color): a sub-group is a group of its own,
/// kept by its members' communicators, and its parent passes on a failure, a rank's return and a
/// rank's release to it. A rank waiting in a sub-group is released once the group it came from
/// has failed and a member it waits for is gone (released or failed itself) — not before: until
/// then its members may be moving each other's data, and unwinding would free a buffer a peer
/// still reads.
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
    cv_.wait(lock, [&] { return released_now() || stopped() || left_ >= 0; });
    if (released_now()) return;
    if (stopped()) throw released{};
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
    cv_.wait(lock, [&] { return !box(from, to).empty() || stopped() || has_left(from); });
    if (!box(from, to).empty()) {
      message m = std::move(box(from, to).front());
      box(from, to).pop_front();
      return m;
    }
    if (stopped()) throw released{};
    fail(
        "rank {} waits in recv for a message from rank {}, which has returned from its function "
        "without sending it",
        to, from);
  }

  /// A rank failed: release everyone in this group; the sub-groups split from it release their
  /// waiters once a member they wait for is gone (`gone`).
  void abort() {
    {
      std::lock_guard lock(mutex_);
      failed_ = true;
      cv_.notify_all();
    }
    for (const std::shared_ptr<group>& g : live_children()) g->upstream_abort();
  }

  /// A rank is gone for good: released from a wait, or failed itself. Its sub-groups count it.
  void gone(int rank) {
    {
      std::lock_guard lock(mutex_);
      ++gone_;
      cv_.notify_all();
    }
    for (const auto& [g, sub_rank] : children_holding(rank)) g->gone(sub_rank);
  }

  /// A rank returned from its function (and so from every sub-group it is in).
  void leave(int rank) {
    {
      std::lock_guard lock(mutex_);
      if (left_ < 0) left_ = rank;
      left_ranks_.push_back(rank);
      cv_.notify_all();
    }
    for (const auto& [g, sub_rank] : children_holding(rank)) g->leave(sub_rank);
  }

  /// Every rank has returned from a `host::team` call and none waits: forgets who returned, here
  /// and in the live sub-groups, so that the next call starts as the first one did. The team
  /// calls it between calls only.
  void rejoin() {
    {
      std::lock_guard lock(mutex_);
      left_ = -1;
      left_ranks_.clear();
    }
    for (const std::shared_ptr<group>& g : live_children()) g->rejoin();
  }

  /// The group this one was split from (or one above it) failed.
  void upstream_abort() {
    {
      std::lock_guard lock(mutex_);
      upstream_failed_ = true;
      cv_.notify_all();
    }
    for (const std::shared_ptr<group>& g : live_children()) g->upstream_abort();
  }

  /// A sub-group of the ranks `members` (their ranks here, in their order there), made by rank
  /// `slot` during a split; `made(slot)` hands it to the others.
  void adopt(int slot, std::shared_ptr<group> sub, std::vector<int> members) {
    std::lock_guard lock(mutex_);
    if (failed_ || upstream_failed_) sub->upstream_failed_ = true;
    children_.push_back({sub, std::move(members)});
    made_.resize(static_cast<std::size_t>(size_));
    made_[static_cast<std::size_t>(slot)] = std::move(sub);
  }
  std::shared_ptr<group> made(int slot) {
    std::lock_guard lock(mutex_);
    return made_.at(static_cast<std::size_t>(slot));
  }

  /// What a communicator over device memory shares among a sub-group's ranks (its streams and
  /// events), set by the rank that makes the sub-group before the others see it.
  void attach(std::shared_ptr<void> a) noexcept { attachment_ = std::move(a); }
  const std::shared_ptr<void>& attachment() const noexcept { return attachment_; }

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

  /// Waiters give up: a member failed, or the group above failed and a member is gone.
  bool stopped() const { return failed_ || (upstream_failed_ && gone_ > 0); }

  std::vector<std::shared_ptr<group>> live_children() {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<group>> subs;
    for (const child& c : children_)
      if (std::shared_ptr<group> g = c.sub.lock()) subs.push_back(std::move(g));
    return subs;
  }
  /// The live sub-groups `rank` is a member of, with its rank in each.
  std::vector<std::pair<std::shared_ptr<group>, int>> children_holding(int rank) {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<std::shared_ptr<group>, int>> subs;
    for (const child& c : children_)
      if (std::shared_ptr<group> g = c.sub.lock())
        for (std::size_t i = 0; i < c.members.size(); ++i)
          if (c.members[i] == rank) subs.emplace_back(g, static_cast<int>(i));
    return subs;
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
  bool upstream_failed_ = false;  ///< the group this was split from failed (under the mutex)
  int gone_ = 0;                  ///< members released or failed (under the mutex)
  int left_ = -1;
  std::vector<int> left_ranks_;
  std::vector<wait_state> waits_;
  std::vector<post> posts_;
  std::vector<std::deque<message>> mail_;
  struct child {
    std::weak_ptr<group> sub;
    std::vector<int> members;
  };
  std::vector<child> children_;
  std::vector<std::shared_ptr<group>> made_;  ///< the sub-group each split's leader made
  std::shared_ptr<void> attachment_;
};

}  // namespace detail

}  // namespace tpx::inline v0::host
