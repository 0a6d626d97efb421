// The device-local communicator: every collective against values computed on the host, with
// uneven and zero counts, in float and bfloat16, for tp ∈ {1, 2, 3, 4, 8}; the same byte counters
// as the host communicator; mismatches as errors on every rank; send/recv. The NCCL communicator
// at tp = 1 (one GPU): its collectives and a linear layer of each kind against the oracle.

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>

#include <unistd.h>
#include <vector>

#include "../error_of.hpp"
#include "../split_law.hpp"
#include "platform.hpp"
#include "tpx/backend/cuda/nccl.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/rowwise.hpp"

using namespace tpx;

namespace {

constexpr int group_sizes[] = {1, 2, 3, 4, 8};

/// Rank r's element i: small integers, exact in bfloat16 and in their sums.
float value(int r, index_t i) {
  return static_cast<float>((r + 1) * 3 - static_cast<int>(i % 5));
}

template <class T>
std::vector<T> values(int r, index_t n, index_t from = 0) {
  std::vector<T> v;
  for (index_t i = 0; i < n; ++i) v.push_back(T(value(r, from + i)));
  return v;
}

template <class T>
std::vector<float> floats(const std::vector<T>& v) {
  std::vector<float> out;
  for (const T& x : v) out.push_back(static_cast<float>(as_double(x)));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("device-local collectives move and reduce exactly what the host computes", T,
                   float, __nv_bfloat16) {
  for (const int tp : group_sizes) {
    CAPTURE(tp);
    std::vector<index_t> counts;  // uneven, with a zero when tp > 2
    for (int r = 0; r < tp; ++r) counts.push_back(r == 1 && tp > 2 ? 0 : 3 + r);
    const index_t total = std::accumulate(counts.begin(), counts.end(), index_t{0});
    cuda::run_local(tp, [&](cuda::local_communicator& c) {
      const int r = c.rank();
      const auto mine = static_cast<std::size_t>(r);
      // all_reduce: sum and max
      auto data = test::cuda_platform::store(values<T>(r, 7));
      c.all_reduce(data.span());
      std::vector<float> want(7, 0.0f);
      for (int q = 0; q < tp; ++q)
        for (index_t i = 0; i < 7; ++i) want[static_cast<std::size_t>(i)] += value(q, i);
      CHECK(floats(test::cuda_platform::load<T>(data.span())) == want);
      auto top = test::cuda_platform::store(values<T>(r, 4));
      c.all_reduce(top.span(), comm::reduce_op::max);
      CHECK(floats(test::cuda_platform::load<T>(top.span())) == floats(values<T>(tp - 1, 4)));

      // all_gather with uneven counts
      auto send = test::cuda_platform::store(values<T>(r, counts[mine]));
      cuda::device_buffer<T> gathered(static_cast<std::size_t>(total));
      test::cuda_platform::poison(gathered);
      c.all_gather(std::span<const T>(send.data(), send.size()), gathered.span(),
                   std::span<const index_t>(counts));
      std::vector<float> all;
      for (int q = 0; q < tp; ++q)
        for (const T& x : values<T>(q, counts[static_cast<std::size_t>(q)]))
          all.push_back(static_cast<float>(as_double(x)));
      CHECK(floats(test::cuda_platform::load<T>(gathered.span())) == all);

      // reduce_scatter with uneven counts
      auto full = test::cuda_platform::store(values<T>(r, total));
      cuda::device_buffer<T> block(static_cast<std::size_t>(counts[mine]));
      c.reduce_scatter(std::span<const T>(full.data(), full.size()), block.span(),
                       std::span<const index_t>(counts));
      index_t offset = 0;
      for (int q = 0; q < r; ++q) offset += counts[static_cast<std::size_t>(q)];
      std::vector<float> sums(static_cast<std::size_t>(counts[mine]), 0.0f);
      for (int q = 0; q < tp; ++q)
        for (std::size_t i = 0; i < sums.size(); ++i)
          sums[i] += value(q, offset + static_cast<index_t>(i));
      CHECK(floats(test::cuda_platform::load<T>(block.span())) == sums);

      // broadcast from the last rank
      auto b = test::cuda_platform::store(values<T>(r, 5));
      c.broadcast(b.span(), tp - 1);
      CHECK(floats(test::cuda_platform::load<T>(b.span())) == floats(values<T>(tp - 1, 5)));

      // all_to_all_v: rank r sends (r + q) % 3 elements to rank q
      std::vector<index_t> sc, rc;
      for (int q = 0; q < tp; ++q) {
        sc.push_back((r + q) % 3);
        rc.push_back((q + r) % 3);
      }
      const index_t ns = std::accumulate(sc.begin(), sc.end(), index_t{0});
      auto out = test::cuda_platform::store(values<T>(r, ns));
      cuda::device_buffer<T> in(
          static_cast<std::size_t>(std::accumulate(rc.begin(), rc.end(), index_t{0})));
      c.all_to_all_v(std::span<const T>(out.data(), out.size()), std::span<const index_t>(sc),
                     in.span(), std::span<const index_t>(rc));
      std::vector<float> expected;
      for (int q = 0; q < tp; ++q) {
        index_t from = 0;
        for (int s = 0; s < r; ++s) from += (q + s) % 3;
        for (const T& x : values<T>(q, (q + r) % 3, from))
          expected.push_back(static_cast<float>(as_double(x)));
      }
      CHECK(floats(test::cuda_platform::load<T>(in.span())) == expected);

      // send/recv around a ring
      if (tp > 1) {
        auto msg = test::cuda_platform::store(values<T>(r, 6));
        cuda::device_buffer<T> got(6);
        c.send(std::span<const T>(msg.data(), msg.size()), (r + 1) % tp);
        c.recv(got.span(), (r + tp - 1) % tp);
        CHECK(floats(test::cuda_platform::load<T>(got.span())) ==
              floats(values<T>((r + tp - 1) % tp, 6)));
      }
      c.barrier();

      // The host communicator's byte counters for the same calls.
      const comm::stats& st = c.statistics();
      CHECK(st[comm::kind::all_reduce].calls == 2);
      CHECK(st[comm::kind::all_reduce].bytes == 11 * static_cast<index_t>(sizeof(T)));
      CHECK(st[comm::kind::all_gather].bytes == total * static_cast<index_t>(sizeof(T)));
      CHECK(st[comm::kind::reduce_scatter].bytes == total * static_cast<index_t>(sizeof(T)));
      CHECK(st[comm::kind::barrier].calls == 1);
    });
  }
}

TEST_CASE("device-local split: sub-groups ordered by key, each rank on its own stream") {
  for (const int tp : {1, 2, 3, 4, 5}) {
    CAPTURE(tp);
    cuda::run_local(tp, [&](cuda::local_communicator& c) {
      const int r = c.rank(), n = c.size();
      const test::parity_place want(n, r);
      cuda::local_communicator sub = c.split(r % 2, -r);  // even and odd ranks, in reverse order
      CHECK(sub.size() == want.size);
      CHECK(sub.rank() == want.rank);
      CHECK(sub.stream() == c.stream());  // the rank's engine keeps its one stream
      auto data = test::cuda_platform::store(std::vector<float>{static_cast<float>(r)});
      sub.all_reduce(data.span());
      CHECK(test::cuda_platform::load<float>(data.span())[0] == static_cast<float>(want.rank_sum));
      auto all = test::cuda_platform::store(std::vector<float>{1.0f});
      c.all_reduce(all.span());  // the parent still works beside its sub-group
      CHECK(test::cuda_platform::load<float>(all.span())[0] == static_cast<float>(n));
    });
  }
}

TEST_CASE("a mismatched device-local collective is an error on every rank, not a hang") {
  const std::string message = test::error_of([] {
    cuda::run_local(3, [](cuda::local_communicator& c) {
      cuda::device_buffer<float> data(static_cast<std::size_t>(4 + (c.rank() == 2 ? 1 : 0)));
      c.all_reduce(data.span());
    });
  });
  CHECK(message.find("all_reduce: rank") != std::string::npos);
  CHECK(message.find("buffer of 5 elements") != std::string::npos);
}

namespace {

/// One GPU, one rank: the NCCL communicator from ncclCommInitAll.
struct nccl_platform : test::cuda_platform {
  using backend = cuda::nccl_backend;
  template <class Fn>
  static void run(int tp, Fn fn) {
    REQUIRE(tp == 1);
    cuda::stream s;
    const int device[] = {0};
    const cudaStream_t streams[] = {s.get()};
    std::vector<cuda::nccl_communicator> comms = cuda::init_all(device, streams);
    cuda::gemm_engine engine(s);
    cuda::check_streams(engine, comms[0]);
    fn(engine, comms[0]);
    s.synchronize();
  }
};

}  // namespace

TEST_CASE("the NCCL communicator at tp = 1: collectives and linear layers of every kind") {
  nccl_platform::run(1, [](cuda::gemm_engine&, cuda::nccl_communicator& c) {
    CHECK(c.rank() == 0);
    CHECK(c.size() == 1);
    auto data = test::cuda_platform::store(values<float>(0, 5));
    c.all_reduce(data.span());
    CHECK(test::cuda_platform::load<float>(data.span()) == values<float>(0, 5));
    const index_t counts[] = {5};
    cuda::device_buffer<float> out(5);
    c.all_gather(std::span<const float>(data.data(), 5), out.span(), counts);
    CHECK(test::cuda_platform::load<float>(out.span()) == values<float>(0, 5));
    c.reduce_scatter(std::span<const float>(data.data(), 5), out.span(), counts);
    CHECK(test::cuda_platform::load<float>(out.span()) == values<float>(0, 5));
    c.all_to_all_v(std::span<const float>(data.data(), 5), counts, out.span(), counts);
    CHECK(test::cuda_platform::load<float>(out.span()) == values<float>(0, 5));
    c.barrier();
    CHECK(c.statistics()[comm::kind::all_reduce].bytes == 20);
  });
  const test::linear_case k{.tokens = 9, .out = 13, .in = 11, .bias = true, .seed = 3};
  test::expect_close(test::check_linear<style::colwise<>, float, nccl_platform>(1, k), 1e-5);
  test::expect_close(test::check_linear<style::rowwise<>, float, nccl_platform>(1, k), 1e-5);
  test::expect_close(
      test::check_linear<style::colwise_gathered, __nv_bfloat16, nccl_platform>(1, k), 2e-2);
}

TEST_CASE("a launched process bootstraps its NCCL rank from the environment (one process)") {
  // As torchrun starts a job of one: the device by local rank, the id through a file.
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "1", 1);
  setenv("LOCAL_RANK", "0", 1);
  const std::string id_file = "tpx-nccl-id-" + std::to_string(::getpid());
  {
    cuda::process_rank p = cuda::process_rank::bootstrap(id_file);
    CHECK(p.comm.rank() == 0);
    CHECK(p.comm.size() == 1);
    CHECK(p.device == 0);
    auto data = test::cuda_platform::store(values<float>(0, 5));
    p.comm.all_reduce(data.span());
    p.stream.synchronize();
    CHECK(floats(test::cuda_platform::load(std::span<const float>(data.span()))) ==
          floats(values<float>(0, 5)));
  }
  std::remove(id_file.c_str());
  unsetenv("RANK");
  unsetenv("WORLD_SIZE");
  unsetenv("LOCAL_RANK");
}
