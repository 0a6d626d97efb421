// The host group never hangs and never reads out of bounds: every mismatch between ranks is a
// tpx::error on every rank, a failing rank releases the others, and run() rethrows the cause.

#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../harness.hpp"
#include "../split_law.hpp"
#include "tpx/backend/host/communicator.hpp"

using namespace tpx;

namespace {}  // namespace

TEST_CASE("run refuses a group of fewer than one rank") {
  CHECK_THROWS_WITH_AS(host::run(0, [](host::communicator&) {}),
                       "host::run: tp must be at least 1, got tp = 0", tpx::error);
}

TEST_CASE("ranks passing all_reduce buffers of different sizes all get an error") {
  std::atomic<int> errors{0};
  const std::string what = test::error_of(4, [&](host::communicator& c) {
    std::vector<float> data(c.rank() == 2 ? 5 : 4);
    try {
      c.all_reduce(std::span<float>(data));
    } catch (const tpx::error&) {
      ++errors;
      throw;
    }
  });
  CHECK(errors == 4);
  CHECK(what.find("all_reduce: rank") != std::string::npos);
  CHECK(what.find("buffer of 5 elements") != std::string::npos);
  CHECK(what.find("every rank must pass the same") != std::string::npos);
}

TEST_CASE("a send buffer that disagrees with its count is an error naming rank and sizes") {
  const std::string what = test::error_of(3, [](host::communicator& c) {
    const std::vector<index_t> counts{2, 2, 2};
    std::vector<double> send(c.rank() == 1 ? 3 : 2), recv(6);
    c.all_gather(std::span<const double>(send), std::span<double>(recv), counts);
  });
  CHECK(what == "all_gather: rank 1 passed a send buffer of 3 elements, but counts[1] = 2");
}

TEST_CASE("ranks disagreeing on per-rank counts get an error, not a wrong gather") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    const std::vector<index_t> counts =
        c.rank() == 0 ? std::vector<index_t>{1, 3} : std::vector<index_t>{2, 2};
    std::vector<double> send(static_cast<std::size_t>(counts[static_cast<std::size_t>(c.rank())])),
        recv(4);
    c.all_gather(std::span<const double>(send), std::span<double>(recv), counts);
  });
  CHECK(what.find("every rank must pass the same counts") != std::string::npos);
}

TEST_CASE("ranks calling different collectives get an error") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    std::vector<float> data(4);
    if (c.rank() == 0)
      c.all_reduce(std::span<float>(data));
    else
      c.broadcast(std::span<float>(data), 0);
  });
  CHECK(what.find("every rank must make the same collective calls") != std::string::npos);
}

TEST_CASE("ranks passing different element types get an error") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    std::vector<float> f(4);
    std::vector<double> d(4);
    if (c.rank() == 0)
      c.all_reduce(std::span<float>(f));
    else
      c.all_reduce(std::span<double>(d));
  });
  CHECK(what.find("every rank must use the same element type") != std::string::npos);
}

TEST_CASE("a rank that throws releases the others and its error is rethrown") {
  for (int tp : {2, 3, 8}) {
    CHECK_THROWS_WITH_AS(host::run(tp,
                                   [](host::communicator& c) {
                                     if (c.rank() == c.size() - 1) throw std::runtime_error("boom");
                                     std::vector<float> data(8);
                                     c.all_reduce(std::span<float>(data));  // would wait forever
                                   }),
                         "boom", std::runtime_error);
  }
}

