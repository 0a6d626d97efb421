// Every collective of the host communicator, for every tp up to 8, with uneven and zero counts;
// results against values computed independently, and byte counters against their analytic values.

#include <doctest/doctest.h>

#include <numeric>
#include <vector>

#include "tpx/backend/host/communicator.hpp"
#include "tpx/shard/split.hpp"

using namespace tpx;
using comm::kind;

namespace {
/// The value rank r contributes at element i: distinct per rank and element, exact in float.
double value(int r, index_t i) {
  return 1000.0 * r + static_cast<double>(i) + 0.25;
}

/// Uneven per-rank counts: rank r holds (r · 3 + 1) % 5 elements (some ranks hold 0).
std::vector<index_t> uneven_counts(int tp) {
  std::vector<index_t> c;
  for (int r = 0; r < tp; ++r) c.push_back((r * 3 + 1) % 5);
  return c;
}

index_t offset_of(const std::vector<index_t>& c, int r) {
  return std::accumulate(c.begin(), c.begin() + r, index_t{0});
}
}  // namespace

TEST_CASE_TEMPLATE("all_reduce sums and maxes in place, identically on every rank", T, float,
                   double) {
  for (int tp = 1; tp <= 8; ++tp)
    for (const index_t n : {index_t{0}, index_t{1}, index_t{7}, index_t{1000}}) {
      std::vector<std::vector<T>> got(static_cast<std::size_t>(tp));
      std::vector<comm::stats> stats(static_cast<std::size_t>(tp));
      host::run(tp, [&](host::communicator& c) {
        std::vector<T> sum(static_cast<std::size_t>(n)), max(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i)
          sum[static_cast<std::size_t>(i)] = max[static_cast<std::size_t>(i)] =
              static_cast<T>(value(c.rank(), i) * (i % 2 ? -1 : 1));
        c.all_reduce(std::span<T>(sum));
        c.all_reduce(std::span<T>(max), comm::reduce_op::max);
        sum.insert(sum.end(), max.begin(), max.end());
        got[static_cast<std::size_t>(c.rank())] = sum;
        stats[static_cast<std::size_t>(c.rank())] = c.statistics();
      });
      for (int r = 0; r < tp; ++r) {
        CAPTURE(tp);
        CAPTURE(n);
        const auto& g = got[static_cast<std::size_t>(r)];
        for (index_t i = 0; i < n; ++i) {
          double s = 0, m = -1e300;
          for (int q = 0; q < tp; ++q) {
            const double v = static_cast<double>(static_cast<T>(value(q, i) * (i % 2 ? -1 : 1)));
            s += v;
            m = std::max(m, v);
          }
          CHECK(static_cast<double>(g[static_cast<std::size_t>(i)]) == doctest::Approx(s));
          CHECK(static_cast<double>(g[static_cast<std::size_t>(n + i)]) == m);
        }
        CHECK(g == got[0]);  // bit-identical on every rank
        const comm::counter ar = stats[static_cast<std::size_t>(r)][kind::all_reduce];
        CHECK(ar.calls == 2);
        CHECK(ar.bytes == 2 * n * static_cast<index_t>(sizeof(T)));
        CHECK(stats[static_cast<std::size_t>(r)].total_bytes() == ar.bytes);
      }
    }
}

TEST_CASE("all_gather concatenates uneven blocks in rank order") {
  for (int tp = 1; tp <= 8; ++tp) {
    const std::vector<index_t> counts = uneven_counts(tp);
    const index_t total = std::accumulate(counts.begin(), counts.end(), index_t{0});
    host::run(tp, [&](host::communicator& c) {
      std::vector<double> send;
      for (index_t i = 0; i < counts[static_cast<std::size_t>(c.rank())]; ++i)
        send.push_back(value(c.rank(), i));
      std::vector<double> recv(static_cast<std::size_t>(total), -1);
      c.all_gather(std::span<const double>(send), std::span<double>(recv), counts);
      for (int q = 0; q < tp; ++q)
        for (index_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i)
          if (recv[static_cast<std::size_t>(offset_of(counts, q) + i)] != value(q, i))
            fail("rank {}: element {} of rank {} is wrong", c.rank(), i, q);
      expect(c.statistics()[kind::all_gather].bytes == total * 8, "all_gather byte count");
    });
  }
}

