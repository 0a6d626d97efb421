#pragma once
/// \file
/// Ranks as processes: `mpi::communicator` is one rank of an `MPI_Comm`, modelling
/// `comm::communicator` over host memory with the host group's byte counters (nccl-tests sizes).
///
///   process 0 ─┐
///   process 1 ─┼─ MPI_Comm (MPI_COMM_WORLD, one the caller made, or split) ─ MPI's
///   …         ─┘  collectives move the data; tpx checks each rank's own arguments first
///
/// - `communicator::world()` borrows `MPI_COMM_WORLD`; `communicator(comm)` borrows the caller's;
///   `split(color, key)` makes a sub-group (`MPI_Comm_split`) this object owns and frees.
/// - Every call's error is a `tpx::error` naming the call, the place and MPI's error string: the
///   communicator's error handler is set to `MPI_ERRORS_RETURN`.
/// - A floating-point sum all-reduce runs as a reduce-scatter then an all-gather, so every element
///   is added up on one rank and copied to the others: all ranks end with bit-identical results,
///   as in the host group (a rank that branches on a reduced value never diverges from another).
/// - Each rank checks its own arguments (sizes against counts) before calling MPI; that the ranks
///   agree on counts is the caller's contract, as in MPI and NCCL (checking it would cost a
///   collective per call). `mpi::run` turns a rank's error into the end of every process.
/// - `send` never waits for its receiver (the message is copied and sent in the background, as
///   the host group's mailboxes do); `recv` checks the message's element type and count.

// MPI's C API only: the deprecated C++ bindings (Open MPI's mpicxx.h) warn under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <climits>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/comm/communicator.hpp"
#include "tpx/comm/launch.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::mpi {

/// Throws unless `code` is MPI_SUCCESS; the message carries the call, `file`:`line` and MPI's
/// error string. (The place is passed, not a std::source_location, which clang 14 with
/// libstdc++ 12 lacks.)
inline void check(int code, std::string_view call, std::string_view file, int line) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  fail("MPI: {} failed at {}:{}: {}", call, tpx::detail::file_name(file), line,
       length > 0 ? std::string_view(text, static_cast<std::size_t>(length))
                  : std::string_view("(no error string)"));
}

/// Checks an MPI call: `TPX_MPI(MPI_Barrier(comm));`
#define TPX_MPI(call) ::tpx::mpi::check((call), #call, __FILE__, __LINE__)

/// The MPI data type of an element type: float, double, the fixed-width integers, and bytes
/// (`std::byte`, `unsigned char`, `char`: moved, never reduced).
template <class T>
MPI_Datatype datatype() {
  if constexpr (std::is_same_v<T, float>)
    return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::uint32_t>)
    return MPI_UINT32_T;
  else if constexpr (std::is_same_v<T, std::uint64_t>)
    return MPI_UINT64_T;
  else if constexpr (std::is_same_v<T, std::byte> || std::is_same_v<T, unsigned char> ||
                     std::is_same_v<T, char>)
    return MPI_BYTE;
  else
    static_assert(std::is_same_v<T, float>,
                  "tpx::mpi::communicator: element types are float, double, the fixed-width "
                  "integers and bytes");
}

/// The tag a point-to-point message of element type T carries, so `recv` can check the type.
template <class T>
constexpr int type_tag() {
  if constexpr (std::is_same_v<T, float>) return 1;
  else if constexpr (std::is_same_v<T, double>) return 2;
  else if constexpr (std::is_same_v<T, std::int32_t>) return 3;
  else if constexpr (std::is_same_v<T, std::int64_t>) return 4;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return 5;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return 6;
  else return 7;  // bytes
}

/// True when an MPI launcher (Open MPI's mpirun, MPICH's mpiexec, srun with PMI) started this
/// process: its environment names the process's rank (`comm::launch_environment`).
inline bool launched() { return comm::launch_environment(/*mpi_only=*/true).has_value(); }

/// MPI for the life of this object: `MPI_Init_thread` (funneled: only the thread that made it
/// calls MPI) unless MPI is already initialised, and `MPI_Finalize` at the end only if this
/// object initialised it.
class environment {
 public:
  environment(int& argc, char**& argv) {
    int ready = 0;
    TPX_MPI(MPI_Initialized(&ready));
    if (ready) return;
    int provided = 0;
    TPX_MPI(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided));
    owned_ = true;
    // MPI_COMM_WORLD's errors become tpx::error from here on, including MPI_Comm_split's.
    TPX_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  }
  environment() {
    int argc = 0;
    char** argv = nullptr;
    *this = environment(argc, argv);
  }
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;
  environment& operator=(environment&& o) noexcept {
    owned_ = std::exchange(o.owned_, false);
    return *this;
  }
  ~environment() {
    if (!owned_) return;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }

 private:
  bool owned_ = false;
};

