#pragma once
/// \file
/// The `backend` concept layers are written against: a GEMM engine, a communicator, and owning
/// storage in the backend's memory.

#include <concepts>
#include <span>

#include "tpx/comm/communicator.hpp"
#include "tpx/gemm/engine.hpp"

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

}  // namespace tpx::inline v0::layer