TEST_CASE("reduce_scatter leaves each rank the sum of its block") {
  for (int tp = 1; tp <= 8; ++tp) {
    const std::vector<index_t> counts = uneven_counts(tp);
    const index_t total = std::accumulate(counts.begin(), counts.end(), index_t{0});
    std::vector<std::vector<double>> got(static_cast<std::size_t>(tp));
    std::vector<comm::counter> rs(static_cast<std::size_t>(tp));
    host::run(tp, [&](host::communicator& c) {
      std::vector<double> send;
      for (index_t i = 0; i < total; ++i) send.push_back(value(c.rank(), i));
      std::vector<double> recv(
          static_cast<std::size_t>(counts[static_cast<std::size_t>(c.rank())]));
      c.reduce_scatter(std::span<const double>(send), std::span<double>(recv), counts);
      got[static_cast<std::size_t>(c.rank())] = recv;
      rs[static_cast<std::size_t>(c.rank())] = c.statistics()[kind::reduce_scatter];
    });
    for (int r = 0; r < tp; ++r)
      for (index_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i) {
        double s = 0;
        for (int q = 0; q < tp; ++q) s += value(q, offset_of(counts, r) + i);
        CHECK(got[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)] == s);
      }
    for (const auto& c : rs) CHECK(c == comm::counter{1, total * 8});
  }
}

TEST_CASE("broadcast copies the root's buffer to every rank") {
  for (int tp = 1; tp <= 8; ++tp)
    for (int root = 0; root < tp; ++root)
      host::run(tp, [&](host::communicator& c) {
        std::vector<float> data(5);
        for (index_t i = 0; i < 5; ++i)
          data[static_cast<std::size_t>(i)] = static_cast<float>(value(c.rank(), i));
        c.broadcast(std::span<float>(data), root);
        for (index_t i = 0; i < 5; ++i)
          expect(data[static_cast<std::size_t>(i)] == static_cast<float>(value(root, i)),
                 "broadcast element {} on rank {}", i, c.rank());
        expect(c.statistics()[kind::broadcast] == comm::counter{1, 20}, "broadcast bytes");
      });
}

TEST_CASE("all_to_all_v routes uneven blocks, zero-sized ones included") {
  for (int tp = 1; tp <= 8; ++tp) {
    // Rank r sends (r + q) % 3 elements to rank q; the element values say who sent them to whom.
    const auto n = [](int from, int to) { return index_t{(from + to) % 3}; };
    host::run(tp, [&](host::communicator& c) {
      std::vector<index_t> send_counts, recv_counts;
      std::vector<double> send;
      for (int q = 0; q < tp; ++q) {
        send_counts.push_back(n(c.rank(), q));
        recv_counts.push_back(n(q, c.rank()));
        for (index_t i = 0; i < n(c.rank(), q); ++i)
          send.push_back(100.0 * c.rank() + 10.0 * q + i);
      }
      std::vector<double> recv(static_cast<std::size_t>(
          std::accumulate(recv_counts.begin(), recv_counts.end(), index_t{0})));
      c.all_to_all_v(std::span<const double>(send), send_counts, std::span<double>(recv),
                     recv_counts);
      std::size_t k = 0;
      index_t sent_to_others = 0;
      for (int q = 0; q < tp; ++q) {
        for (index_t i = 0; i < n(q, c.rank()); ++i)
          expect(recv[k++] == 100.0 * q + 10.0 * c.rank() + i, "all_to_all_v element from {}", q);
        if (q != c.rank()) sent_to_others += n(c.rank(), q);
      }
      expect(c.statistics()[kind::all_to_all].bytes == sent_to_others * 8,
             "all_to_all_v bytes: {} vs {}", c.statistics()[kind::all_to_all].bytes,
             sent_to_others * 8);
    });
  }
}

TEST_CASE("send and recv deliver messages in order, in both directions at once") {
  for (int tp = 2; tp <= 8; ++tp)
    host::run(tp, [&](host::communicator& c) {
      const int next = (c.rank() + 1) % tp, prev = (c.rank() + tp - 1) % tp;
      for (int m = 0; m < 3; ++m) {
        const std::vector<double> out(static_cast<std::size_t>(m + 1), 10.0 * c.rank() + m);
        c.send(std::span<const double>(out), next);
      }
      for (int m = 0; m < 3; ++m) {
        std::vector<double> in(static_cast<std::size_t>(m + 1));
        c.recv(std::span<double>(in), prev);
        for (double v : in) expect(v == 10.0 * prev + m, "message {} from rank {}", m, prev);
      }
      c.barrier();
      expect(c.statistics()[kind::send] == comm::counter{3, 48}, "send bytes");
      expect(c.statistics()[kind::recv] == comm::counter{3, 48}, "recv bytes");
      expect(c.statistics()[kind::barrier].calls == 1, "barrier calls");
    });
}

TEST_CASE("bus factors are the nccl-tests ones") {
  CHECK(comm::bus_factor(kind::all_reduce, 4) == doctest::Approx(1.5));
  CHECK(comm::bus_factor(kind::all_gather, 8) == doctest::Approx(7.0 / 8));
  CHECK(comm::bus_factor(kind::reduce_scatter, 2) == doctest::Approx(0.5));
  CHECK(comm::bus_factor(kind::all_reduce, 1) == 0.0);
}
