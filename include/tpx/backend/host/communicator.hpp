#pragma once
/// \file
/// Ranks as threads of one process: `tpx::host::run(tp, fn)` calls `fn(comm)` on `tp` threads,
/// each with its own `host::communicator` over one shared-memory group (`host/group.hpp`).
///
///   rank 0 ─┐ publish (pointer, count, kind) ─ barrier ─ check every rank agrees ─┐
///   rank 1 ─┤                                                                      ├─ copy /
///   …      ─┘                                                                      ┘  reduce ─
///   barrier
///
/// Reductions add in rank order on every rank, so all ranks end with bit-identical results.
/// Errors release every rank; `run` rethrows the cause (see `host/group.hpp`).

#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/backend/host/blas_threads.hpp"
#include "tpx/backend/host/member.hpp"
#include "tpx/backend/host/run_group.hpp"
#include "tpx/backend/host/simd.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::host {

/// One rank's handle on a shared-memory group. Models `comm::communicator`.
class communicator : public detail::member {
 public:
  communicator(detail::group& g, int rank) : member(g, rank) {}

  /// The ranks passing the same `color` (≥ 0) form one new communicator, ranked by `key`, then by
  /// their rank here (MPI_Comm_split's rule); collective over this communicator. The new group is
  /// kept alive by its members' communicators; a rank that fails or returns releases the ranks
  /// waiting in it, as in this group.
  communicator split(int color, int key) {
    auto [sub, sub_rank] = enter_split(color, key);
    return communicator(std::move(sub), sub_rank);
  }

