#pragma once
/// \file
/// `detail::member`: one rank's seat in a host group (`host/group.hpp`) — publishes its call,
/// checks that every rank makes the same call with the same arguments, counts bytes. The
/// communicators built on a group derive from it and add the data movement.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/backend/host/group.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::host {

namespace detail {

/// One rank's seat in a group: publishes its call, checks that every rank makes the same call
/// with the same element type, counts and sizes (each rank reaches the same verdict, so all of
/// them throw together), and counts bytes. The communicators built on a group (host memory here;
/// device memory in the cuda backend) derive from it and add the data movement. Each `enter_*`
/// checks its arguments, waits for every rank, and returns every rank's post; the caller moves
/// the data and then calls `finish`.
class member {
 public:
  member(group& g, int rank) : group_(&g), rank_(rank) {}
  /// A seat in a sub-group this member keeps alive.
  member(std::shared_ptr<group> g, int rank) : group_(g.get()), rank_(rank), kept_(std::move(g)) {}

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
    comm::detail::expect_gather_args(ssize(send), ssize(recv), counts, size(), rank_, "all_gather");
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
    comm::detail::expect_all_to_all_args(ssize(send), send_counts, ssize(recv), recv_counts, size(),
                                         rank_);
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

  /// split(color, key) as MPI_Comm_split defines it: the ranks passing the same color (≥ 0) form
  /// a new group, ranked by key, then by their rank here. Collective; returns the new group and
  /// this rank's rank in it. `attach(members)`, when given, is called by the rank that makes the
  /// new group, with its members' ranks here in their new order: what it returns is the group's
  /// `attachment()` on every member.
  using attacher = std::function<std::shared_ptr<void>(std::span<const int> members)>;
  std::pair<std::shared_ptr<group>, int> enter_split(int color, int key,
                                                     const attacher& attach = {}) {
    expect(color >= 0, "host split: rank {} passed the color {}; colors are ≥ 0", rank_, color);
    post p = make_post<split_call>(comm::kind::barrier);
    p.root = color;
    p.in_count = key;
    const std::vector<post>& all = publish(p);
    std::vector<int> members;
    for (int r = 0; r < size(); ++r)
      if (all[static_cast<std::size_t>(r)].root == color) members.push_back(r);
    std::stable_sort(members.begin(), members.end(), [&](int a, int b) {
      return all[static_cast<std::size_t>(a)].in_count < all[static_cast<std::size_t>(b)].in_count;
    });
    const int leader = members.front();
    const int mine =
        static_cast<int>(std::find(members.begin(), members.end(), rank_) - members.begin());
    if (rank_ == leader) {
      auto sub = std::make_shared<group>(static_cast<int>(members.size()));
      if (attach) sub->attach(attach(members));
      group_->adopt(leader, std::move(sub), members);
    }
    sync("split");  // the leader's slot is rewritten only after every rank's next call
    return {group_->made(leader), mine};
  }

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
  struct split_call {};  ///< the element type a split posts: a barrier that is not barrier()
  static std::string_view call_name(const post& p) {
    return p.type == &type_key<split_call> ? "split" : comm::name(p.kind);
  }

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
      if (all[r].kind != p.kind || (all[r].type != p.type && p.kind == comm::kind::barrier))
        fail_together(fmt::format(
            "rank {} calls {} while rank {} calls {}; every rank must make the same collective "
            "calls in the same order",
            rank_, call_name(p), r, call_name(all[r])));
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
  std::shared_ptr<group> kept_;  ///< a sub-group's, which its members keep alive
};

}  // namespace detail

}  // namespace tpx::inline v0::host
