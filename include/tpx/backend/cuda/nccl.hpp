#pragma once
/// \file
/// The NCCL communicator: one rank of an NCCL communicator and the stream its collectives go on.
/// Models `comm::communicator` for float, double, __half and __nv_bfloat16 buffers in device
/// memory, with the host communicator's byte counters (nccl-tests sizes).
///
/// - `nccl_communicator::wrap(comm, stream)` borrows a `ncclComm_t` and a stream the caller owns
///   (an engine that already has its communicators);
/// - `nccl_communicator(id, nranks, rank, stream)` creates one with `ncclCommInitRank`;
/// - `init_all(devices, streams)` makes one per device for a process driving several GPUs
///   (`ncclCommInitAll`);
/// - `unique_id_file(path, rank)` shares the `ncclUniqueId` between processes through a file
///   every rank can read: rank 0 writes it (to a temporary name, then renamed, so no rank ever
///   reads half of it), the others wait for it to appear; `unique_id_over(comm)` broadcasts it
///   over any tpx communicator that spans the same processes (`mpi::communicator::world()`).
/// - `process_rank::bootstrap(…)`: one process per GPU of a launched job (torchrun, mpirun, srun):
///   rank and size from the launcher's environment (`comm::launch_environment`), the device
///   chosen by local rank, the stream made on it, and the id shared by either means.
///
/// Equal per-rank counts use ncclAllGather, ncclReduceScatter and ncclAlltoAll; unequal ones run
/// as one NCCL group of ncclBroadcast (all-gather), ncclReduce (reduce-scatter) or
/// ncclSend/ncclRecv (all-to-all-v) calls. NCCL does not check that ranks agree on counts; this
/// communicator checks each rank's own arguments (sizes against counts) and leaves cross-rank
/// agreement to the caller, as NCCL does. Nothing here synchronises the host except `barrier()`.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <source_location>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/backend/cuda/check.hpp"
#include "tpx/backend/cuda/memory.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/comm/launch.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::cuda {

/// Throws unless `status` is ncclSuccess; the message carries ncclGetLastError of `comm`.
inline void check(ncclResult_t status, std::string_view call, ncclComm_t comm = nullptr,
                  std::source_location at = std::source_location::current()) {
  if (status == ncclSuccess) return;
  const char* last = ncclGetLastError(comm);
  fail("NCCL: {} failed at {}:{}: {}{}{}", call, tpx::detail::file_name(at.file_name()), at.line(),
       ncclGetErrorString(status), last != nullptr && *last != '\0' ? "; last error: " : "",
       last != nullptr ? last : "");
}

/// Checks an NCCL call on communicator `comm`: `TPX_NCCL(ncclAllReduce(...), comm_);`
#define TPX_NCCL(call, comm) ::tpx::cuda::check((call), #call, (comm))

/// The NCCL data type of an element type.
template <class T>
constexpr ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>)
    return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>)
    return ncclFloat64;
  else if constexpr (std::is_same_v<T, __half>)
    return ncclFloat16;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return ncclBfloat16;
  else
    static_assert(std::is_same_v<T, float>,
                  "tpx::cuda::nccl_communicator: element types are float, double, __half and "
                  "__nv_bfloat16");
}

class nccl_communicator {
 public:
  /// Borrows `comm` and `stream`; neither is destroyed with this object.
  static nccl_communicator wrap(ncclComm_t comm, cudaStream_t stream) {
    return nccl_communicator(comm, stream, false);
  }

  /// Rank `rank` of `nranks`, created from the id rank 0 made (`ncclGetUniqueId`).
  nccl_communicator(const ncclUniqueId& id, int nranks, int rank, cudaStream_t stream)
      : stream_(stream), owned_(true) {
    expect_rank(rank, nranks, "nccl_communicator");
    TPX_NCCL(ncclCommInitRank(&comm_, nranks, id, rank), nullptr);
    init();
  }

  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;
  nccl_communicator(nccl_communicator&& o) noexcept
      : comm_(std::exchange(o.comm_, nullptr)),
        stream_(o.stream_),
        owned_(std::exchange(o.owned_, false)),
        rank_(o.rank_),
        size_(o.size_),
        token_(std::move(o.token_)),
        stats_(o.stats_) {}
  nccl_communicator& operator=(nccl_communicator&&) = delete;
  ~nccl_communicator() {
    if (owned_ && comm_ != nullptr) {
      ncclCommFinalize(comm_);
      ncclCommDestroy(comm_);
    }
  }

