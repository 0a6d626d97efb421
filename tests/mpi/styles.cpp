// The style laws with ranks as processes: every linear style, the packed and head-aligned
// partitions, the four MoE expert modes and whole decoder layers (Llama and Mixtral, TP, TP+SP,
// masked and all-to-all EP), forward and backward, against the same fp64 oracle
// as the thread suite, with tp = the number of processes the launcher started. Each process
// checks its own rank's y, dx and gradients; the job fails when any rank fails.

#include <doctest/doctest.h>

#include <functional>
#include <tuple>
#include <vector>

#include "../decoder_harness.hpp"
#include "../experts_harness.hpp"
#include "../linear_harness.hpp"
#include "tpx/backend/mpi/backend.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/moe_experts.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

using namespace tpx;
using shard::split_kind;

namespace {

/// The harnesses' platform for MPI: host memory, one rank per process, over MPI_COMM_WORLD.
struct mpi_platform : test::host_platform {
  using backend = mpi::backend;
  /// Runs `fn(engine, comm)` as this process's rank; `tp` must be the number of processes.
  template <class Fn>
  static void run(int tp, Fn fn) {
    mpi::communicator world = mpi::communicator::world();
    REQUIRE(tp == world.size());
    host::gemm_engine engine;
    fn(engine, world);
  }
};

int processes() { return mpi::communicator::world().size(); }

void expect_close(const std::vector<test::linear_errors>& errors, double tolerance) {
  for (const test::linear_errors& e : errors)
    for (const double v : e) CHECK(v < tolerance);
}

using all_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                              style::rowwise_split, style::colwise_sp, style::rowwise_sp,
                              style::replicate<>, style::replicate_grad_all_reduce>;
using split_styles = std::tuple<style::colwise<>, style::colwise_gathered, style::rowwise<>,
                                style::rowwise_split, style::colwise_sp, style::rowwise_sp>;

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("every style over MPI processes reproduces the fp64 oracle", S, oracle) {
  const int tp = processes();
  const test::linear_case cases[] = {
      {.tokens = 6, .out = 16, .in = 8, .bias = true},
      {.tokens = 5, .out = 13, .in = 11, .bias = true},  // divides nothing
      {.tokens = 3, .out = 2, .in = 3, .bias = false},   // tp 3, 4 > a dim: empty shards
      {.tokens = 0, .out = 6, .in = 4, .bias = true},    // no tokens
  };
  for (test::linear_case k : cases)
    for (const split_kind kind : {split_kind::even, split_kind::balanced, split_kind::chunk}) {
      k.split = kind;
      if (!S::can_implement(extents<2>{{k.out, k.in}}, tp, kind)) continue;
      CAPTURE(k.tokens);
      CAPTURE(k.out);
      CAPTURE(k.in);
      CAPTURE(shard::name(kind));
      expect_close(test::check_linear<S, double, mpi_platform>(tp, k), 1e-13);
    }
  const test::linear_case single{.tokens = 17, .out = 37, .in = 29, .bias = true, .seed = 7};
  expect_close(test::check_linear<S, float, mpi_platform>(tp, single), 1e-5);
}
TEST_CASE_TEMPLATE_APPLY(oracle, all_styles);

TEST_CASE_TEMPLATE_DEFINE("packed and head-aligned splits over MPI processes reproduce the oracle",
                          S, partitions) {
  const int tp = processes();
  for (const std::vector<shard::block>& blocks :
       std::vector<std::vector<shard::block>>{{{7, 1}, {7, 1}}, {{12, 3}, {6, 3}, {6, 3}}}) {
    test::linear_case k = test::on_split_dim<S>(blocks[0].size + blocks[1].size +
                                           (blocks.size() > 2 ? blocks[2].size : 0),
                                       6);
    k.blocks = blocks;
    expect_close(test::check_linear<S, double, mpi_platform>(tp, k), 1e-13);
  }
  const shard::gqa attn{8, 2, 3};  // tp 3 and 4 replicate KV heads
  if (!attn.can_implement(tp)) return;
  std::vector<std::pair<index_t, std::function<shard::partition(int)>>> parts = {
      {8 * 3, [&](int n) { return attn.q_partition(n); }}};
  if (S::split_dim == 0) parts.push_back({12 * 3, [&](int n) { return attn.qkv_partition(n); }});
  for (const auto& [extent, partition] : parts) {
    test::linear_case k = test::on_split_dim<S>(extent, 7);
    k.partition = partition;
    CAPTURE(extent);
    expect_close(test::check_linear<S, double, mpi_platform>(tp, k), 1e-13);
  }
}
TEST_CASE_TEMPLATE_APPLY(partitions, split_styles);

TEST_CASE_TEMPLATE("MoE experts over MPI processes reproduce the oracle in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  const int tp = processes();
  for (const test::experts_case& k : test::experts_cases()) {
    if (S::expert_parallel && k.experts % tp != 0) continue;  // ep must divide E
    CAPTURE(k.tokens);
    CHECK(test::check_experts<S, double, mpi_platform>(tp, k) < 1e-12);
    CHECK(test::check_experts<S, float, mpi_platform>(tp, k) < 1e-5);
  }
}

namespace {
template <layer::block_mode M, class T>
using llama = layer::llama_layer<M, mpi::backend, T>;
template <layer::block_mode M, class T, class E = typename layer::block_styles<M>::moe_tp>
using mixtral = layer::mixtral_layer<M, mpi::backend, T, E>;

/// A block whose heads every np of the suite serves: KV heads split (np 1, 2, 3) or replicated
/// on two ranks each (np 4).
test::block_case block_for(int tp, bool moe) {
  return {.heads = {12, tp == 3 ? 3 : 2, 2}, .moe = moe, .experts = 12};
}
}  // namespace

TEST_CASE_TEMPLATE("decoder layers over MPI processes reproduce the oracle: y, dx, every gradient",
                   L, llama<layer::block_mode::tensor, double>,
                   llama<layer::block_mode::sequence, double>,
                   mixtral<layer::block_mode::tensor, double>,
                   mixtral<layer::block_mode::sequence, double>,
                   mixtral<layer::block_mode::tensor, double, style::moe_masked>,
                   mixtral<layer::block_mode::sequence, double, style::moe_all_to_all>) {
  const int tp = processes();
  const bool moe = !std::is_same_v<typename L::ffn_type,
                                   layer::swiglu_mlp<L::mode, mpi::backend, double>>;
  test::block_case k = block_for(tp, moe);
  CHECK(test::check_block<L, double, mpi_platform>(tp, k) < 1e-12);
  k.tokens = 2;  // fewer tokens than ranks under SP
  k.seed = 9;
  CHECK(test::check_block<L, double, mpi_platform>(tp, k) < 1e-12);
}
