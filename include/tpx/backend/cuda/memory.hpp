#pragma once
/// \file
/// Owners of device memory, streams, events and graphs (move-only RAII), and the copies between
/// host and device the setup code needs. Views of device memory are tpx's ordinary
/// `matrix_view` / `std::span`: they do not care where the pointer points.
///
/// `device_buffer<T>` is the cuda backend's `buffer<T>`: vector-like `data()`, `size()` and
/// `resize(n)`. It never shrinks its allocation; growing past its capacity allocates anew and does
/// not keep the old contents (tpx only grows scratch and fills it afterwards), so a layer's steady
/// state allocates nothing. Host-API only.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/backend/cuda/check.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::cuda {

/// Owning device memory for `size()` elements of T (uninitialised).
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) { resize(n); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~device_buffer() { release(); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<const T> span() const noexcept { return {data_, size_}; }

  /// Sets the size to n. Within the capacity nothing is allocated; past it the buffer is
  /// reallocated and its contents are not kept.
  void resize(std::size_t n) {
    if (n > capacity_) {
      release();
      void* p = nullptr;
      check(
          cudaMalloc(&p, n * sizeof(T)), "cudaMalloc", std::source_location::current(),
          fmt::format("allocating {} elements of {} bytes (a layer sizes its scratch on its first "
                      "call at a token count; run it once before capturing a graph)",
                      n, sizeof(T)));
      data_ = static_cast<T*>(p);
      capacity_ = n;
    }
    size_ = n;
  }

 private:
  void release() noexcept {
    if (data_ != nullptr) cudaFree(data_);  // an error here is reported by the next checked call
    data_ = nullptr;
    size_ = capacity_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

/// Copies host elements to device memory and waits until they have landed (setup, not the hot
/// path: the copy is ordered before any later work on any stream).
template <class T>
void copy_to_device(std::span<const T> from, T* to) {
  if (from.empty()) return;
  TPX_CUDA(cudaMemcpy(to, from.data(), from.size_bytes(), cudaMemcpyHostToDevice));
  TPX_CUDA(cudaDeviceSynchronize());
}

/// `to` resized to `from.size()` and filled with it.
template <class T>
void upload(std::span<const T> from, device_buffer<T>& to) {
  to.resize(from.size());
  copy_to_device(from, to.data());
}

/// A device buffer holding a copy of `from`.
template <class T>
device_buffer<T> to_device(std::span<const T> from) {
  device_buffer<T> b;
  upload(from, b);
  return b;
}

/// The `n` elements at device pointer `from`, once `stream` has finished the work queued on it
/// (nullptr: the whole device).
template <class T>
std::vector<T> to_host(const T* from, std::size_t n, cudaStream_t stream = nullptr) {
  if (stream != nullptr)
    TPX_CUDA(cudaStreamSynchronize(stream));
  else
    TPX_CUDA(cudaDeviceSynchronize());
  std::vector<T> out(n);
  if (n > 0) TPX_CUDA(cudaMemcpy(out.data(), from, n * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

/// Copies a device matrix view into another of the same shape, on `stream` (one cudaMemcpy2D:
/// padded views and column blocks included). The communicators' `copy` hook.
template <class T>
void copy_async(matrix_view<const T> from, matrix_view<T> to, cudaStream_t stream,
                std::string_view who) {
  expect(from.rows() == to.rows() && from.cols() == to.cols(),
         "{}::copy: a [{} × {}] view copied into a [{} × {}] one", who, from.rows(), from.cols(),
         to.rows(), to.cols());
  if (from.rows() == 0 || from.cols() == 0) return;
  TPX_CUDA(cudaMemcpy2DAsync(to.data(), static_cast<std::size_t>(to.ld()) * sizeof(T), from.data(),
                             static_cast<std::size_t>(from.ld()) * sizeof(T),
                             static_cast<std::size_t>(from.cols()) * sizeof(T),
                             static_cast<std::size_t>(from.rows()), cudaMemcpyDeviceToDevice,
                             stream));
}

/// Sets device elements to zero on `stream`. The communicators' `zero` hook.
template <class T>
void zero_async(std::span<T> s, cudaStream_t stream) {
  if (!s.empty()) TPX_CUDA(cudaMemsetAsync(s.data(), 0, s.size_bytes(), stream));
}

/// An owned non-blocking stream.
class stream {
 public:
  stream() { TPX_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  stream(stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  stream& operator=(stream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~stream() {
    if (s_ != nullptr) cudaStreamDestroy(s_);
  }
  cudaStream_t get() const noexcept { return s_; }
  operator cudaStream_t() const noexcept { return s_; }
  void synchronize() const { TPX_CUDA(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

/// An owned event; `timing` events can measure elapsed time, the others only order streams.
class event {
 public:
  explicit event(bool timing = false) {
    TPX_CUDA(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  event(event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  event& operator=(event&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  ~event() {
    if (e_ != nullptr) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const noexcept { return e_; }
  operator cudaEvent_t() const noexcept { return e_; }
  void record(cudaStream_t s) const { TPX_CUDA(cudaEventRecord(e_, s)); }
  /// Makes `s` wait for the work this event last recorded.
  void wait_on(cudaStream_t s) const { TPX_CUDA(cudaStreamWaitEvent(s, e_, 0)); }
  /// Milliseconds from `start` to this event (both recorded, both timing events).
  float since(const event& start) const {
    TPX_CUDA(cudaEventSynchronize(e_));
    float ms = 0;
    TPX_CUDA(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

/// A captured, instantiated CUDA graph: `launch(stream)` replays it.
class graph {
 public:
  graph() = default;
  /// Takes ownership of a captured graph and instantiates it.
  explicit graph(cudaGraph_t g) : graph_(g) { TPX_CUDA(cudaGraphInstantiate(&exec_, graph_, 0)); }
  graph(const graph&) = delete;
  graph& operator=(const graph&) = delete;
  graph(graph&& o) noexcept
      : graph_(std::exchange(o.graph_, nullptr)), exec_(std::exchange(o.exec_, nullptr)) {}
  graph& operator=(graph&& o) noexcept {
    std::swap(graph_, o.graph_);
    std::swap(exec_, o.exec_);
    return *this;
  }
  ~graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  explicit operator bool() const noexcept { return exec_ != nullptr; }
  /// Nodes in the captured graph.
  std::size_t nodes() const {
    std::size_t n = 0;
    TPX_CUDA(cudaGraphGetNodes(graph_, nullptr, &n));
    return n;
  }
  void launch(cudaStream_t s) const {
    expect(exec_ != nullptr, "cuda::graph: launch of an empty graph (nothing was captured)");
    TPX_CUDA(cudaGraphLaunch(exec_, s));
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// Captures the work `fn()` enqueues on `s` (and on streams it forks from `s`) into a graph.
template <class Fn>
graph capture(cudaStream_t s, Fn&& fn) {
  TPX_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    fn();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(s, &broken);
    if (broken != nullptr) cudaGraphDestroy(broken);
    throw;
  }
  cudaGraph_t g = nullptr;
  TPX_CUDA(cudaStreamEndCapture(s, &g));
  return graph(g);
}

/// Whether a CUDA device can be used here; `why` gets the reason when not.
inline bool device_available(std::string* why = nullptr) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why != nullptr)
      *why = e != cudaSuccess ? std::string(cudaGetErrorString(e)) : std::string("no CUDA device");
    cudaGetLastError();  // clear the sticky error of a failed query
    return false;
  }
  return true;
}

}  // namespace tpx::inline v0::cuda
