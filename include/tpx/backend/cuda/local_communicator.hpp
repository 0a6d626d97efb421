#pragma once
/// \file
/// N ranks on one GPU: `cuda::run_local(tp, fn)` calls `fn(comm)` on `tp` host threads, each rank
/// with its own stream and its own `cuda::local_communicator`, so every multi-rank style runs
/// for real — cuBLASLt GEMMs, device buffers, collectives — on a single device (NCCL refuses two
/// ranks on one device).
///
/// Each collective goes through the host group of `host/group.hpp` (the same cross-rank checks as
/// the host communicator: kinds, types, sizes, counts), and is carried out on the device, ordered
/// with events and never waiting on the host:
///
///   rank r:  record ready[r] on its stream ─ host barrier ─┐
///   rank 0:  its stream waits every ready[q]; copies and the reduction kernel, in rank order;
///            record done                                    ├─ host barrier
///   rank r:  its stream waits done ────────────────────────┘
///
/// All data movement runs on rank 0's stream, so results are bit-identical on every rank and no
/// rank reads a buffer another rank is still writing. Reductions add in rank order (the kernel of
/// `kernels.cuh`). Like the host group, a mismatch is a `tpx::error` on every rank; a rank that
/// throws releases the others.
///
/// `capture(fn)` captures what every rank enqueues in `fn` — layers, GEMMs, collectives — into one
/// CUDA graph on rank 0's stream; `launch()` replays it.

#include <cuda_runtime_api.h>

#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "tpx/backend/cuda/check.hpp"
#include "tpx/backend/cuda/gemm.hpp"
#include "tpx/backend/cuda/kernels.hpp"
#include "tpx/backend/cuda/memory.hpp"
#include "tpx/backend/host/member.hpp"
#include "tpx/backend/host/run_group.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::cuda {

namespace detail {

/// What the ranks of one device-local group share: a stream and a ready event per rank, the done
/// event of rank 0, and the graph being captured.
struct local_shared {
  /// A group's own: a stream per rank.
  explicit local_shared(int tp) : owned(static_cast<std::size_t>(tp)) {
    for (const stream& s : owned) streams.push_back(s);
    events(tp);
  }
  /// A sub-group's (split): its members' streams, which the group they were split from owns, so
  /// that each rank's work stays on the one stream its engine uses.
  explicit local_shared(std::vector<cudaStream_t> member_streams)
      : streams(std::move(member_streams)) {
    events(static_cast<int>(streams.size()));
  }
  std::vector<stream> owned;
  std::vector<cudaStream_t> streams;
  std::vector<event> ready;
  std::vector<event> joined;
  event done, fork;
  std::shared_ptr<graph> captured;

 private:
  void events(int tp) {
    for (int r = 0; r < tp; ++r) ready.emplace_back(), joined.emplace_back();
  }
};

}  // namespace detail

/// One rank's handle on a device-local group. Models `comm::communicator` for float, double,
/// __half and __nv_bfloat16 buffers in device memory.
class local_communicator : public host::detail::member {
 public:
  local_communicator(host::detail::group& g, int rank, detail::local_shared& shared)
      : member(g, rank), shared_(&shared) {}

  /// The ranks passing the same `color` (≥ 0) form one new communicator, ranked by `key`, then by
  /// their rank here (MPI_Comm_split's rule); collective. Each rank keeps its stream: the
  /// sub-group orders its members' streams with events of its own.
  local_communicator split(int color, int key) {
    auto [sub, sub_rank] = enter_split(color, key, [this](std::span<const int> members) {
      std::vector<cudaStream_t> s;
      for (const int m : members) s.push_back(shared_->streams[static_cast<std::size_t>(m)]);
      return std::static_pointer_cast<void>(std::make_shared<detail::local_shared>(std::move(s)));
    });
    auto shared = std::static_pointer_cast<detail::local_shared>(sub->attachment());
    return local_communicator(std::move(sub), sub_rank, std::move(shared));
  }

  /// The stream this rank's work goes on; give the rank's GEMM engine the same one.
  cudaStream_t stream() const noexcept {
    return shared_->streams[static_cast<std::size_t>(rank())];
  }