/// One rank of an MPI communicator. Models `comm::communicator`.
class communicator {
 public:
  /// Borrows `comm` (not freed with this object) and sets its error handler to MPI_ERRORS_RETURN.
  explicit communicator(MPI_Comm comm) : comm_(comm) { init(); }
  /// Every process of the job.
  static communicator world() { return communicator(MPI_COMM_WORLD); }

  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;
  communicator(communicator&& o) noexcept
      : comm_(std::exchange(o.comm_, MPI_COMM_NULL)),
        owned_(std::exchange(o.owned_, false)),
        rank_(o.rank_),
        size_(o.size_),
        stats_(o.stats_),
        scratch_(std::move(o.scratch_)),
        pending_(std::move(o.pending_)) {}
  communicator& operator=(communicator&&) = delete;
  ~communicator() {
    complete_sends();
    if (owned_ && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  /// The ranks passing the same `color` form one new communicator, ordered by `key` (then by this
  /// rank); collective over this communicator. The new one is owned: freed with the object.
  communicator split(int color, int key) {
    expect(color >= 0, "mpi split: rank {} passed the color {}; colors are ≥ 0", rank_, color);
    MPI_Comm sub = MPI_COMM_NULL;
    TPX_MPI(MPI_Comm_split(comm_, color, key, &sub));
    communicator out(sub);
    out.owned_ = true;
    return out;
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  MPI_Comm handle() const noexcept { return comm_; }
  const comm::stats& statistics() const noexcept { return stats_; }
  void reset_statistics() noexcept { stats_.reset(); }

  template <class T>
  void all_reduce(std::span<T> data, comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>, "tpx::mpi::communicator: all_reduce needs arithmetic T");
    const index_t n = ssize(data);
    if (std::is_floating_point_v<T> && op == comm::reduce_op::sum && size_ > 1 && n >= size_) {
      // Each rank adds up its balanced segment, then the segments are gathered: one sum per
      // element, copied everywhere (bit-identical on every rank).
      std::vector<index_t> counts(static_cast<std::size_t>(size_));
      for (int q = 0; q < size_; ++q)
        counts[static_cast<std::size_t>(q)] = n / size_ + (q < n % size_ ? 1 : 0);
      const std::vector<int> c = ints(counts, "all_reduce"), at = offsets(counts, "all_reduce");
      T* mine = scratch<T>(counts[static_cast<std::size_t>(rank_)]);
      TPX_MPI(MPI_Reduce_scatter(data.data(), mine, c.data(), datatype<T>(), MPI_SUM, comm_));
      TPX_MPI(MPI_Allgatherv(mine, c[static_cast<std::size_t>(rank_)], datatype<T>(), data.data(),
                             c.data(), at.data(), datatype<T>(), comm_));
    } else {
      for (index_t done = 0; done < n;) {  // MPI counts are int: chunks of at most INT_MAX
        const int k = static_cast<int>(std::min<index_t>(n - done, INT_MAX));
        TPX_MPI(MPI_Allreduce(MPI_IN_PLACE, data.data() + done, k, datatype<T>(), mpi_op(op),
                              comm_));
        done += k;
      }
    }
    stats_.record(comm::kind::all_reduce, n * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts) {
    comm::detail::expect_gather_args(ssize(send), ssize(recv), counts, size_, rank_, "all_gather");
    const std::vector<int> c = ints(counts, "all_gather"), at = offsets(counts, "all_gather");
    TPX_MPI(MPI_Allgatherv(send.data(), c[static_cast<std::size_t>(rank_)], datatype<T>(),
                           recv.data(), c.data(), at.data(), datatype<T>(), comm_));
    stats_.record(comm::kind::all_gather, ssize(recv) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts,
                      comm::reduce_op op = comm::reduce_op::sum) {
    static_assert(std::is_arithmetic_v<T>,
                  "tpx::mpi::communicator: reduce_scatter needs arithmetic T");
    comm::detail::expect_scatter_args(ssize(send), ssize(recv), counts, size_, rank_,
                                      "reduce_scatter");
    const std::vector<int> c = ints(counts, "reduce_scatter");
    (void)offsets(counts, "reduce_scatter");  // the total must fit MPI's int too
    TPX_MPI(MPI_Reduce_scatter(send.data(), recv.data(), c.data(), datatype<T>(), mpi_op(op),
                               comm_));
    stats_.record(comm::kind::reduce_scatter, ssize(send) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void broadcast(std::span<T> data, int root) {
    expect_rank(root, size_, "mpi broadcast root");
    const index_t n = ssize(data);
    for (index_t done = 0; done < n;) {
      const int k = static_cast<int>(std::min<index_t>(n - done, INT_MAX));
      TPX_MPI(MPI_Bcast(data.data() + done, k, datatype<T>(), root, comm_));
      done += k;
    }
    stats_.record(comm::kind::broadcast, n * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts,
                    std::span<T> recv, std::span<const index_t> recv_counts) {
    comm::detail::expect_all_to_all_args(ssize(send), send_counts, ssize(recv), recv_counts, size_,
                                         rank_);
    const std::vector<int> sc = ints(send_counts, "all_to_all_v"),
                           so = offsets(send_counts, "all_to_all_v"),
                           rc = ints(recv_counts, "all_to_all_v"),
                           ro = offsets(recv_counts, "all_to_all_v");
    TPX_MPI(MPI_Alltoallv(send.data(), sc.data(), so.data(), datatype<T>(), recv.data(), rc.data(),
                          ro.data(), datatype<T>(), comm_));
    stats_.record(comm::kind::all_to_all,
                  comm::detail::all_to_all_elements(send_counts, rank_) *
                      static_cast<index_t>(sizeof(T)));
  }

  /// Sends a copy of `data` to `peer` and returns without waiting for the receiver.
  template <class T>
  void send(std::span<const T> data, int peer) {
    expect_rank(peer, size_, "mpi send peer");
    expect(data.size_bytes() <= static_cast<std::size_t>(INT_MAX),
           "mpi send: rank {} sends {} bytes to rank {}; one message holds at most {} bytes",
           rank_, data.size_bytes(), peer, INT_MAX);
    complete_sends(false);
    outgoing& m = pending_.emplace_back();
    m.bytes.resize(data.size_bytes());
    if (!data.empty()) std::memcpy(m.bytes.data(), data.data(), data.size_bytes());
    TPX_MPI(MPI_Isend(m.bytes.data(), static_cast<int>(m.bytes.size()), MPI_BYTE, peer,
                      type_tag<T>(), comm_, &m.request));
    stats_.record(comm::kind::send, static_cast<index_t>(data.size_bytes()));
  }

  /// Receives the next message from `peer`; its element type and count must be `data`'s.
  template <class T>
  void recv(std::span<T> data, int peer) {
    expect_rank(peer, size_, "mpi recv peer");
    MPI_Status status;
    TPX_MPI(MPI_Probe(peer, MPI_ANY_TAG, comm_, &status));
    expect(status.MPI_TAG == type_tag<T>(),
           "recv: rank {} expects elements of another type than rank {} sent", rank_, peer);
    int bytes = 0;
    TPX_MPI(MPI_Get_count(&status, MPI_BYTE, &bytes));
    expect(static_cast<std::size_t>(bytes) == data.size_bytes(),
           "recv: rank {} expects {} elements from rank {}, but the message holds {}", rank_,
           data.size(), peer, static_cast<std::size_t>(bytes) / sizeof(T));
    TPX_MPI(MPI_Recv(data.data(), bytes, MPI_BYTE, peer, status.MPI_TAG, comm_,
                     MPI_STATUS_IGNORE));
    stats_.record(comm::kind::recv, static_cast<index_t>(data.size_bytes()));
  }

  void barrier() {
    TPX_MPI(MPI_Barrier(comm_));
    stats_.record(comm::kind::barrier, 0);
  }

 private:
  struct outgoing {
    std::vector<std::byte> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  void init() {
    expect(comm_ != MPI_COMM_NULL, "mpi::communicator: the MPI_Comm is MPI_COMM_NULL");
    TPX_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    TPX_MPI(MPI_Comm_rank(comm_, &rank_));
    TPX_MPI(MPI_Comm_size(comm_, &size_));
    expect_group_size(size_, "mpi::communicator");
  }

  /// Frees the buffers of finished sends; with `wait`, waits for every send first.
  void complete_sends(bool wait = true) noexcept {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // MPI has already finished every send
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 1;  // a failed wait or test leaves nothing to wait for
      if (wait)
        MPI_Wait(&it->request, MPI_STATUS_IGNORE);
      else if (MPI_Test(&it->request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        done = 1;
      it = done ? pending_.erase(it) : std::next(it);
    }
  }

  static MPI_Op mpi_op(comm::reduce_op op) noexcept {
    return op == comm::reduce_op::sum ? MPI_SUM : MPI_MAX;
  }

  /// Per-rank counts as MPI's ints, or a sentence when one passes INT_MAX.
  std::vector<int> ints(std::span<const index_t> counts, std::string_view what) const {
    std::vector<int> out;
    out.reserve(counts.size());
    for (std::size_t q = 0; q < counts.size(); ++q) {
      expect(counts[q] <= INT_MAX,
             "mpi {}: rank {} passed {} elements for rank {}; MPI counts at most {} per rank",
             what, rank_, counts[q], q, INT_MAX);
      out.push_back(static_cast<int>(counts[q]));
    }
    return out;
  }

  /// The displacement of each rank's block (Σ of the counts before it), as MPI's ints.
  std::vector<int> offsets(std::span<const index_t> counts, std::string_view what) const {
    std::vector<int> out;
    out.reserve(counts.size());
    index_t at = 0;
    for (const index_t n : counts) {
      out.push_back(static_cast<int>(at));
      at += n;
    }
    expect(at <= INT_MAX,
           "mpi {}: rank {} passed counts adding up to {} elements; MPI addresses at most {}",
           what, rank_, at, INT_MAX);
    return out;
  }

  template <class T>
  T* scratch(index_t n) {
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    if (scratch_.size() < bytes) scratch_.resize(bytes);
    return reinterpret_cast<T*>(scratch_.data());
  }

  template <class S>
  static index_t ssize(const S& s) noexcept {
    return static_cast<index_t>(s.size());
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
  comm::stats stats_;
  std::vector<std::byte> scratch_;  ///< the all-reduce's segment; grows, never shrinks
  std::list<outgoing> pending_;     ///< sends MPI may still read
};

static_assert(comm::communicator<communicator>);
static_assert(comm::splittable<communicator>);

/// Runs `fn()`, a step that runs no collective (reading a config, resolving a plan), on every
/// rank and has the ranks agree on its outcome: when it threw on any rank, it throws on every rank
/// the lowest failing rank's message — a `tpx::error` on that rank and on rank 0, a
/// `tpx::peer_error` on the others, so a program that prints errors on rank 0 and leaves peer
/// errors unprinted prints the cause once, and every process ends.
template <class Fn>
requires std::invocable<Fn&>
void agreed(communicator& comm, Fn&& fn) {
  std::string message;
  std::int64_t failing = 0;  // size − rank of a failing rank: the max is the lowest rank
  try {
    fn();
  } catch (const std::exception& e) {
    message = e.what();
    failing = comm.size() - comm.rank();
  }
  comm.all_reduce(std::span(&failing, 1), comm::reduce_op::max);
  if (failing == 0) return;
  const int cause = comm.size() - static_cast<int>(failing);
  std::int64_t length = static_cast<std::int64_t>(message.size());
  comm.broadcast(std::span(&length, 1), cause);
  message.resize(static_cast<std::size_t>(length));
  comm.broadcast(std::span(message.data(), message.size()), cause);
  if (comm.rank() == cause || comm.rank() == 0) throw error(message);
  throw peer_error(message);
}

/// Runs `fn(comm)` as this process's rank. When it throws and the group has more than one
/// process, the error is printed to stderr as "`tool`: rank r of n: message" and every process of
/// the job ends with exit status 2 (`MPI_Abort`): the other ranks may be waiting in a collective
/// for this one, and nothing else can release them. On one process the error is rethrown.
template <class Fn>
requires std::invocable<Fn&, communicator&>
void run(communicator& comm, Fn&& fn, std::string_view tool = "tpx") {
  try {
    fn(comm);
  } catch (const std::exception& e) {
    if (comm.size() == 1) throw;
    std::string why = e.what();
    for (char& ch : why)
      if (ch == '\n') ch = ' ';
    std::fflush(stdout);
    std::fprintf(stderr, "%.*s: rank %d of %d: %s\n", static_cast<int>(tool.size()), tool.data(),
                 comm.rank(), comm.size(), why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm.handle(), 2);
    std::_Exit(2);  // MPI_Abort does not return; if it did, this process still ends
  }
}

}  // namespace tpx::inline v0::mpi
