// The MPI communicator on as many processes as the launcher started (the suite runs at
// np ∈ {1, 2, 3, 4}): every collective with uneven per-rank counts (zeros among them) against
// values every rank can compute, the byte counters against the host group's for the same calls,
// bit-identical all-reduce results on every rank, send/recv and its checks, split, and errors as
// sentences.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../error_of.hpp"
#include "../split_law.hpp"
#include "tpx/backend/host/communicator.hpp"
#include "tpx/backend/mpi/communicator.hpp"
#include "tpx/comm/launch.hpp"

using namespace tpx;
using test::error_of;

namespace {

/// What rank q holds at element i: exact in float and double.
double value(int q, index_t i) { return q * 1000.0 + static_cast<double>(i) + 0.25; }

/// Uneven per-rank counts with zeros: 1, 0, 2, 1, 0, 2, …
std::vector<index_t> uneven(int size) {
  std::vector<index_t> c;
  for (int q = 0; q < size; ++q) c.push_back((2 * q + 1) % 3);
  return c;
}

index_t offset_of(const std::vector<index_t>& counts, int q) {
  index_t at = 0;
  for (int s = 0; s < q; ++s) at += counts[static_cast<std::size_t>(s)];
  return at;
}

/// Runs every collective once on `c` with uneven counts, checks each result against the values
/// every rank holds, and returns the rank's counters.
template <class T, class Comm>
comm::stats exercise(Comm& c) {
  const int n = c.size(), r = c.rank();
  c.reset_statistics();
  // all-reduce, sum and max, on a buffer longer than the group and on one shorter.
  for (const index_t len : {index_t{7}, index_t{1}, index_t{0}}) {
    std::vector<T> sum(static_cast<std::size_t>(len)), max(sum.size());
    for (index_t i = 0; i < len; ++i) {
      sum[static_cast<std::size_t>(i)] = static_cast<T>(value(r, i));
      max[static_cast<std::size_t>(i)] = static_cast<T>(value((r + 1) % n, i));
    }
    c.all_reduce(std::span<T>(sum), comm::reduce_op::sum);
    c.all_reduce(std::span<T>(max), comm::reduce_op::max);
    for (index_t i = 0; i < len; ++i) {
      double want = 0;
      for (int q = 0; q < n; ++q) want += value(q, i);
      CHECK(sum[static_cast<std::size_t>(i)] == static_cast<T>(want));
      CHECK(max[static_cast<std::size_t>(i)] == static_cast<T>(value(n - 1, i)));
    }
  }
  const std::vector<index_t> counts = uneven(n);
  const index_t total = offset_of(counts, n);
  {  // all-gather
    std::vector<T> send, recv(static_cast<std::size_t>(total));
    for (index_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i)
      send.push_back(static_cast<T>(value(r, i)));
    c.all_gather(std::span<const T>(send), std::span<T>(recv), counts);
    for (int q = 0; q < n; ++q)
      for (index_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i)
        CHECK(recv[static_cast<std::size_t>(offset_of(counts, q) + i)] ==
              static_cast<T>(value(q, i)));
  }
  {  // reduce-scatter
    std::vector<T> send, recv(static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]));
    for (index_t i = 0; i < total; ++i) send.push_back(static_cast<T>(value(r, i)));
    c.reduce_scatter(std::span<const T>(send), std::span<T>(recv), counts, comm::reduce_op::sum);
    for (index_t i = 0; i < ssize(recv); ++i) {
      double want = 0;
      for (int q = 0; q < n; ++q) want += value(q, offset_of(counts, r) + i);
      CHECK(recv[static_cast<std::size_t>(i)] == static_cast<T>(want));
    }
  }
  for (int root = 0; root < n; ++root) {  // broadcast from every root
    std::vector<T> data(5);
    for (index_t i = 0; i < 5; ++i) data[static_cast<std::size_t>(i)] = static_cast<T>(value(r, i));
    c.broadcast(std::span<T>(data), root);
    for (index_t i = 0; i < 5; ++i) CHECK(data[static_cast<std::size_t>(i)] == static_cast<T>(value(root, i)));
  }
  {  // all-to-all-v: rank s sends (s + d) % 3 elements to rank d
    std::vector<index_t> send_counts, recv_counts;
    for (int q = 0; q < n; ++q) {
      send_counts.push_back((r + q) % 3);
      recv_counts.push_back((q + r) % 3);
    }
    std::vector<T> send, recv(static_cast<std::size_t>(offset_of(recv_counts, n)));
    for (int d = 0; d < n; ++d)
      for (index_t j = 0; j < send_counts[static_cast<std::size_t>(d)]; ++j)
        send.push_back(static_cast<T>(value(r, 100 * d + j)));
    c.all_to_all_v(std::span<const T>(send), send_counts, std::span<T>(recv), recv_counts);
    for (int s = 0; s < n; ++s)
      for (index_t j = 0; j < recv_counts[static_cast<std::size_t>(s)]; ++j)
        CHECK(recv[static_cast<std::size_t>(offset_of(recv_counts, s) + j)] ==
              static_cast<T>(value(s, 100 * r + j)));
  }
  {  // send / recv around the ring (to itself on one rank)
    const std::vector<T> out{static_cast<T>(value(r, 0)), static_cast<T>(value(r, 1))};
    std::vector<T> in(2);
    c.send(std::span<const T>(out), (r + 1) % n);
    c.recv(std::span<T>(in), (r + n - 1) % n);
    CHECK(in[1] == static_cast<T>(value((r + n - 1) % n, 1)));
  }
  c.barrier();
  return c.statistics();
}

