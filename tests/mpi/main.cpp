// The mpi suite's main: MPI for the whole run, doctest on every process, and one verdict for the
// job — a process exits non-zero when any rank failed, so the launcher's status is the suite's.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "tpx/backend/mpi/communicator.hpp"

int main(int argc, char** argv) {
  tpx::mpi::environment mpi(argc, argv);
  doctest::Context context(argc, argv);
  int status = context.run();
  if (context.shouldExit()) return status;
  MPI_Allreduce(MPI_IN_PLACE, &status, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return status;
}