  template <class T>
  void all_reduce(std::span<T> data, comm::reduce_op op = comm::reduce_op::sum) {
    begin();
    const std::vector<host::detail::post>& all = enter_all_reduce(data, op);
    on_rank0([&](cudaStream_t s) {
      kernels::inputs<T> in = inputs_of<T>(all, [](const host::detail::post& p) { return p.out; });
      T* first = static_cast<T*>(all[0].out);
      check_launch(kernels::reduce(in, first, ssize(data), op == comm::reduce_op::max, s));
      for (int q = 1; q < size(); ++q) copy_bytes(all[q].out, first, ssize(data) * sizeof(T), s);
    });
    end(comm::kind::all_reduce, ssize(data) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts) {
    begin();
    const std::vector<host::detail::post>& all = enter_all_gather(send, recv, counts);
    on_rank0([&](cudaStream_t s) {
      for (int to = 0; to < size(); ++to) {
        index_t offset = 0;
        for (int from = 0; from < size(); ++from) {
          const index_t n = counts[static_cast<std::size_t>(from)];
          copy_bytes(static_cast<T*>(all[to].out) + offset, all[from].in, n * sizeof(T), s);
          offset += n;
        }
      }
    });
    end(comm::kind::all_gather, sum(counts) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, std::span<const index_t> counts,
                      comm::reduce_op op = comm::reduce_op::sum) {
    begin();
    const std::vector<host::detail::post>& all = enter_reduce_scatter(send, recv, counts, op);
    on_rank0([&](cudaStream_t s) {
      index_t offset = 0;
      for (int to = 0; to < size(); ++to) {
        kernels::inputs<T> in = inputs_of<T>(
            all, [](const host::detail::post& p) { return p.in; }, offset);
        const index_t n = counts[static_cast<std::size_t>(to)];
        check_launch(
            kernels::reduce(in, static_cast<T*>(all[to].out), n, op == comm::reduce_op::max, s));
        offset += n;
      }
    });
    end(comm::kind::reduce_scatter, ssize(send) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void broadcast(std::span<T> data, int root) {
    begin();
    const std::vector<host::detail::post>& all = enter_broadcast(data, root);
    on_rank0([&](cudaStream_t s) {
      for (int q = 0; q < size(); ++q)
        if (q != root) copy_bytes(all[q].out, all[root].out, ssize(data) * sizeof(T), s);
    });
    end(comm::kind::broadcast, ssize(data) * static_cast<index_t>(sizeof(T)));
  }

  template <class T>
  void all_to_all_v(std::span<const T> send, std::span<const index_t> send_counts,
                    std::span<T> recv, std::span<const index_t> recv_counts) {
    begin();
    const std::vector<host::detail::post>& all =
        enter_all_to_all_v(send, send_counts, recv, recv_counts);
    on_rank0([&](cudaStream_t s) {
      for (int to = 0; to < size(); ++to) {
        index_t out = 0;
        for (int from = 0; from < size(); ++from) {
          const index_t n = all[to].counts2[static_cast<std::size_t>(from)];
          copy_bytes(static_cast<T*>(all[to].out) + out,
                     static_cast<const T*>(all[from].in) + send_offset(all[from], to),
                     n * sizeof(T), s);
          out += n;
        }
      }
    });
    end(comm::kind::all_to_all, all_to_all_bytes<T>(send_counts));
  }

  /// Point-to-point on one device: a send copies its buffer into stream-ordered staging memory
  /// (cudaMallocAsync) and returns at once; the receiver's stream waits for that copy, copies
  /// out and frees the staging memory. Messages between a pair arrive in order.
  template <class T>
  void send(std::span<const T> data, int peer) {
    expect_rank(peer, size(), "send peer");
    auto m = std::make_shared<pending>();
    if (!data.empty()) {
      TPX_CUDA(cudaMallocAsync(&m->staging, data.size_bytes(), stream()));
      copy_bytes(m->staging, data.data(), data.size_bytes(), stream());
    }
    m->ready.record(stream());
    shared().deliver(rank(), peer, {&host::detail::type_key<T>, ssize(data), {}, m});
    record(comm::kind::send, static_cast<index_t>(data.size_bytes()));
  }

  template <class T>
  void recv(std::span<T> data, int peer) {
    expect_rank(peer, size(), "recv peer");
    const host::detail::message msg = shared().collect(peer, rank());
    const auto m = std::static_pointer_cast<pending>(msg.payload);
    expect(msg.type == &host::detail::type_key<T>,
           "recv: rank {} expects elements of another type than rank {} sent", rank(), peer);
    expect(msg.count == ssize(data),
           "recv: rank {} expects {} elements from rank {}, but the message holds {}", rank(),
           ssize(data), peer, msg.count);
    m->ready.wait_on(stream());
    copy_bytes(data.data(), m->staging, data.size_bytes(), stream());
    if (m->staging != nullptr)
      TPX_CUDA(cudaFreeAsync(std::exchange(m->staging, nullptr), stream()));
    record(comm::kind::recv, static_cast<index_t>(data.size_bytes()));
  }

  void barrier() {
    begin();
    enter_barrier();
    on_rank0([](cudaStream_t) {});
    end(comm::kind::barrier, 0);
  }

  /// Copies a matrix view to another of the same shape on this rank's stream (the hook the
  /// dim-1 collectives and the layers' packing use).
  template <class T>
  void copy(matrix_view<const T> from, matrix_view<T> to) {
    copy_async(from, to, stream(), "local_communicator");
  }

  /// Sets elements to zero on this rank's stream.
  template <class T>
  void zero(std::span<T> s) {
    zero_async(s, stream());
  }

  /// Captures everything every rank enqueues in `fn()` into one graph on rank 0's stream (every
  /// rank calls `capture` together). Returns the same graph on every rank; launch it from one.
  /// Run `fn` once before capturing, so scratch is sized and GEMM plans exist.
  template <class Fn>
  std::shared_ptr<graph> capture(Fn&& fn) {
    const cudaStream_t s0 = shared_->streams[0];
    if (rank() == 0) {
      TPX_CUDA(cudaStreamBeginCapture(s0, cudaStreamCaptureModeRelaxed));
      shared_->fork.record(s0);
    }
    sync("capture: begin");
    if (rank() != 0) shared_->fork.wait_on(stream());  // joins this rank's stream to the capture
    fn();
    shared_->joined[static_cast<std::size_t>(rank())].record(stream());
    sync("capture: end");
    if (rank() == 0) {
      for (int q = 1; q < size(); ++q) shared_->joined[static_cast<std::size_t>(q)].wait_on(s0);
      cudaGraph_t g = nullptr;
      TPX_CUDA(cudaStreamEndCapture(s0, &g));
      shared_->captured = std::make_shared<graph>(g);
    }
    sync("capture: instantiate");
    return shared_->captured;
  }

 private:
  local_communicator(std::shared_ptr<host::detail::group> g, int rank,
                     std::shared_ptr<detail::local_shared> shared)
      : member(std::move(g), rank), shared_(shared.get()), kept_shared_(std::move(shared)) {}

  /// A send in flight: its staging copy and the event that marks the copy done.
  struct pending {
    void* staging = nullptr;
    event ready;
    pending() = default;
    pending(const pending&) = delete;
    pending& operator=(const pending&) = delete;
    ~pending() {
      if (staging != nullptr) cudaFree(staging);  // never received (the group failed)
    }
  };

  template <class T, class Pick>
  kernels::inputs<T> inputs_of(const std::vector<host::detail::post>& all, Pick pick,
                               index_t offset = 0) const {
    expect(size() <= kernels::max_inputs,
           "local_communicator: a group of {} ranks; the reduction kernel reads at most {}", size(),
           kernels::max_inputs);
    kernels::inputs<T> in{};
    in.count = size();
    for (int q = 0; q < size(); ++q)
      in.at[q] = static_cast<const T*>(pick(all[static_cast<std::size_t>(q)])) + offset;
    return in;
  }

  static void copy_bytes(void* to, const void* from, std::size_t bytes, cudaStream_t s) {
    if (bytes > 0 && to != from)
      TPX_CUDA(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, s));
  }

  /// This rank's work so far is what the collective reads.
  void begin() { shared_->ready[static_cast<std::size_t>(rank())].record(stream()); }

  /// Rank 0 orders its stream after every rank's, moves the data, and marks the end.
  template <class Move>
  void on_rank0(Move move) {
    if (rank() != 0) return;
    const cudaStream_t s = stream();
    for (int q = 1; q < size(); ++q) shared_->ready[static_cast<std::size_t>(q)].wait_on(s);
    move(s);
    shared_->done.record(s);
  }

  /// Every rank's stream continues after rank 0's data movement.
  void end(comm::kind k, index_t bytes) {
    sync(comm::name(k));
    if (rank() != 0) shared_->done.wait_on(stream());
    record(k, bytes);
  }

  detail::local_shared* shared_;
  std::shared_ptr<detail::local_shared> kept_shared_;  ///< a sub-group's, kept by its members
};

static_assert(comm::communicator<local_communicator>);
static_assert(comm::splittable<local_communicator>);

/// Runs `fn(local_communicator&)` on `tp` threads, one rank each, all on the current device.
/// If any rank throws, the others are released and the cause is rethrown here (as `host::run`); the
/// device is synchronised before the group's streams and events are destroyed.
template <class Fn>
requires std::invocable<Fn&, local_communicator&>
void run_local(int tp, Fn&& fn) {
  expect(tp <= kernels::max_inputs, "cuda::run_local: tp = {} ranks; at most {} share a device", tp,
         kernels::max_inputs);
  expect_group_size(tp, "cuda::run_local");
  int device = 0;
  TPX_CUDA(cudaGetDevice(&device));
  detail::local_shared shared(tp);
  try {
    host::detail::run_group(
        tp, "cuda::run_local",
        [&](host::detail::group& g, int rank) {
          TPX_CUDA(cudaSetDevice(device));  // every rank's thread on the caller's device
          return local_communicator(g, rank, shared);
        },
        fn);
  } catch (...) {
    cudaDeviceSynchronize();
    throw;
  }
  TPX_CUDA(cudaDeviceSynchronize());
}

}  // namespace tpx::inline v0::cuda
