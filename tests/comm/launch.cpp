// comm::launch_environment: a process's rank, job size and local rank from torchrun's, Open
// MPI's and PMI's variables, torchrun's first, and the bad values as sentences naming them.

#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "../error_of.hpp"
#include "tpx/comm/launch.hpp"

using namespace tpx;
using test::error_of;

namespace {

/// Sets the given variables (the others of every launcher unset) for its lifetime.
class environment {
 public:
  environment(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const char* v : all) {
      if (const char* old = std::getenv(v)) saved_.emplace_back(v, old);
      unsetenv(v);
    }
    for (const auto& [k, v] : vars) setenv(k, v, 1);
  }
  ~environment() {
    for (const char* v : all) unsetenv(v);
    for (const auto& [k, v] : saved_) setenv(k.c_str(), v.c_str(), 1);
  }

 private:
  static constexpr const char* all[] = {
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
      "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "SLURM_LOCALID"};
  std::vector<std::pair<std::string, std::string>> saved_;
};

}  // namespace

TEST_CASE("a launcher's environment gives the rank, the job's size and the local rank") {
  {
    environment e{};
    CHECK_FALSE(comm::launch_environment().has_value());
  }
  {
    environment e{{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}};
    const auto at = comm::launch_environment();
    REQUIRE(at.has_value());
    CHECK(at->rank == 5);
    CHECK(at->size == 8);
    CHECK(at->local_rank == 1);
    CHECK(at->launcher == comm::launcher::torchrun);
    CHECK_FALSE(comm::launch_environment(/*mpi_only=*/true).has_value());
  }
  {
    environment e{{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "3"},
                  {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}};
    const auto at = comm::launch_environment(true);
    REQUIRE(at.has_value());
    CHECK((at->rank == 2 && at->size == 3 && at->local_rank == 0));
    CHECK(at->launcher == comm::launcher::open_mpi);
  }
  {  // PMI without a local rank: one node, the local rank is the rank; Slurm's local id
    environment e{{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}};
    CHECK(comm::launch_environment()->local_rank == 3);
  }
  {
    environment e{{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}, {"SLURM_LOCALID", "1"}};
    CHECK(comm::launch_environment()->local_rank == 1);
  }
  {  // torchrun's variables win over the MPI launcher's
    environment e{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "0"},
                  {"OMPI_COMM_WORLD_SIZE", "2"}};
    CHECK(comm::launch_environment()->launcher == comm::launcher::torchrun);
    CHECK(comm::launch_environment(true)->launcher == comm::launcher::open_mpi);
  }
}

TEST_CASE("a launcher's bad values are sentences naming the variables") {
  const auto error = [](std::initializer_list<std::pair<const char*, const char*>> vars) {
    environment e(vars);
    return error_of([] { (void)comm::launch_environment(); });
  };
  CHECK(error({{"RANK", "1"}}) == "torchrun sets RANK=1 but not WORLD_SIZE, the number of processes");
  CHECK(error({{"RANK", "4"}, {"WORLD_SIZE", "4"}}) ==
        "torchrun: RANK=4 is not a rank of a job of WORLD_SIZE=4 processes");
  CHECK(error({{"RANK", "one"}, {"WORLD_SIZE", "4"}}) ==
        "the environment variable RANK='one' is not a whole number ≥ 0");
  CHECK(error({{"RANK", "-1"}, {"WORLD_SIZE", "4"}}) ==
        "the environment variable RANK='-1' is not a whole number ≥ 0");
  CHECK(error({{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE: tp must be at least 1") == 0);
  CHECK(error({{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "7"}}) ==
        "PMI: the local rank 7 is not below the job's 2 processes");
}
