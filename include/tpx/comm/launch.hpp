#pragma once
/// \file
/// Where this process stands in a job a launcher started: its rank, the job's size and its rank
/// on this node, read from the launcher's environment before any communicator exists. That is
/// what one-process-per-GPU code needs to pick its device and to bootstrap NCCL.
///
/// | launcher              | rank                  | size                  | local rank                  |
/// |-----------------------|-----------------------|-----------------------|-----------------------------|
/// | torchrun (and others) | RANK                  | WORLD_SIZE            | LOCAL_RANK                  |
/// | Open MPI's mpirun     | OMPI_COMM_WORLD_RANK  | OMPI_COMM_WORLD_SIZE  | OMPI_COMM_WORLD_LOCAL_RANK  |
/// | MPICH / Slurm (PMI)   | PMI_RANK              | PMI_SIZE              | MPI_LOCALRANKID, SLURM_LOCALID |
///
/// torchrun's variables come first: a job that sets them means them. A local rank the launcher
/// does not give is taken as the rank (one node).

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "tpx/core/error.hpp"

namespace tpx::inline v0::comm {

/// Which family of launcher set the variables.
enum class launcher { torchrun, open_mpi, pmi };

constexpr std::string_view name(launcher l) noexcept {
  return l == launcher::torchrun ? "torchrun" : l == launcher::open_mpi ? "Open MPI" : "PMI";
}

/// A process's place in its job.
struct launch_rank {
  int rank = 0, size = 1, local_rank = 0;
  comm::launcher launcher = comm::launcher::torchrun;
};

namespace detail {

/// The whole number in environment variable `var`, or nothing when it is unset or empty.
inline std::optional<int> environment_number(const char* var) {
  const char* text = std::getenv(var);
  if (text == nullptr || *text == '\0') return std::nullopt;
  const std::string_view s(text);
  int value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  expect(ec == std::errc() && end == s.data() + s.size() && value >= 0,
         "the environment variable {}='{}' is not a whole number ≥ 0", var, s.substr(0, 40));
  return value;
}

}  // namespace detail

/// This process's place in the job its launcher started, or nothing outside a launcher (with
/// `mpi_only`, outside an MPI launcher: torchrun's variables are not read). A rank without a
/// size, a size out of range (1 … max_ranks) or a rank or local rank past the size is an error
/// naming the variables.
inline std::optional<launch_rank> launch_environment(bool mpi_only = false) {
  struct names {
    comm::launcher launcher;
    const char *rank, *size, *local, *local2;
  };
  constexpr names families[] = {
      {launcher::torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK", nullptr},
      {launcher::open_mpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
       "OMPI_COMM_WORLD_LOCAL_RANK", nullptr},
      {launcher::pmi, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "SLURM_LOCALID"},
  };
  for (const names& n : families) {
    if (mpi_only && n.launcher == launcher::torchrun) continue;
    const std::optional<int> rank = detail::environment_number(n.rank);
    if (!rank) continue;
    const std::optional<int> size = detail::environment_number(n.size);
    expect(size.has_value(), "{} sets {}={} but not {}, the number of processes", name(n.launcher),
           n.rank, *rank, n.size);
    expect_group_size(*size, n.size);
    expect(*rank < *size, "{}: {}={} is not a rank of a job of {}={} processes", name(n.launcher),
           n.rank, *rank, n.size, *size);
    std::optional<int> local = detail::environment_number(n.local);
    if (!local && n.local2 != nullptr) local = detail::environment_number(n.local2);
    const int local_rank = local.value_or(*rank);
    expect(local_rank < *size, "{}: the local rank {} is not below the job's {} processes",
           name(n.launcher), local_rank, *size);
    return launch_rank{*rank, *size, local_rank, n.launcher};
  }
  return std::nullopt;
}

}  // namespace tpx::inline v0::comm