TEST_CASE("run rethrows the rank's own error, not a bystander's report of it") {
  // Rank 2 fails at its own work; every other rank learns of it from a collective and throws a
  // peer_error naming rank 2. Whichever arrives first, run rethrows rank 2's error, with the
  // others' messages as its notes, in rank order.
  for (int round = 0; round < 50; ++round) {
    try {
      host::run(4, [](host::communicator& c) {
        std::vector<int> failed{c.rank() == 2 ? 1 : 0};
        c.all_reduce(std::span<int>(failed), comm::reduce_op::max);
        if (c.rank() == 2) fail("rank 2: the shard of 'w' is short");
        if (failed[0] != 0)
          throw peer_error(fmt::format("rank {} heard that rank 2 failed", c.rank()));
      });
      FAIL("no error");
    } catch (const peer_error&) {
      FAIL("a bystander's error was rethrown");
    } catch (const error& e) {
      CHECK(std::string(e.what()) == "rank 2: the shard of 'w' is short");
      REQUIRE(e.notes().size() == 3);
      CHECK(e.notes()[0] == "rank 0: rank 0 heard that rank 2 failed");
      CHECK(e.notes()[1] == "rank 1: rank 1 heard that rank 2 failed");
      CHECK(e.notes()[2] == "rank 3: rank 3 heard that rank 2 failed");
    }
  }
  // Every rank refuses with the same sentence (a check of the config, say): it is said once, with
  // one note naming the ranks that repeat it; distinct messages keep a note each.
  try {
    host::run(4, [](host::communicator& c) {
      if (c.rank() == 2) fail("rank 2 alone");
      fail("6 heads do not divide over tp {}", c.size());
    });
    FAIL("no error");
  } catch (const error& e) {
    CHECK(std::string(e.what()) == "6 heads do not divide over tp 4");
    REQUIRE(e.notes().size() == 2);
    CHECK(e.notes()[0] == "ranks 1, 3: the same");
    CHECK(e.notes()[1] == "rank 2: rank 2 alone");
  }
  // Two ranks fail at their own work: the lower rank's error is the one rethrown.
  CHECK_THROWS_WITH_AS(host::run(3,
                                 [](host::communicator& c) {
                                   c.barrier();
                                   if (c.rank() > 0) fail("rank {} failed", c.rank());
                                 }),
                       "rank 1 failed", error);
  // Only bystanders' errors: the lowest rank's is rethrown.
  CHECK_THROWS_WITH_AS(host::run(3,
                                 [](host::communicator& c) {
                                   c.barrier();
                                   throw peer_error(fmt::format("peer {}", c.rank()));
                                 }),
                       "peer 0", peer_error);
}

#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
TEST_CASE("a rank whose thread cannot start releases the ranks already running") {
  // In a child process whose address space is capped a little above what it uses, so that the
  // stacks of 32 threads cannot all be mapped: run must come back with a sentence, not hang.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::ifstream statm("/proc/self/statm");
    long pages = 0;
    statm >> pages;
    const rlim_t cap = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) +
                       (rlim_t{48} << 20);
    const rlimit limit{cap, cap};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) ::_exit(3);
    try {
      host::run(32, [](host::communicator& c) { c.barrier(); });
    } catch (const error& e) {
      ::_exit(std::string(e.what()).find("host::run: cannot start the thread of rank") == 0 ? 0
                                                                                            : 1);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(4);  // every thread started: the cap was too loose to test anything
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

TEST_CASE("a rank that returns early is reported to the ranks still waiting for it") {
  const std::string what = test::error_of(3, [](host::communicator& c) {
    if (c.rank() == 1) return;
    c.barrier();
  });
  CHECK(what.find("rank 1 has already returned from its function") != std::string::npos);
}

TEST_CASE("recv from a rank that returned without sending is an error") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    if (c.rank() == 0) return;
    std::vector<float> in(2);
    c.recv(std::span<float>(in), 0);
  });
  CHECK(what ==
        "rank 1 waits in recv for a message from rank 0, which has returned from its "
        "function without sending it");
}