  /// The ranks passing the same `color` (≥ 0) form one new communicator, ranked by `key`, then by
  /// their rank here (`ncclCommSplit`); collective over this communicator. The new one uses the
  /// same stream and is owned: finalized and destroyed with the object.
  nccl_communicator split(int color, int key) {
    expect(color >= 0, "nccl split: rank {} passed the color {}; colors are ≥ 0", rank_, color);
    ncclComm_t sub = nullptr;
    TPX_NCCL(ncclCommSplit(comm_, color, key, &sub, nullptr), comm_);
    return nccl_communicator(sub, stream_, true);
  }

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  ncclComm_t handle() const noexcept { return comm_; }
  cudaStream_t stream() const noexcept { return stream_; }
  const comm::stats& statistics() const noexcept { return stats_; }
  void reset_statistics() noexcept { stats_.reset(); }

  template <class T>
  void all_reduce(std::span<T> data, comm::reduce_op op = comm::reduce_op::sum) {
    if (!data.empty())
      TPX_NCCL(ncclAllReduce(data.data(), data.data(), data.size(), nccl_type<T>(), nccl_op(op),
                             comm_, stream_),
               comm_);
    stats_.record(comm::kind::all_reduce, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts) {
    check_counts(counts, "all_gather");
    expect(ssize(send) == counts[own()] && ssize(recv) == total(counts),
           "nccl all_gather: rank {} passed {} elements to send and {} to receive, but counts[{}] "
           "= {} and the counts add up to {}",
           rank_, send.size(), recv.size(), rank_, counts[own()], total(counts));
    if (equal(counts)) {
      if (!send.empty())
        TPX_NCCL(
            ncclAllGather(send.data(), recv.data(), send.size(), nccl_type<T>(), comm_, stream_),
            comm_);
    } else {
      for_each_block(counts, [&](int r, index_t offset, std::size_t n) {
        TPX_NCCL(
            ncclBroadcast(send.data(), recv.data() + offset, n, nccl_type<T>(), r, comm_, stream_),
            comm_);
      });
    }
    stats_.record(comm::kind::all_gather, static_cast<index_t>(recv.size_bytes()));
  }

  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts,
                      comm::reduce_op op = comm::reduce_op::sum) {
    check_counts(counts, "reduce_scatter");
    expect(ssize(send) == total(counts) && ssize(recv) == counts[own()],
           "nccl reduce_scatter: rank {} passed {} elements to send and {} to receive, but the "
           "counts add up to {} and counts[{}] = {}",
           rank_, send.size(), recv.size(), total(counts), rank_, counts[own()]);
    if (equal(counts)) {
      if (!recv.empty())
        TPX_NCCL(ncclReduceScatter(send.data(), recv.data(), recv.size(), nccl_type<T>(),
                                   nccl_op(op), comm_, stream_),
                 comm_);
    } else {
      for_each_block(counts, [&](int r, index_t offset, std::size_t n) {
        TPX_NCCL(ncclReduce(send.data() + offset, r == rank_ ? recv.data() : nullptr, n,
                            nccl_type<T>(), nccl_op(op), r, comm_, stream_),
                 comm_);
      });
    }
    stats_.record(comm::kind::reduce_scatter, static_cast<index_t>(send.size_bytes()));
  }

