// host::team: ranks that stay alive between calls. Each call runs on every rank with the same
// communicator; state a rank keeps serves later calls (a layer built in one call runs in the
// next, equal to host::run's); a failure is rethrown as host::run rethrows it and spends the
// team; a rank returning while another waits for it is an error; sub-groups made in one call
// serve the next; a call from inside a rank's function is refused; OpenBLAS runs one thread per
// rank while a call runs unless told otherwise, and gets its count back after.

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../oracle.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/backend/host/team.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/style/colwise.hpp"

using namespace tpx;

TEST_CASE("a team runs many calls on the same ranks, communicators and threads") {
  for (const int tp : {1, 2, 3, 4}) {
    CAPTURE(tp);
    host::team team(tp);
    CHECK(team.size() == tp);
    std::vector<const host::communicator*> comm_of(static_cast<std::size_t>(tp));
    std::vector<std::thread::id> thread_of(static_cast<std::size_t>(tp));
    std::vector<int> calls(static_cast<std::size_t>(tp), 0);  // state each rank keeps
    for (int call = 0; call < 5; ++call)
      team.run([&](host::communicator& c) {
        const auto r = static_cast<std::size_t>(c.rank());
        CHECK(c.size() == tp);
        if (call == 0) {
          comm_of[r] = &c;
          thread_of[r] = std::this_thread::get_id();
        }
        CHECK(comm_of[r] == &c);
        CHECK(thread_of[r] == std::this_thread::get_id());
        ++calls[r];
        std::vector<double> v{double(c.rank() + 1), double(call)};
        c.all_reduce(std::span<double>(v));
        CHECK(v[0] == tp * (tp + 1) / 2.0);
        CHECK(v[1] == tp * call);
      });
    for (const int n : calls) CHECK(n == 5);
    CHECK(!team.spent());
  }
}

TEST_CASE("a layer built in one call of a team runs in the next, as host::run computes it") {
  const index_t out = 7, in = 5, tokens = 3;
  const test::dense w = test::random_dense(out, in, 1), x = test::random_dense(tokens, in, 2);
  const std::vector<double> b = test::random_dense(1, out, 3).v;
  using colwise = layer::linear<style::colwise_gathered, host::backend, double>;  // full y
  const layer::linear_options o{.name = "w", .out_features = out, .in_features = in};
  const auto forward = [&](colwise& l) {
    std::vector<double> y(static_cast<std::size_t>(tokens * out));
    l.forward(make_matrix<const double>(x.v.data(), tokens, in),
              make_matrix(y.data(), tokens, out));
    return y;
  };
  std::vector<double> want;
  host::run(3, [&](host::communicator& c) {
    host::gemm_engine engine;
    colwise l(engine, c, make_matrix<const double>(w.v.data(), out, in), b, o);
    const std::vector<double> y = forward(l);
    if (c.rank() == 0) want = y;
  });
  host::team team(3);
  std::vector<host::gemm_engine> engines(3);
  std::vector<std::optional<colwise>> layers(3);
  team.run([&](host::communicator& c) {
    const auto r = static_cast<std::size_t>(c.rank());
    layers[r].emplace(engines[r], c, make_matrix<const double>(w.v.data(), out, in), b, o);
  });
  for (int call = 0; call < 3; ++call)
    team.run([&](host::communicator& c) {
      CHECK(forward(*layers[static_cast<std::size_t>(c.rank())]) == want);
    });
  team.run([&](host::communicator& c) { layers[static_cast<std::size_t>(c.rank())].reset(); });
}

TEST_CASE("a failing call rethrows the cause with the other ranks' notes and spends the team") {
  host::team team(3);
  team.run([](host::communicator& c) { c.barrier(); });
  std::atomic<int> released{0};
  try {
    team.run([&](host::communicator& c) {
      if (c.rank() == 1) throw tpx::error("rank 1 cannot go on");
      try {
        c.barrier();
      } catch (...) {
        ++released;
        throw;
      }
    });
    FAIL("the call did not throw");
  } catch (const tpx::error& e) {
    CHECK(std::string(e.what()).find("rank 1 cannot go on") != std::string::npos);
  }
  CHECK(released == 2);
  CHECK(team.spent());
  CHECK_THROWS_WITH_AS(team.run([](host::communicator&) {}),
                       "host::team::run: the team is spent: an earlier call failed (rank 1 "
                       "cannot go on); make a new team",
                       tpx::error);
}