template <class T>
void same_as_host_group() {
  mpi::communicator world = mpi::communicator::world();
  const comm::stats got = exercise<T>(world);
  // The same calls on a host group of as many thread ranks: this rank's counters must be equal.
  comm::stats want;
  host::run(world.size(), [&](host::communicator& c) {
    const comm::stats s = exercise<T>(c);
    if (c.rank() == world.rank()) want = s;
  });
  for (int k = 0; k < comm::kind_count; ++k) {
    CAPTURE(comm::name(static_cast<comm::kind>(k)));
    CHECK(got.by_kind[static_cast<std::size_t>(k)] == want.by_kind[static_cast<std::size_t>(k)]);
  }
}

}  // namespace

TEST_CASE("every collective over MPI gives each rank its values and counts the host group's bytes") {
  same_as_host_group<double>();
  same_as_host_group<float>();
}

TEST_CASE("a floating-point sum over MPI is bit-identical on every rank") {
  mpi::communicator world = mpi::communicator::world();
  const int n = world.size();
  for (const index_t len : {index_t{1001}, index_t{3}}) {
    std::vector<std::vector<double>> all(static_cast<std::size_t>(n));
    for (int q = 0; q < n; ++q) {  // every rank's input, so each can compute the exact sum
      std::mt19937_64 gen(1234 + static_cast<std::uint64_t>(q));
      std::uniform_real_distribution<double> u(-1.0, 1.0);
      for (index_t i = 0; i < len; ++i) all[static_cast<std::size_t>(q)].push_back(u(gen) * 1e3);
    }
    std::vector<double> mine = all[static_cast<std::size_t>(world.rank())];
    world.all_reduce(std::span<double>(mine));
    for (index_t i = 0; i < len; ++i) {
      double exact = 0;
      for (int q = 0; q < n; ++q) exact += all[static_cast<std::size_t>(q)][static_cast<std::size_t>(i)];
      CHECK(std::abs(mine[static_cast<std::size_t>(i)] - exact) <= 1e-12 * 1e3 * n);
    }
    std::vector<double> everyone(static_cast<std::size_t>(len * n));
    world.all_gather(std::span<const double>(mine), std::span<double>(everyone),
                     std::vector<index_t>(static_cast<std::size_t>(n), len));
    for (int q = 1; q < n; ++q)
      CHECK(std::memcmp(everyone.data(), everyone.data() + q * len,
                        static_cast<std::size_t>(len) * sizeof(double)) == 0);
  }
}

