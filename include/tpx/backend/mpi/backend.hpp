#pragma once
/// \file
/// The MPI backend: one rank per process over an `MPI_Comm`, CBLAS GEMMs and host memory. Layers
/// and models take it as `Backend` exactly as they take `host::backend`, of which it is the
/// same but for the communicator (`mpi/communicator.hpp`).

#include "tpx/backend/host/backend.hpp"
#include "tpx/backend/mpi/communicator.hpp"

namespace tpx::inline v0::mpi {

struct backend : host::backend {
  using communicator = mpi::communicator;
};

}  // namespace tpx::inline v0::mpi
