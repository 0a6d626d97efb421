#pragma once
/// \file
/// `cuda::ops`: the layers' element-wise work (RMSNorm, embedding lookup and gradient,
/// cross-entropy statistics and gradient) as kernels on the rank's stream — the same members, with
/// the same meaning, as `host::ops`, which is their reference. Built from the rank's communicator
/// (its stream), so kernels, GEMMs and collectives of a rank are ordered on one stream.
///
/// Token ids and targets arrive as host spans (the layers validate them on the host) and are
/// copied to the device on the stream; that copy is from pageable memory, so the embedding's and
/// the cross-entropy's calls cannot be captured in a CUDA graph (RMSNorm's can). `to_host` waits
/// for the stream.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include "tpx/backend/cuda/check.hpp"
#include "tpx/backend/cuda/kernels.hpp"
#include "tpx/backend/cuda/memory.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/ops/concept.hpp"

namespace tpx::inline v0::cuda {

class ops {
 public:
  explicit ops(cudaStream_t stream) : stream_(stream) {}
  /// On the communicator's stream.
  template <class Comm>
  requires requires(const Comm& c) {
    { c.stream() } -> std::convertible_to<cudaStream_t>;
  }
  explicit ops(const Comm& comm) : ops(comm.stream()) {}

  ops(const ops&) = delete;
  ops& operator=(const ops&) = delete;
  ops(ops&&) noexcept = default;
  ops& operator=(ops&&) noexcept = default;

  cudaStream_t stream() const noexcept { return stream_; }

  template <class T>
  void rms_norm_forward(matrix_view<const T> x, std::span<const T> w, double eps,
                        matrix_view<T> y) const {
    check_launch(kernels::rms_norm_forward(x.data(), x.ld(), x.rows(), x.cols(), w.data(), eps,
                                           y.data(), y.ld(), stream_));
  }

  template <class T>
  void rms_norm_backward(matrix_view<const T> x, std::span<const T> w, double eps,
                         matrix_view<const T> dy, matrix_view<T> dx, std::span<T> dw) {
    using A = kernels::accumulator_t<T>;
    auto& r = [&]() -> device_buffer<A>& {
      if constexpr (std::is_same_v<A, double>)
        return row_scratch_f64_;
      else
        return row_scratch_f32_;
    }();
    if (r.size() < static_cast<std::size_t>(x.rows())) r.resize(static_cast<std::size_t>(x.rows()));
    check_launch(kernels::rms_norm_backward(x.data(), x.ld(), dy.data(), dy.ld(), x.rows(),
                                            x.cols(), w.data(), eps, dx.data(), dx.ld(), dw.data(),
                                            r.data(), stream_));
  }

  template <class T>
  void embedding_forward(std::span<const std::int64_t> ids, matrix_view<const T> table,
                         index_t first, matrix_view<T> y) {
    expect_contiguous(table, "embedding table");
    check_launch(kernels::embedding_forward(device_ids(ids), y.rows(), table.data(), first,
                                            table.rows(), table.cols(), y.data(), y.ld(), stream_));
  }

  template <class T>
  void embedding_backward(std::span<const std::int64_t> ids, matrix_view<const T> dy, index_t first,
                          matrix_view<T> dtable) {
    expect_contiguous(dtable, "embedding table gradient");
    check_launch(kernels::embedding_backward(device_ids(ids), dy.rows(), dy.data(), dy.ld(), first,
                                             dtable.rows(), dtable.cols(), dtable.data(), stream_));
  }

  template <class T>
  void row_max(matrix_view<const T> logits, std::span<T> max) const {
    check_launch(kernels::row_max(logits.data(), logits.ld(), logits.rows(), logits.cols(),
                                  max.data(), stream_));
  }

  template <class T>
  void cross_entropy_sums(matrix_view<const T> logits, std::span<const T> max,
                          std::span<const std::int64_t> targets, index_t first, std::span<T> sums) {
    check_launch(kernels::cross_entropy_sums(logits.data(), logits.ld(), logits.rows(),
                                             logits.cols(), max.data(), device_ids(targets), first,
                                             sums.data(), stream_));
  }

  template <class T>
  void cross_entropy_backward(matrix_view<const T> logits, std::span<const T> max,
                              std::span<const T> sum, std::span<const std::int64_t> targets,
                              index_t first, std::int64_t ignore, T scale, matrix_view<T> dlogits) {
    check_launch(kernels::cross_entropy_backward(
        logits.data(), logits.ld(), logits.rows(), logits.cols(), max.data(), sum.data(),
        device_ids(targets), first, ignore, static_cast<double>(scale), dlogits.data(),
        dlogits.ld(), stream_));
  }

  template <class T>
  void gather_rows(matrix_view<const T> src, std::span<const index_t> from, matrix_view<T> dst) {
    check_launch(kernels::gather_rows(src.data(), src.ld(), device_ids(from), dst.rows(),
                                      dst.cols(), dst.data(), dst.ld(), stream_));
  }