TEST_CASE("recv over MPI checks the element type and count of the message") {
  mpi::communicator world = mpi::communicator::world();
  const int n = world.size(), r = world.rank(), to = (r + 1) % n, from = (r + n - 1) % n;
  const std::vector<double> three{1, 2, 3};
  world.send(std::span<const double>(three), to);
  std::vector<float> as_float(3);
  CHECK(error_of([&] { world.recv(std::span<float>(as_float), from); }) ==
        fmt::format("recv: rank {} expects elements of another type than rank {} sent", r, from));
  std::vector<double> two(2);
  CHECK(error_of([&] { world.recv(std::span<double>(two), from); }) ==
        fmt::format("recv: rank {} expects 2 elements from rank {}, but the message holds 3", r,
                    from));
  std::vector<double> got(3);  // the message is still there, whole
  world.recv(std::span<double>(got), from);
  CHECK(got == three);
  CHECK(error_of([&] { world.send(std::span<const double>(three), n); })
            .find("mpi send peer") != std::string::npos);
}

TEST_CASE("split makes sub-groups ordered by key, each running its own collectives") {
  mpi::communicator world = mpi::communicator::world();
  const int r = world.rank();
  (void)test::check_parity_split(world);
  CHECK(world.statistics()[comm::kind::all_reduce].calls == 0);
  CHECK(error_of([&] { (void)world.split(-1, 0); }) ==
        fmt::format("mpi split: rank {} passed the color -1; colors are ≥ 0", r));
}

TEST_CASE("a rank's own bad arguments are sentences before anything reaches MPI") {
  mpi::communicator world = mpi::communicator::world();
  const int n = world.size(), r = world.rank();
  std::vector<double> send(3), recv(static_cast<std::size_t>(3 * n));
  const std::vector<index_t> counts(static_cast<std::size_t>(n), 2);
  CHECK(error_of([&] {
          world.all_gather(std::span<const double>(send), std::span<double>(recv), counts);
        }) == fmt::format("all_gather: rank {} passed a send buffer of 3 elements, but counts[{}] = 2",
                          r, r));
  CHECK(error_of([&] {
          world.all_gather(std::span<const double>(send), std::span<double>(recv),
                           std::vector<index_t>(static_cast<std::size_t>(n + 1), 1));
        }).find("passed " + std::to_string(n + 1) + " per-rank counts for a group of") !=
        std::string::npos);
  CHECK(error_of([&] { world.broadcast(std::span<double>(send), n); }).find("broadcast root") !=
        std::string::npos);
  // MPI's own errors carry the call, the place and MPI's words.
  const std::string e = error_of([] { TPX_MPI(MPI_ERR_COUNT); });
  CHECK(e.find("MPI: MPI_ERR_COUNT failed at collectives.cpp:") == 0);
  CHECK(e.find("count") != std::string::npos);
}

TEST_CASE("agreed: when one rank's step fails, every rank throws the cause") {
  mpi::communicator world = mpi::communicator::world();
  const int n = world.size(), r = world.rank();
  mpi::agreed(world, [] {});  // nobody fails: nothing thrown
  const int cause = n - 1;
  std::string message;
  bool peer = false;
  try {
    mpi::agreed(world, [&] {
      if (r >= cause) fail("rank {} cannot read its shard", r);
    });
  } catch (const peer_error& e) {
    peer = true;
    message = e.what();
  } catch (const error& e) {
    message = e.what();
  }
  CHECK(message == fmt::format("rank {} cannot read its shard", cause));
  CHECK(peer == (r != cause && r != 0));
}

TEST_CASE("the launcher's environment names each process's rank in the world") {
  mpi::communicator world = mpi::communicator::world();
  REQUIRE(mpi::launched());
  const auto at = comm::launch_environment(/*mpi_only=*/true);
  REQUIRE(at.has_value());
  CHECK(at->rank == world.rank());
  CHECK(at->size == world.size());
  CHECK(at->local_rank == world.rank());  // one node
}