  template <class T>
  void all_reduce(std::span<T> data, comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>,
                  "tpx::host::communicator: all_reduce needs arithmetic T");
    const std::vector<detail::post>& all = enter_all_reduce(data, op);
    // Phase 1: rank r reduces its own segment of every buffer into its own buffer (only rank r
    // touches segment r). Phase 2: every rank copies the other segments from their owners.
    const index_t n = ssize(data);
    const auto [lo, hi] = segment_of(n, rank());
    index_t i = lo;
    if (op == comm::reduce_op::sum)
      i = sum_vectors<T>([&](int q) { return static_cast<const T*>(all[q].out); }, lo, hi,
                         data.data());
    for (; i < hi; ++i) {
      T acc = static_cast<const T*>(all[0].out)[i];
      for (int q = 1; q < size(); ++q) acc = combine(acc, static_cast<const T*>(all[q].out)[i], op);
      data[static_cast<std::size_t>(i)] = acc;
    }
    sync("all_reduce");
    for (int q = 0; q < size(); ++q) {
      if (q == rank()) continue;
      const auto [b, e] = segment_of(n, q);
      copy(static_cast<const T*>(all[q].out) + b, data.data() + b, e - b);
    }
    finish(comm::kind::all_reduce, n * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts) {
    const std::vector<detail::post>& all = enter_all_gather(send, recv, counts);
    index_t offset = 0;
    for (int q = 0; q < size(); ++q) {
      const index_t n = counts[static_cast<std::size_t>(q)];
      copy(static_cast<const T*>(all[q].in), recv.data() + offset, n);
      offset += n;
    }
    finish(comm::kind::all_gather, offset * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts,
                      comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>,
                  "tpx::host::communicator: reduce_scatter needs arithmetic T");
    const std::vector<detail::post>& all = enter_reduce_scatter(send, recv, counts, op);
    index_t offset = 0;
    for (int q = 0; q < rank(); ++q) offset += counts[static_cast<std::size_t>(q)];
    index_t i = 0;
    if (op == comm::reduce_op::sum)
      i = sum_vectors<T>([&](int q) { return static_cast<const T*>(all[q].in) + offset; }, 0,
                         ssize(recv), recv.data());
    for (; i < ssize(recv); ++i) {
      T acc = static_cast<const T*>(all[0].in)[offset + i];
      for (int q = 1; q < size(); ++q)
        acc = combine(acc, static_cast<const T*>(all[q].in)[offset + i], op);
      recv[static_cast<std::size_t>(i)] = acc;
    }
    finish(comm::kind::reduce_scatter, ssize(send) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void broadcast(std::span<T> data, int root) {
    const std::vector<detail::post>& all = enter_broadcast(data, root);
    if (rank() != root) copy(static_cast<const T*>(all[root].out), data.data(), ssize(data));
    finish(comm::kind::broadcast, ssize(data) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts,
                    std::span<T> recv, std::span<const index_t> recv_counts) {
    const std::vector<detail::post>& all = enter_all_to_all_v(send, send_counts, recv, recv_counts);
    index_t out = 0;
    for (int q = 0; q < size(); ++q) {
      const index_t n = recv_counts[static_cast<std::size_t>(q)];
      copy(static_cast<const T*>(all[q].in) + send_offset(all[q], rank()), recv.data() + out, n);
      out += n;
    }
    finish(comm::kind::all_to_all, all_to_all_bytes<T>(send_counts));
  }

  template <class T>
  void send(std::span<const T> data, int peer) {
    expect_rank(peer, size(), "send peer");
    detail::message m{&detail::type_key<T>, ssize(data), {}};
    m.bytes.resize(data.size_bytes());
    if (!data.empty()) std::memcpy(m.bytes.data(), data.data(), data.size_bytes());
    shared().deliver(rank(), peer, std::move(m));
    record(comm::kind::send, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void recv(std::span<T> data, int peer) {
    expect_rank(peer, size(), "recv peer");
    detail::message m = shared().collect(peer, rank());
    expect(m.type == &detail::type_key<T>,
           "recv: rank {} expects elements of another type than rank {} sent", rank(), peer);
    expect(m.count == ssize(data),
           "recv: rank {} expects {} elements from rank {}, but the message holds {}", rank(),
           ssize(data), peer, m.count);
    if (!data.empty()) std::memcpy(data.data(), m.bytes.data(), data.size_bytes());
    record(comm::kind::recv, static_cast<index_t>(data.size_bytes()));
  }

  void barrier() {
    enter_barrier();
    finish(comm::kind::barrier, 0);
  }

 private:
  communicator(std::shared_ptr<detail::group> g, int rank) : member(std::move(g), rank) {}

  /// out[i] = Σ_q src(q)[i] for i in [lo, hi), ranks in order (each element sums exactly as the
  /// scalar loop does, so every rank's result stays bit-identical), 16 bytes of floats or doubles
  /// at a time (host/simd.hpp); returns where it stopped, for the scalar loop to
  /// finish. Other element types: nothing done.
  template <class T, class Src>
  index_t sum_vectors(Src src, index_t lo, index_t hi, T* out) const {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      using vec = simd::lanes_of<T>;
      constexpr index_t width = simd::width<T>;
      index_t i = lo;
      for (; i + width <= hi; i += width) {
        vec acc, x;
        std::memcpy(&acc, src(0) + i, sizeof acc);
        for (int q = 1; q < size(); ++q) {
          std::memcpy(&x, src(q) + i, sizeof x);
          acc += x;
        }
        std::memcpy(out + i, &acc, sizeof acc);
      }
      return i;
    } else {
      (void)src, (void)hi, (void)out;
      return lo;
    }
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
};

static_assert(comm::communicator<communicator>);
static_assert(comm::splittable<communicator>);

/// Runs `fn(communicator&)` on `tp` threads, one per rank, and returns when all have returned.
/// If any rank throws, the others are released and the cause is rethrown here: the lowest rank's
/// own error, the other ranks' messages as its `notes()` (see `detail::run_group`). With several
/// ranks OpenBLAS runs one thread per rank meanwhile, unless the environment names a count
/// (`host/blas_threads.hpp`). `host::team` keeps ranks alive between calls.
template <class Fn>
requires std::invocable<Fn&, communicator&>
void run(int tp, Fn&& fn) {
  const blas_threads_scope blas(blas_threads_for(tp));  // one OpenBLAS thread per rank
  detail::run_group(
      tp, "host::run", [](detail::group& g, int rank) { return communicator(g, rank); }, fn);
}

}  // namespace tpx::inline v0::host