TEST_CASE("a recv no rank can ever satisfy is a deadlock sentence, not a hang") {
  for (int round = 0; round < 20; ++round) {
    // From itself, with nothing sent first.
    CHECK_THROWS_WITH_AS(host::run(1,
                                   [](host::communicator& c) {
                                     std::vector<float> x(2);
                                     c.recv(std::span<float>(x), 0);
                                   }),
                         doctest::Contains("rank 0 waits in recv for a message from itself"),
                         error);
    // recv against recv: each waits for the other to send first.
    CHECK_THROWS_WITH_AS(host::run(2,
                                   [](host::communicator& c) {
                                     std::vector<float> x(2);
                                     c.recv(std::span<float>(x), 1 - c.rank());
                                     c.send(std::span<const float>(x), 1 - c.rank());
                                   }),
                         doctest::Contains("each waits for the other to send first"), error);
    // recv against a collective, through a chain: 0 waits for 1, 1 for 2, 2 is in all_reduce.
    const std::string what = test::error_of(3, [](host::communicator& c) {
      std::vector<float> x(2);
      if (c.rank() < 2) {
        c.recv(std::span<float>(x), c.rank() + 1);
        if (c.rank() > 0) c.send(std::span<const float>(x), c.rank() - 1);
      }
      c.all_reduce(std::span<float>(x));
      if (c.rank() == 2) c.send(std::span<const float>(x), 1);
    });
    CHECK(what.find("from rank 2, which waits in all_reduce for every rank: a deadlock") !=
          std::string::npos);
  }
  // Not a deadlock: the sender is still working when the receiver starts waiting, and a chain
  // unwinds once its last rank sends.
  for (int round = 0; round < 20; ++round) {
    std::vector<float> got(3);
    host::run(3, [&](host::communicator& c) {
      std::vector<float> x(2, static_cast<float>(c.rank()));
      if (c.rank() == 2) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        c.send(std::span<const float>(x), 1);
      } else {
        c.recv(std::span<float>(x), c.rank() + 1);
        if (c.rank() == 1) c.send(std::span<const float>(x), 0);
      }
      got[static_cast<std::size_t>(c.rank())] = x[0];
      c.all_reduce(std::span<float>(x));
    });
    CHECK(got == std::vector<float>{2, 2, 2});
  }
  // Not a deadlock: the last rank into a collective goes on to recv from a rank the collective
  // released but the scheduler has not run yet (it was taken for one still in the collective;
  // found by the mpi suite, which runs this sequence on a host group of two).
  for (int round = 0; round < 200; ++round)
    host::run(2, [](host::communicator& c) {
      std::vector<float> x(2, 1.0f);
      c.all_reduce(std::span<float>(x));
      c.send(std::span<const float>(x), 1 - c.rank());
      c.recv(std::span<float>(x), 1 - c.rank());
      CHECK(x[0] == 2.0f);
    });
}

TEST_CASE("recv of a message of another size is an error") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    std::vector<float> buf(c.rank() == 0 ? 3 : 2);
    if (c.rank() == 0)
      c.send(std::span<const float>(buf), 1);
    else
      c.recv(std::span<float>(buf), 0);
  });
  CHECK(what == "recv: rank 1 expects 2 elements from rank 0, but the message holds 3");
}

TEST_CASE("all_to_all_v with counts the peers do not expect is an error") {
  const std::string what = test::error_of(2, [](host::communicator& c) {
    const std::vector<index_t> send_counts{1, 1};
    const std::vector<index_t> recv_counts =
        c.rank() == 0 ? std::vector<index_t>{1, 2} : std::vector<index_t>{1, 1};
    std::vector<double> send(2), recv(static_cast<std::size_t>(recv_counts[0] + recv_counts[1]));
    c.all_to_all_v(std::span<const double>(send), send_counts, std::span<double>(recv),
                   recv_counts);
  });
  CHECK(what ==
        "all_to_all_v: rank 1 sends 1 elements to rank 0, but rank 0 expects 2 from rank 1");
}

TEST_CASE("a count list of the wrong length and a bad root are errors") {
  CHECK(test::error_of(2, [](host::communicator& c) {
          const std::vector<index_t> counts{1};
          std::vector<double> send(1), recv(1);
          c.all_gather(std::span<const double>(send), std::span<double>(recv), counts);
        }).find("passed 1 per-rank counts for a group of 2 ranks") != std::string::npos);
  CHECK(test::error_of(2, [](host::communicator& c) {
          std::vector<double> d(1);
          c.broadcast(std::span<double>(d), 2);
        }) == "broadcast root: rank 2 is outside the group of tp = 2 ranks (0 ≤ rank < tp)");
}

