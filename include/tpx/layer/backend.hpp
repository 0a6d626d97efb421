#pragma once
/// \file
/// The `backend` concept layers are written against: a GEMM engine, a communicator, and owning
/// storage in the backend's memory; the type a layer holds its weights in (`weight_t`, and
/// `weights_in`, a backend whose layers hold them narrower); and the scratch helpers layers share.

#include <concepts>
#include <span>
#include <type_traits>

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

/// The element type a layer computing in T holds its GEMM weights in (linear weights, embedding
/// tables, experts): `Backend::weight<T>` where the backend names one, else T. Biases, norm
/// weights and gradients stay T.
template <class Backend, class T>
struct weight_of {
  using type = T;
};
template <class Backend, class T>
  requires requires { typename Backend::template weight<T>; }
struct weight_of<Backend, T> {
  using type = typename Backend::template weight<T>;
};
template <class Backend, class T>
using weight_t = typename weight_of<Backend, T>::type;

/// `Backend` whose layers hold their float GEMM weights as W (bf16: half the memory, and half the
/// bytes a decode step reads), computing in float with float accumulation; double stays double.
/// The backend's GEMM engine must take B as W (`gemm::gemm_engine_of<engine, float, W>`: the
/// host engine does for bf16), and its ops the embedding lookup from a W table.
///
///   model::causal_lm<layer::block_mode::tensor, layer::weights_in<host::backend, bf16>, float>
template <class Backend, class W>
struct weights_in : Backend {
  template <class T>
  using weight = std::conditional_t<std::is_same_v<T, float>, W, T>;
};

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
