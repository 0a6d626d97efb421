// RMSNorm (replicated and sequence-parallel), the vocab-parallel embedding (plain and SP), its
// tied LM head and the vocab-parallel cross-entropy on the cuda backend — `cuda::ops` kernels,
// cuBLASLt, the device-local communicator — against the host fp64 oracle for tp ∈ {1, 2, 4, 8},
// in float (≤ 1e-5) and bfloat16 (≤ 2e-2), with widths past one thread block. And an SP norm's
// forward captured in one CUDA graph and replayed.

#include <doctest/doctest.h>

#include <vector>

#include "../vocab_harness.hpp"
#include "platform.hpp"

using namespace tpx;
using P = test::cuda_platform;

namespace {
constexpr int group_sizes[] = {1, 2, 4, 8};
}  // namespace

TEST_CASE_TEMPLATE("RMSNorm on the GPU, replicated and on token shards, reproduces the oracle", S,
                   style::replicate<>, style::sequence_parallel) {
  for (const int tp : group_sizes)
    for (const index_t tokens : {7, 16, 2, 0})
      for (const index_t hidden : {10, 300}) {  // 300: more columns than a block's threads
        CAPTURE(tp);
        CAPTURE(tokens);
        CAPTURE(hidden);
        CHECK(test::check_norm<S, float, P>(tp, tokens, hidden) < 1e-5);
        CHECK(test::check_norm<S, __nv_bfloat16, P>(tp, tokens, hidden) < 2e-2);
      }
}

TEST_CASE_TEMPLATE(
    "the vocab-parallel embedding, its tied head and the cross-entropy on the GPU reproduce the "
    "oracle",
    S, style::vocab_parallel<>, style::vocab_parallel_sp) {
  struct shape {
    index_t tokens, vocab, hidden;
  };
  for (const int tp : group_sizes)
    for (const shape s : {shape{9, 23, 6}, {8, 32, 6}, {3, 5, 6}, {33, 1000, 64}})
      for (const bool ignored : {false, true}) {
        CAPTURE(tp);
        CAPTURE(s.tokens);
        CAPTURE(s.vocab);
        CAPTURE(ignored);
        const test::lm_case k = test::make_lm_case(s.tokens, s.vocab, ignored, s.hidden);
        CHECK(test::check_tied_lm<S, float, P>(tp, k) < 1e-5);
        CHECK(test::check_tied_lm<S, __nv_bfloat16, P>(tp, k) < 2e-2);
      }
}

TEST_CASE("an SP RMSNorm's forward is captured in one CUDA graph and replayed on new input") {
  const index_t tokens = 11, hidden = 40;
  const int tp = 4;
  std::vector<double> w = test::random_dense(hidden, 1, 51).v;
  for (double& v : w) v += 1.5;
  const std::vector<float> wf(w.begin(), w.end());
  const shard::partition rows = shard::partition::split(tokens, tp, shard::split_kind::balanced);
  const shard::pieces all_cols{{{0, hidden}}};
  cuda::run_local(tp, [&](cuda::local_communicator& c) {
    layer::rms_norm<style::sequence_parallel, cuda::local_backend, float> norm(c, wf, 1e-6);
    const shard::interval mine = rows.of(c.rank()).parts[0];
    const std::size_t n = static_cast<std::size_t>(mine.size() * hidden);
    cuda::device_buffer<float> x(n), y(n);
    const auto load = [&](unsigned seed) {
      const auto xf =
          test::detail::take<float>(test::random_dense(tokens, hidden, seed), mine, all_cols);
      cuda::copy_to_device(std::span<const float>(xf), x.data());
      P::poison(y);
    };
    const auto check = [&](unsigned seed) {
      const test::dense want =
          test::rms_norm_forward(test::random_dense(tokens, hidden, seed), w, 1e-6);
      const std::vector<float> got = cuda::to_host(y.data(), y.size());
      CHECK(test::relative_error<float>(got, want, mine, {0, hidden}) < 1e-5);
    };
    const auto run = [&] {
      norm.forward(make_matrix<const float>(x.data(), mine.size(), hidden),
                   make_matrix(y.data(), mine.size(), hidden));
    };
    load(61);
    run();
    check(61);
    const std::shared_ptr<cuda::graph> g = c.capture(run);
    CHECK(g->nodes() > 0);
    test::replay(c, *g, {62u, 63u}, load, check);
  });
}