TEST_CASE("the group is reusable after an error: a new run starts clean") {
  CHECK_THROWS(host::run(2, [](host::communicator&) { throw tpx::error("first"); }));
  std::atomic<int> ok{0};
  host::run(2, [&](host::communicator& c) {
    std::vector<double> d{1.0};
    c.all_reduce(std::span<double>(d));
    if (d[0] == 2.0) ++ok;
  });
  CHECK(ok == 2);
}

TEST_CASE("a sum against a max is reported as the operators, not the buffers") {
  const std::string what = test::error_of(3, [&](host::communicator& c) {
    std::vector<float> data(4, 1.0f);
    c.all_reduce(std::span<float>(data),
                 c.rank() == 1 ? comm::reduce_op::max : comm::reduce_op::sum);
  });
  CHECK(what.find("passes a reduction operator") != std::string::npos);
  CHECK(what.find("max") != std::string::npos);
  CHECK(what.find("sum") != std::string::npos);
}

TEST_CASE("ranks that catch a mismatch and go on read every message from the mismatched call") {
  // Each rank composes its message before the error barrier; past it a rank may post its next
  // call, which must not leak into another rank's message (ThreadSanitizer saw that race).
  for (int round = 0; round < 50; ++round) {
    std::vector<std::string> messages(4);
    host::run(4, [&](host::communicator& c) {
      std::vector<float> data(c.rank() == 2 ? 5 : 4);
      try {
        c.all_reduce(std::span<float>(data));
      } catch (const tpx::error& e) {
        messages[static_cast<std::size_t>(c.rank())] = e.what();
      }
      std::vector<float> next(7);  // the next call, with another size, on every rank
      c.all_reduce(std::span<float>(next));
    });
    for (const std::string& m : messages) {
      CAPTURE(m);
      CHECK(m.find("buffer of 5 elements") != std::string::npos);
      CHECK(m.find("7 elements") == std::string::npos);
    }
  }
}

TEST_CASE("split makes sub-groups ordered by key, each running its own collectives") {
  for (int tp = 1; tp <= 5; ++tp) {
    CAPTURE(tp);
    host::run(tp, [&](host::communicator& c) {
      const int n = c.size(), r = c.rank();
      host::communicator sub = test::check_parity_split(c);
      // A second split while the first sub-group lives: every sub-group and the parent work.
      host::communicator alone = c.split(r, 0);
      CHECK(alone.size() == 1);
      CHECK(alone.rank() == 0);
      std::vector<double> all{static_cast<double>(r)};
      c.all_reduce(std::span<double>(all));
      alone.all_reduce(std::span<double>(all));
      sub.barrier();
      CHECK(all[0] == n * (n - 1) / 2);
      CHECK(c.statistics()[comm::kind::all_reduce].calls == 1);
    });
  }
}

TEST_CASE("split's errors: a negative color, and a rank calling something else") {
  CHECK(test::error_of(2, [](host::communicator& c) { (void)c.split(c.rank() - 1, 0); }) ==
        "host split: rank 0 passed the color -1; colors are ≥ 0");
  const std::string what = test::error_of(2, [](host::communicator& c) {
    if (c.rank() == 0)
      (void)c.split(0, 0);
    else
      c.barrier();
  });
  CHECK(what.find("rank 0 calls split while rank 1 calls barrier") != std::string::npos);
}

TEST_CASE("a rank that fails or returns releases the ranks waiting in its sub-group") {
  CHECK_THROWS_WITH_AS(host::run(4,
                                 [](host::communicator& c) {
                                   host::communicator sub = c.split(c.rank() / 2, 0);
                                   if (c.rank() == 3) throw std::runtime_error("boom");
                                   std::vector<float> data(8);
                                   sub.all_reduce(std::span<float>(data));  // rank 2 would wait
                                 }),
                       "boom", std::runtime_error);
  const std::string what = test::error_of(4, [](host::communicator& c) {
    host::communicator sub = c.split(c.rank() / 2, 0);
    if (c.rank() == 1) return;
    sub.barrier();
  });
  CHECK(what.find("rank 1 has already returned from its function") != std::string::npos);
}
