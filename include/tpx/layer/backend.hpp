#pragma once
/// \file
/// The `backend` concept layers are written against: a GEMM engine, a communicator, and owning
/// storage in the backend's memory; and the scratch helpers layers share.

#include <concepts>
#include <span>

#include "tpx/comm/communicator.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/gemm/engine.hpp"
#include "tpx/ops/concept.hpp"

namespace tpx::inline v0::layer {

template <class B>
concept backend = gemm::gemm_engine<typename B::engine> &&
    comm::communicator<typename B::communicator> &&
    requires(std::span<const float> host, typename B::template buffer<float>& buf) {
  B::upload(host, buf);
  { buf.data() } -> std::convertible_to<float*>;
  { buf.size() } -> std::convertible_to<std::size_t>;
  buf.resize(std::size_t{1});
};

/// A backend with element-wise kernels: `Backend::ops`, built from the rank's communicator,
/// modelling `ops::element_ops` (RMSNorm, embedding lookup and gradient, cross-entropy statistics
/// and gradient, row moves by index maps, SwiGLU, add, copies to and from the host).
/// `rms_norm`, `vocab_embedding`, `vocab_cross_entropy` and `experts` need it.
template <class B>
concept backend_with_ops = backend<B> && ops::element_ops<typename B::ops> &&
    std::constructible_from<typename B::ops, typename B::communicator&>;

namespace detail {

/// The first `n` elements of `b`, grown when it holds fewer (never shrunk, so a layer's steady
/// state allocates nothing).
template <class Buffer>
auto scratch(Buffer& b, index_t n) {
  if (static_cast<index_t>(b.size()) < n) b.resize(static_cast<std::size_t>(n));
  return std::span(b.data(), static_cast<std::size_t>(n));
}

/// A [rows × cols] view of `scratch(b, rows · cols)`.
template <class Buffer>
auto sized(Buffer& b, index_t rows, index_t cols) {
  return make_matrix(scratch(b, rows * cols).data(), rows, cols);
}

}  // namespace detail

}  // namespace tpx::inline v0::layer
