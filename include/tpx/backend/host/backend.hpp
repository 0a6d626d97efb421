#pragma once
/// \file
/// The host backend: threads as ranks, CBLAS GEMMs, host memory. Layers take it as `Backend`.

#include <span>
#include <vector>

#include "tpx/backend/host/communicator.hpp"
#include "tpx/backend/host/gemm.hpp"
#include "tpx/backend/host/ops.hpp"

namespace tpx::inline v0::host {

struct backend {
  using engine = host::gemm_engine;
  using communicator = host::communicator;
  /// The layers' element-wise work: host loops.
  using ops = host::ops;
  /// Owning storage for `n` elements of T, in the backend's memory.
  template <class T>
  using buffer = std::vector<T>;

  /// Copies host elements into backend storage, replacing its contents.
  template <class T>
  static void upload(std::span<const T> from, buffer<T>& to) {
    to.assign(from.begin(), from.end());
  }
};

}  // namespace tpx::inline v0::host