  template <class T>
  void broadcast(std::span<T> data, int root) {
    expect_rank(root, size_, "nccl broadcast root");
    if (!data.empty())
      TPX_NCCL(ncclBroadcast(data.data(), data.data(), data.size(), nccl_type<T>(), root, comm_,
                             stream_),
               comm_);
    stats_.record(comm::kind::broadcast, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts,
                    std::span<T> recv, std::span<const index_t> recv_counts) {
    check_counts(send_counts, "all_to_all_v send");
    check_counts(recv_counts, "all_to_all_v receive");
    expect(ssize(send) == total(send_counts) && ssize(recv) == total(recv_counts),
           "nccl all_to_all_v: rank {} passed {} elements to send and {} to receive, but its send "
           "counts add up to {} and its receive counts to {}",
           rank_, send.size(), recv.size(), total(send_counts), total(recv_counts));
    index_t bytes = 0;
    for (int q = 0; q < size_; ++q)
      if (q != rank_) bytes += send_counts[static_cast<std::size_t>(q)];
    if (equal(send_counts) && equal(recv_counts) && send_counts[0] == recv_counts[0]) {
      if (!send.empty())
        TPX_NCCL(ncclAlltoAll(send.data(), recv.data(), static_cast<std::size_t>(send_counts[0]),
                              nccl_type<T>(), comm_, stream_),
                 comm_);
    } else {
      group([&] {
        index_t out = 0, in = 0;
        for (int q = 0; q < size_; ++q) {
          const index_t s = send_counts[static_cast<std::size_t>(q)];
          const index_t r = recv_counts[static_cast<std::size_t>(q)];
          if (s > 0)
            TPX_NCCL(ncclSend(send.data() + out, static_cast<std::size_t>(s), nccl_type<T>(), q,
                              comm_, stream_),
                     comm_);
          if (r > 0)
            TPX_NCCL(ncclRecv(recv.data() + in, static_cast<std::size_t>(r), nccl_type<T>(), q,
                              comm_, stream_),
                     comm_);
          out += s;
          in += r;
        }
      });
    }
    stats_.record(comm::kind::all_to_all, bytes * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void send(std::span<const T> data, int peer) {
    expect_rank(peer, size_, "nccl send peer");
    TPX_NCCL(ncclSend(data.data(), data.size(), nccl_type<T>(), peer, comm_, stream_), comm_);
    stats_.record(comm::kind::send, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void recv(std::span<T> data, int peer) {
    expect_rank(peer, size_, "nccl recv peer");
    TPX_NCCL(ncclRecv(data.data(), data.size(), nccl_type<T>(), peer, comm_, stream_), comm_);
    stats_.record(comm::kind::recv, static_cast<index_t>(data.size_bytes()));
  }

  /// An all-reduce of one element, then the host waits for the stream: every rank has reached
  /// this point and finished the work before it.
  void barrier() {
    TPX_NCCL(ncclAllReduce(token_.data(), token_.data(), 1, ncclFloat32, ncclSum, comm_, stream_),
             comm_);
    TPX_CUDA(cudaStreamSynchronize(stream_));
    stats_.record(comm::kind::barrier, 0);
  }

  /// Copies a matrix view to another of the same shape on the communicator's stream.
  template <class T>
  void copy(matrix_view<const T> from, matrix_view<T> to) {
    copy_async(from, to, stream_, "nccl_communicator");
  }

  /// Sets elements to zero on this rank's stream.
  template <class T>
  void zero(std::span<T> s) {
    zero_async(s, stream_);
  }

 private:
  nccl_communicator(ncclComm_t comm, cudaStream_t stream, bool owned)
      : comm_(comm), stream_(stream), owned_(owned) {
    expect(comm != nullptr, "nccl_communicator::wrap: the ncclComm_t is null");
    init();
  }
  friend std::vector<nccl_communicator> init_all(std::span<const int>,
                                                 std::span<const cudaStream_t>);

  void init() {
    TPX_NCCL(ncclCommUserRank(comm_, &rank_), comm_);
    TPX_NCCL(ncclCommCount(comm_, &size_), comm_);
    token_.resize(1);
    zero(token_.span());
  }

  static ncclRedOp_t nccl_op(comm::reduce_op op) noexcept {
    return op == comm::reduce_op::sum ? ncclSum : ncclMax;
  }
  template <class S>
  static index_t ssize(const S& s) noexcept {
    return static_cast<index_t>(s.size());
  }
  static index_t total(std::span<const index_t> c) { return comm::detail::total(c); }
  static bool equal(std::span<const index_t> c) {
    return std::adjacent_find(c.begin(), c.end(), std::not_equal_to<>()) == c.end();
  }
  std::size_t own() const noexcept { return static_cast<std::size_t>(rank_); }

  void check_counts(std::span<const index_t> counts, std::string_view what) const {
    comm::detail::check_counts(counts, size_, rank_, fmt::format("nccl {}", what));
  }

  /// One NCCL group of `call(r, offset, n)` for each rank r with a non-empty block of `counts`.
  template <class Call>
  void for_each_block(std::span<const index_t> counts, Call call) {
    group([&] {
      index_t offset = 0;
      for (int r = 0; r < size_; ++r) {
        const index_t n = counts[static_cast<std::size_t>(r)];
        if (n > 0) call(r, offset, static_cast<std::size_t>(n));
        offset += n;
      }
    });
  }

  /// Runs `calls` inside ncclGroupStart/ncclGroupEnd (ended even when a call throws).
  template <class Calls>
  void group(Calls calls) {
    TPX_NCCL(ncclGroupStart(), comm_);
    try {
      calls();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    TPX_NCCL(ncclGroupEnd(), comm_);
  }

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool owned_ = false;
  int rank_ = 0;
  int size_ = 1;
  device_buffer<float> token_;
  comm::stats stats_;
};

static_assert(comm::communicator<nccl_communicator>);
static_assert(comm::splittable<nccl_communicator>);

/// One communicator per device in `devices` for a process that drives them all
/// (`ncclCommInitAll`); communicator i uses `streams[i]`, a stream on `devices[i]`.
inline std::vector<nccl_communicator> init_all(std::span<const int> devices,
                                               std::span<const cudaStream_t> streams) {
  expect(!devices.empty() && devices.size() == streams.size(),
         "cuda::init_all: {} devices and {} streams; pass one stream per device, at least one",
         devices.size(), streams.size());
  std::vector<ncclComm_t> comms(devices.size());
  TPX_NCCL(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()),
           nullptr);
  std::vector<nccl_communicator> out;
  out.reserve(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i) {
    TPX_CUDA(cudaSetDevice(devices[i]));
    out.push_back(nccl_communicator(comms[i], streams[i], true));
  }
  return out;
}

/// The id of an NCCL communicator shared through the file `path`: rank 0 makes it and writes it
/// atomically; every other rank waits up to `timeout` for the file and reads it. Remove the file
/// before the next run, or ranks read a stale id (rank 0 replaces it, the others may be faster).
inline ncclUniqueId unique_id_file(const std::filesystem::path& path, int rank,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  ncclUniqueId id{};
  if (rank == 0) {
    TPX_NCCL(ncclGetUniqueId(&id), nullptr);
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(id.internal, sizeof(id.internal));
      expect(static_cast<bool>(out), "cuda::unique_id_file: cannot write '{}'", tmp.string());
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    expect(!ec, "cuda::unique_id_file: cannot rename '{}' to '{}': {}", tmp.string(), path.string(),
           ec.message());
    return id;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    std::error_code ec;
    if (std::filesystem::file_size(path, ec) == sizeof(id.internal) && !ec) {
      std::ifstream in(path, std::ios::binary);
      in.read(id.internal, sizeof(id.internal));
      if (in.gcount() == static_cast<std::streamsize>(sizeof(id.internal))) return id;
    }
    expect(std::chrono::steady_clock::now() < deadline,
           "cuda::unique_id_file: rank {} waited {} ms for rank 0 to write the NCCL id to '{}'",
           rank, timeout.count(), path.string());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

/// The id of an NCCL communicator, made by rank 0 of `over` and broadcast over it: any tpx
/// communicator whose ranks are the NCCL ranks to be (`mpi::communicator::world()`).
template <class Comm>
requires requires(Comm& c, std::span<char> bytes) { c.broadcast(bytes, 0); }
ncclUniqueId unique_id_over(Comm& over) {
  ncclUniqueId id{};
  if (over.rank() == 0) TPX_NCCL(ncclGetUniqueId(&id), nullptr);
  over.broadcast(std::span<char>(id.internal, sizeof(id.internal)), 0);
  return id;
}

/// The GPU of a process: its local rank modulo the devices it sees (made current).
inline int select_device(const comm::launch_rank& at) {
  int devices = 0;
  TPX_CUDA(cudaGetDeviceCount(&devices));
  expect(devices > 0, "cuda::select_device: rank {} (local rank {}) sees no CUDA device", at.rank,
         at.local_rank);
  const int device = at.local_rank % devices;
  TPX_CUDA(cudaSetDevice(device));
  return device;
}

/// One rank per process of a launched job, on its own GPU: the device, a stream on it and the
/// NCCL communicator over that stream (declared in that order, so the communicator goes first).
struct process_rank {
  comm::launch_rank at;
  int device = 0;
  cuda::stream stream;
  nccl_communicator comm;

  /// Rank and size from the launcher's environment, the device by local rank, the id through
  /// the file `id_file` (on a disk every rank reads; rank 0 writes it).
  static process_rank bootstrap(const std::filesystem::path& id_file) {
    const comm::launch_rank at = launched("cuda::process_rank::bootstrap");
    const int device = select_device(at);
    cuda::stream s;
    const ncclUniqueId id = unique_id_file(id_file, at.rank);
    nccl_communicator c(id, at.size, at.rank, s.get());
    return process_rank{at, device, std::move(s), std::move(c)};
  }

  /// The same, with the id broadcast over `over` (its ranks must be the launcher's).
  template <class Comm>
  requires requires(Comm& c, std::span<char> bytes) {
    { c.rank() } -> std::convertible_to<int>;
    c.broadcast(bytes, 0);
  }
  static process_rank bootstrap(Comm& over) {
    const comm::launch_rank at = launched("cuda::process_rank::bootstrap");
    expect(over.rank() == at.rank && over.size() == at.size,
           "cuda::process_rank::bootstrap: the communicator's rank {} of {} is not the "
           "launcher's rank {} of {}",
           over.rank(), over.size(), at.rank, at.size);
    const int device = select_device(at);
    cuda::stream s;
    const ncclUniqueId id = unique_id_over(over);
    nccl_communicator c(id, at.size, at.rank, s.get());
    return process_rank{at, device, std::move(s), std::move(c)};
  }

 private:
  static comm::launch_rank launched(std::string_view where) {
    const std::optional<comm::launch_rank> at = comm::launch_environment();
    expect(at.has_value(),
           "{}: no launcher's environment (RANK / WORLD_SIZE of torchrun, OMPI_COMM_WORLD_* of "
           "mpirun, PMI_* of srun): start one process per GPU with one of them",
           where);
    return *at;
  }
};

}  // namespace tpx::inline v0::cuda