  template <class T>
  void spread_rows(matrix_view<const T> src, std::span<const index_t> to, index_t k,
                   matrix_view<const T> w, matrix_view<T> dst) {
    check_launch(kernels::spread_rows(src.data(), src.ld(), device_ids(to), w.data(), w.ld(),
                                      src.rows(), k, src.cols(), dst.data(), dst.ld(), stream_));
  }

  template <class T>
  void combine_rows(matrix_view<const T> src, std::span<const index_t> from, index_t k,
                    matrix_view<const T> w, matrix_view<T> dst) {
    check_launch(kernels::combine_rows(src.data(), src.ld(), device_ids(from), w.data(), w.ld(),
                                       dst.rows(), k, dst.cols(), dst.data(), dst.ld(), stream_));
  }

  template <class T>
  void row_dots(matrix_view<const T> a, matrix_view<const T> b, std::span<const index_t> from,
                matrix_view<T> out) {
    check_launch(kernels::row_dots(a.data(), a.ld(), b.data(), b.ld(), device_ids(from), out.rows(),
                                   out.cols(), a.cols(), out.data(), out.ld(), stream_));
  }

  template <class T>
  void swiglu_forward(matrix_view<const T> h, matrix_view<T> a) const {
    check_launch(
        kernels::swiglu_forward(h.data(), h.ld(), a.rows(), a.cols(), a.data(), a.ld(), stream_));
  }

  template <class T>
  void swiglu_backward(matrix_view<const T> h, matrix_view<const T> da, matrix_view<T> dh) const {
    check_launch(kernels::swiglu_backward(h.data(), h.ld(), da.data(), da.ld(), da.rows(),
                                          da.cols(), dh.data(), dh.ld(), stream_));
  }

  template <class T>
  void add(matrix_view<T> a, matrix_view<const T> b) const {
    check_launch(kernels::add(a.data(), a.ld(), b.data(), b.ld(), a.rows(), a.cols(), stream_));
  }

  /// Copies device elements into host memory once the stream's work is done (synchronises).
  template <class T>
  void copy_to_host(matrix_view<const T> from, matrix_view<T> to) const {
    copy_2d(from, to, cudaMemcpyDeviceToHost);
    TPX_CUDA(cudaStreamSynchronize(stream_));
  }

  /// to = from on the stream (device to device, any leading dimensions).
  template <class T>
  void copy(matrix_view<const T> from, matrix_view<T> to) const {
    copy_2d(from, to, cudaMemcpyDeviceToDevice);
  }

  /// Copies host elements into device memory on the stream (pageable: staged before return, so
  /// `from` may be reused at once; not capturable).
  template <class T>
  void copy_from_host(matrix_view<const T> from, matrix_view<T> to) const {
    copy_2d(from, to, cudaMemcpyHostToDevice);
  }

 private:
  template <class T>
  void copy_2d(matrix_view<const T> from, matrix_view<T> to, cudaMemcpyKind kind) const {
    expect(from.rows() == to.rows() && from.cols() == to.cols(),
           "cuda::ops: a [{} × {}] view copied into a [{} × {}] one", from.rows(), from.cols(),
           to.rows(), to.cols());
    if (from.rows() == 0 || from.cols() == 0) return;
    TPX_CUDA(cudaMemcpy2DAsync(to.data(), static_cast<std::size_t>(to.ld()) * sizeof(T),
                               from.data(), static_cast<std::size_t>(from.ld()) * sizeof(T),
                               static_cast<std::size_t>(from.cols()) * sizeof(T),
                               static_cast<std::size_t>(from.rows()), kind, stream_));
  }

  /// The ids on the device, copied on the stream (the host span may be reused on return:
  /// pageable copies are staged before cudaMemcpyAsync returns).
  const std::int64_t* device_ids(std::span<const std::int64_t> ids) {
    if (ids_.capacity() < ids.size()) {  // growing frees the old buffer: let queued kernels finish
      TPX_CUDA(cudaStreamSynchronize(stream_));
      ids_.resize(ids.size());
    }
    if (!ids.empty())
      TPX_CUDA(cudaMemcpyAsync(ids_.data(), ids.data(), ids.size_bytes(), cudaMemcpyHostToDevice,
                               stream_));
    return ids_.data();
  }

  template <class T>
  static void expect_contiguous(matrix_view<T> m, std::string_view what) {
    expect(m.is_contiguous(), "cuda::ops: the {} must be contiguous (ld {} for {} columns)", what,
           m.ld(), m.cols());
  }

  cudaStream_t stream_;
  device_buffer<std::int64_t> ids_;
  device_buffer<float> row_scratch_f32_;
  device_buffer<double> row_scratch_f64_;
};

static_assert(tpx::ops::element_ops<ops>);

}  // namespace tpx::inline v0::cuda
