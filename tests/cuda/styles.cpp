// Every linear style on the cuda backend — cuBLASLt GEMMs, device buffers, the device-local
// communicator — against the host fp64 oracle for tp ∈ {1, 2, 4, 8}: shapes that divide and
// shapes that do not (empty shards included), packed gate|up and q|k|v, head-aligned GQA with
// replicated KV heads; in float (≤ 1e-5) and bfloat16 (≤ 2e-2). And a rank group's forward
// captured in one CUDA graph and replayed on new input.

#include <doctest/doctest.h>

#include <functional>
#include <tuple>
#include <vector>

#include "platform.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

using namespace tpx;
using P = test::cuda_platform;

using all_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                              style::rowwise_split, style::colwise_sp, style::rowwise_sp,
                              style::replicate<>, style::replicate_grad_all_reduce>;
using split_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                                style::rowwise_split, style::colwise_sp, style::rowwise_sp>;

namespace {
constexpr int group_sizes[] = {1, 2, 4, 8};

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 2e-2;
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("every style on the GPU reproduces the fp64 oracle", S, oracle) {
  const test::linear_case cases[] = {
      {.tokens = 16, .out = 64, .in = 32, .bias = true, .seed = 1},  // divides 1, 2, 4, 8
      {.tokens = 5, .out = 13, .in = 11, .bias = true, .seed = 2},   // divides nothing
      {.tokens = 3, .out = 5, .in = 7, .bias = false, .seed = 3},    // tp 8 > dims: empty shards
      {.tokens = 0, .out = 6, .in = 4, .bias = true, .seed = 4},     // no tokens
  };
  for (const test::linear_case& k : cases)
    for (const int tp : group_sizes) {
      CAPTURE(tp);
      CAPTURE(k.out);
      CAPTURE(k.in);
      test::expect_close(test::check_linear<S, float, P>(tp, k), tolerance<float>());
      test::expect_close(test::check_linear<S, __nv_bfloat16, P>(tp, k),
                         tolerance<__nv_bfloat16>());
    }
}
TEST_CASE_TEMPLATE_APPLY(oracle, all_styles);

TEST_CASE_TEMPLATE_DEFINE("packed and head-aligned splits on the GPU reproduce the oracle", S,
                          packed) {
  const std::vector<std::vector<shard::block>> packings = {{{7, 1}, {7, 1}},
                                                           {{12, 3}, {6, 3}, {6, 3}}};
  for (const auto& blocks : packings)
    for (const int tp : group_sizes) {
      index_t extent = 0;
      for (const shard::block& b : blocks) extent += b.size;
      test::linear_case k = test::on_split_dim<S>(extent, 6);
      k.blocks = blocks;
      CAPTURE(tp);
      CAPTURE(extent);
      test::expect_close(test::check_linear<S, float, P>(tp, k), tolerance<float>());
    }
  const shard::gqa attn{8, 2, 3};
  using make = std::function<shard::partition(int)>;
  std::vector<std::pair<index_t, make>> partitions = {
      {8 * 3, [&](int tp) { return attn.q_partition(tp); }}};
  if (S::split_dim == 0)  // fused qkv with KV heads replicated past n_kv = 2
    partitions.push_back({12 * 3, [&](int tp) { return attn.qkv_partition(tp); }});
  for (const auto& [extent, partition] : partitions)
    for (const int tp : group_sizes) {
      test::linear_case k = test::on_split_dim<S>(extent, 7);
      k.partition = partition;
      CAPTURE(tp);
      CAPTURE(extent);
      test::expect_close(test::check_linear<S, float, P>(tp, k), tolerance<float>());
      test::expect_close(test::check_linear<S, __nv_bfloat16, P>(tp, k),
                         tolerance<__nv_bfloat16>());
    }
}
TEST_CASE_TEMPLATE_APPLY(packed, split_styles);

TEST_CASE("a forward of every rank is captured in one CUDA graph and replayed on new input") {
  // rowwise with a split input: all-reduce of partial sums, bias once; tp = 4 over 13 features.
  const index_t tokens = 6, out = 9, in = 13;
  const int tp = 4;
  const test::dense w = test::random_dense(out, in, 11);
  const std::vector<double> b = test::random_dense(out, 1, 12).v;
  const std::vector<float> wf = test::whole<float>(w), bf(b.begin(), b.end());
  cuda::run_local(tp, [&](cuda::local_communicator& c) {
    cuda::gemm_engine engine(c.stream());
    layer::linear<style::rowwise_split, cuda::local_backend, float> lin(
        engine, c, make_matrix<const float>(wf.data(), out, in), bf,
        {.name = "graph.o_proj", .out_features = out, .in_features = in});
    cuda::device_buffer<float> x(static_cast<std::size_t>(tokens * in)),
        y(static_cast<std::size_t>(tokens * out));
    const auto run = [&] {
      lin.forward(make_matrix<const float>(x.data(), tokens, in),
                  make_matrix(y.data(), tokens, out));
    };
    const auto check = [&](std::uint64_t seed) {
      const test::dense xd = test::random_dense(tokens, in, seed);
      const test::dense want = test::linear_forward(xd, w, b);
      const std::vector<float> got = cuda::to_host(y.data(), y.size());
      CHECK(test::relative_error<float>(got, want, {0, tokens}, {0, out}) < 1e-5);
    };
    const auto load = [&](std::uint64_t seed) {
      const std::vector<float> xf = test::whole<float>(test::random_dense(tokens, in, seed));
      cuda::copy_to_device(std::span<const float>(xf), x.data());
      P::poison(y);
    };
    load(21);
    run();  // sizes scratch and caches the GEMM plans
    check(21);
    const std::int64_t gemms = engine.statistics().gemms;
    const std::shared_ptr<cuda::graph> g = c.capture(run);
    CHECK(g->nodes() > 0);
    CHECK(engine.statistics().gemms == gemms + 1);  // captured, not run: y is still the old one
    test::replay(c, *g, {22u, 23u}, load, check);
  });
}
