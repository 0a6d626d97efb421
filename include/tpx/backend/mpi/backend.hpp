#pragma once
/// \file
/// The MPI backend: one rank per process over an `MPI_Comm`, CBLAS GEMMs and host memory. Layers
/// and models take it as `Backend` exactly as they take `host::backend`; only the communicator
/// differs (`mpi/communicator.hpp`).

#include <span>
#include <vector>

#include "tpx/backend/host/gemm.hpp"
#include "tpx/backend/host/ops.hpp"
#include "tpx/backend/mpi/communicator.hpp"

namespace tpx::inline v0::mpi {

struct backend {
  using engine = host::gemm_engine;
  using communicator = mpi::communicator;
  /// The layers' element-wise work: the host loops, on this process's own memory.
  using ops = host::ops;
  static constexpr bool host_memory = true;
  template <class T>
  using buffer = std::vector<T>;

  /// Copies host elements into backend storage, replacing its contents.
  template <class T>
  static void upload(std::span<const T> from, buffer<T>& to) {
    to.assign(from.begin(), from.end());
  }
};

}  // namespace tpx::inline v0::mpi