TEST_CASE("in a team, a rank returning while another waits for it in a collective is an error") {
  host::team team(2);
  CHECK_THROWS_WITH_AS(
      team.run([](host::communicator& c) {
        if (c.rank() == 0) c.barrier();
      }),
      doctest::Contains("rank 0 waits in barrier, but rank 1 has already returned"), tpx::error);
  CHECK(team.spent());
}

TEST_CASE("a team's ranks returning from one call start the next afresh, sub-groups too") {
  host::team team(4);
  std::vector<std::optional<host::communicator>> halves(4);
  team.run([&](host::communicator& c) {
    halves[static_cast<std::size_t>(c.rank())].emplace(c.split(c.rank() % 2, c.rank()));
  });
  for (int call = 0; call < 3; ++call)
    team.run([&](host::communicator& c) {
      host::communicator& h = *halves[static_cast<std::size_t>(c.rank())];
      CHECK(h.size() == 2);
      std::vector<int> v{c.rank()};
      h.all_reduce(std::span<int>(v));
      CHECK(v[0] == (c.rank() % 2 == 0 ? 0 + 2 : 1 + 3));
      c.barrier();
    });
  team.run([&](host::communicator& c) { halves[static_cast<std::size_t>(c.rank())].reset(); });
}

TEST_CASE("a call from inside a rank's function is refused, and refused options are sentences") {
  host::team team(2);
  CHECK_THROWS_WITH_AS(team.run([&](host::communicator&) { team.run([](host::communicator&) {}); }),
                       doctest::Contains("host::team::run: called from inside a rank's function"),
                       tpx::error);
  CHECK_THROWS_WITH_AS(host::team(0), "host::team: tp must be at least 1, got tp = 0", tpx::error);
  CHECK_THROWS_WITH_AS(host::team(2, {.blas_threads = -1}),
                       "host::team: blas_threads must be 0 (leave OpenBLAS as it is) or more, "
                       "got -1",
                       tpx::error);
}

TEST_CASE("OpenBLAS runs one thread per rank while several ranks run, then gets its count back") {
  if (!host::blas_threads_settable()) {
    MESSAGE("this CBLAS is not OpenBLAS: nothing to set");
    return;
  }
  const int before = *host::blas_threads();
  const auto during = [](auto&& run_ranks) {
    std::atomic<int> seen{-1};
    run_ranks([&](host::communicator& c) {
      if (c.rank() == 0) seen = *host::blas_threads();
    });
    return seen.load();
  };
  // The test runs with OPENBLAS_NUM_THREADS set (told otherwise: left alone) …
  const bool told = std::getenv("OPENBLAS_NUM_THREADS") != nullptr ||
                    std::getenv("GOTO_NUM_THREADS") != nullptr ||
                    std::getenv("OMP_NUM_THREADS") != nullptr;
  CHECK(host::blas_threads_for(2) == (told ? std::nullopt : std::optional<int>(1)));
  CHECK(host::blas_threads_for(1) == std::nullopt);
  // … so an explicit count shows the scope: set while the call runs, restored after. (Not under
  // ThreadSanitizer: more OpenBLAS threads start its pool, which is not built with TSan.)
#if defined(__SANITIZE_THREAD__)
  const int other = before;
#else
  const int other = before == 1 ? 2 : 1;
#endif
  host::team team(2, {.blas_threads = other});
  CHECK(during([&](auto fn) { team.run(fn); }) == other);
  CHECK(*host::blas_threads() == before);
  host::team leave(2, {.blas_threads = 0});
  CHECK(during([&](auto fn) { leave.run(fn); }) == before);
  CHECK(during([](auto fn) { host::run(2, fn); }) == (told ? before : 1));
  CHECK(*host::blas_threads() == before);
}
