// Whole decoder layers against the fp64 oracle: Llama-style (attention + SwiGLU MLP) and
// Mixtral-style (attention + experts), each in TP and TP+SP mode (and with expert-parallel
// experts), for tp ∈ {1, 2, 3, 4, 8} with KV heads replicated past n_kv (and every tp up to
// n_heads for the heads of the any-tp GQA cases), an odd token count and
// intermediate sizes tp does not divide: output, dx and every weight gradient. Then the bytes
// every block moves, against the analytic minimum.

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "../decoder_harness.hpp"
#include "grads.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
using layer::block_mode;

namespace {

constexpr int group_sizes[] = {1, 2, 3, 4, 8};
using test::block_case;
using test::check_block;
using test::make_block;

template <block_mode M, class T>
using llama = layer::llama_layer<M, host::backend, T>;
template <block_mode M, class T, class E = typename layer::block_styles<M>::moe_tp>
using mixtral = layer::mixtral_layer<M, host::backend, T, E>;
using mixtral_masked = mixtral<block_mode::tensor, double, style::moe_masked>;
using mixtral_all_to_all = mixtral<block_mode::sequence, double, style::moe_all_to_all>;

}  // namespace

TEST_CASE("the block oracle's gradients match finite differences") {
  for (const bool moe : {false, true}) {
    block_case k{.tokens = 4,
                 .hidden = 6,
                 .inter = 5,
                 .heads = {4, 2, 2},
                 .moe = moe,
                 .experts = 4,
                 .top_k = 2,
                 .expert_inter = 3,
                 .shared_inter = 2};
    test::block_weights w = make_block(k);
    test::dense x = test::random_dense(k.tokens, k.hidden, 77);
    const test::dense dy = test::random_dense(k.tokens, k.hidden, 78);
    const test::block_result g = test::decoder_layer(x, w, dy);
    const auto numeric = [&](double& v) {
      return test::central_difference(
          v, [&] { return test::dot(test::decoder_layer(x, w, dy).y, dy); });
    };
    CAPTURE(moe);
    for (std::size_t i = 0; i < x.v.size(); i += 3)
      CHECK(numeric(x.v[i]) == doctest::Approx(g.dx.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.q.v.size(); i += 5)
      CHECK(numeric(w.q.v[i]) == doctest::Approx(g.dq.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.k.v.size(); i += 5)
      CHECK(numeric(w.k.v[i]) == doctest::Approx(g.dk.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.v.v.size(); i += 5)
      CHECK(numeric(w.v.v[i]) == doctest::Approx(g.dv.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.o.v.size(); i += 5)
      CHECK(numeric(w.o.v[i]) == doctest::Approx(g.dout.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.norm1.size(); ++i)
      CHECK(numeric(w.norm1[i]) == doctest::Approx(g.dnorm1[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.norm2.size(); ++i)
      CHECK(numeric(w.norm2[i]) == doctest::Approx(g.dnorm2[i]).epsilon(1e-6));
    if (!moe) {
      for (std::size_t i = 0; i < w.gate_up.v.size(); i += 4)
        CHECK(numeric(w.gate_up.v[i]) == doctest::Approx(g.dgate_up.v[i]).epsilon(1e-6));
      for (std::size_t i = 0; i < w.down.v.size(); i += 4)
        CHECK(numeric(w.down.v[i]) == doctest::Approx(g.ddown.v[i]).epsilon(1e-6));
    } else {
      for (std::size_t i = 0; i < w.experts.router.v.size(); i += 3)
        CHECK(numeric(w.experts.router.v[i]) ==
              doctest::Approx(g.experts.drouter.v[i]).epsilon(1e-6));
    }
  }
}

TEST_CASE_TEMPLATE("a Llama layer reproduces the oracle: output, dx and every weight gradient", L,
                   llama<block_mode::tensor, double>, llama<block_mode::sequence, double>) {
  for (const int tp : group_sizes) {
    CAPTURE(tp);
    CHECK(check_block<L, double>(tp, {}) < 1e-12);
    CHECK(check_block<L, double>(tp, {.tokens = 2, .inter = 3, .seed = 9}) < 1e-12);
  }
}

TEST_CASE_TEMPLATE("a Llama layer reproduces the oracle at every tp up to n_heads (any-tp GQA)", L,
                   llama<block_mode::tensor, double>, llama<block_mode::sequence, double>) {
  // Query heads split balanced; a rank whose query heads straddle a group boundary holds both KV
  // heads, and a KV head's gradients are summed over exactly the ranks that hold it.
  const shard::gqa heads[] = {{28, 4, 2}, {6, 2, 2}, {4, 2, 2}, {12, 1, 2}, {8, 8, 2}, {32, 8, 2}};
  for (const shard::gqa& h : heads)
    for (int tp = 1; tp <= std::min<index_t>(8, h.n_heads); ++tp) {
      CAPTURE(h.n_heads);
      CAPTURE(h.n_kv_heads);
      CAPTURE(tp);
      CHECK(check_block<L, double>(tp, {.tokens = 5, .heads = h, .seed = 31}) < 1e-12);
    }
}

TEST_CASE_TEMPLATE("a Mixtral layer reproduces the oracle: output, dx and every weight gradient", L,
                   mixtral<block_mode::tensor, double>, mixtral<block_mode::sequence, double>,
                   mixtral_masked, mixtral_all_to_all) {
  for (const int tp : group_sizes) {
    if ((std::is_same_v<L, mixtral_masked> || std::is_same_v<L, mixtral_all_to_all>)&&8 % tp != 0)
      continue;
    CAPTURE(tp);
    CHECK(check_block<L, double>(tp, {.moe = true}) < 1e-12);
    CHECK(check_block<L, double>(tp, {.tokens = 3, .moe = true, .shared_inter = 3, .seed = 12}) <
          1e-12);
  }
}

TEST_CASE("blocks in single precision stay within 1e-4 of the oracle") {
  for (const int tp : {3, 8}) {
    CAPTURE(tp);
    CHECK(check_block<llama<block_mode::tensor, float>, float>(tp, {}) < 1e-4);
    CHECK(check_block<llama<block_mode::sequence, float>, float>(tp, {}) < 1e-4);
    CHECK(check_block<mixtral<block_mode::sequence, float>, float>(tp, {.moe = true}) < 1e-4);
  }
}

TEST_CASE("a block whose head counts tp cannot serve is an error with a sentence") {
  const block_case k{.heads = {2, 1, 2}};
  const test::block_weights w = make_block(k);
  const test::block_storage<double> s(w);
  host::gemm_engine engine;
  CHECK(test::error_of(3,
                       [&](host::communicator& c) {
                         (void)s.build<llama<block_mode::tensor, double>>(engine, c);
                       }) ==
        "self_attn: n_heads = 2 query heads cannot be split over tp = 3; attention is split in "
        "whole query heads, so tp must be between 1 and n_heads = 2");
}

namespace {
/// Per-kind bytes this rank counted in one direction.
struct traffic {
  std::int64_t all_reduce = 0, all_gather = 0, reduce_scatter = 0, all_to_all = 0;
  int calls = 0;
  static traffic of(const comm::stats& s) {
    traffic t{s[comm::kind::all_reduce].bytes, s[comm::kind::all_gather].bytes,
              s[comm::kind::reduce_scatter].bytes, s[comm::kind::all_to_all].bytes, 0};
    for (const comm::counter& c : s.by_kind) t.calls += static_cast<int>(c.calls);
    return t;
  }
  friend bool operator==(const traffic&, const traffic&) = default;
};

/// Forward and backward traffic of rank 0 of a block on tp ranks.
template <class Layer>
std::pair<traffic, traffic> measure(int tp, const block_case& k) {
  const test::block_weights w = make_block(k);
  const test::block_storage<double> s(w);
  const test::dense x = test::random_dense(k.tokens, k.hidden, 1);
  std::pair<traffic, traffic> out;
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    Layer block = s.template build<Layer>(engine, c);
    const index_t n = block.local_tokens(k.tokens);
    std::vector<double> xl(static_cast<std::size_t>(n * k.hidden), 0.5), y(xl.size()),
        dx(xl.size());
    for (std::size_t i = 0; i < xl.size(); ++i) xl[i] = x.v[i];
    c.reset_statistics();
    block.forward(make_matrix(xl.data(), n, k.hidden), make_matrix(y.data(), n, k.hidden),
                  k.tokens);
    const traffic fwd = traffic::of(c.statistics());
    c.reset_statistics();
    block.backward(make_matrix(xl.data(), n, k.hidden), make_matrix(y.data(), n, k.hidden),
                   make_matrix(dx.data(), n, k.hidden), k.tokens);
    if (c.rank() == 0) out = {fwd, traffic::of(c.statistics())};
  });
  return out;
}
}  // namespace

TEST_CASE("every block moves exactly the analytic minimum of bytes") {
  const int tp = 4;
  const block_case k{.tokens = 7, .hidden = 10, .heads = {8, 4, 2}, .experts = 8, .top_k = 2};
  const std::int64_t act = k.tokens * k.hidden * 8;  // one [T, H] activation in f64
  const std::int64_t norm = k.hidden * 8, topk = k.tokens * k.top_k * 8;
  // TP MLP and attention: one all-reduce of [T, H] each way.
  CHECK(measure<llama<block_mode::tensor, double>>(tp, k) ==
        std::pair{traffic{.all_reduce = 2 * act, .calls = 2},
                  traffic{.all_reduce = 2 * act, .calls = 2}});
  // SP: each all-reduce becomes an all-gather plus a reduce-scatter of the same total; the norms'
  // weight gradients are all-reduced.
  CHECK(measure<llama<block_mode::sequence, double>>(tp, k) ==
        std::pair{traffic{.all_gather = 2 * act, .reduce_scatter = 2 * act, .calls = 4},
                  traffic{.all_reduce = 2 * norm,
                          .all_gather = 2 * act,
                          .reduce_scatter = 2 * act,
                          .calls = 6}});
  // Mixtral TP: experts add the all-reduce of d(top-k weights) in backward.
  CHECK(measure<mixtral<block_mode::tensor, double>>(
            tp, {.tokens = 7, .hidden = 10, .heads = {8, 4, 2}, .moe = true}) ==
        std::pair{traffic{.all_reduce = 2 * act, .calls = 2},
                  traffic{.all_reduce = 2 * act + topk, .calls = 3}});
  // Mixtral SP: one all-gather of [x | ids | w], reduce-scatter of y; backward all-gathers dy,
  // reduce-scatters dx and d(top-k weights), all-reduces the norms' and the router's gradients.
  const std::int64_t router = k.experts * k.hidden * 8;
  CHECK(
      measure<mixtral<block_mode::sequence, double>>(
          tp, {.tokens = 7, .hidden = 10, .heads = {8, 4, 2}, .moe = true}) ==
      std::pair{traffic{.all_gather = act + act + 2 * topk, .reduce_scatter = 2 * act, .calls = 4},
                traffic{.all_reduce = 2 * norm + router,
                        .all_gather = 2 * act,
                        .reduce_scatter = 2 * act + topk,
                        .calls = 8}});
}

TEST_CASE("an MLP whose gate, up and down do not fit is refused before any weight is read") {
  const std::vector<double> gate(3 * 4, 0.5), up(3 * 2, 0.5), down(4 * 3, 0.5);
  host::gemm_engine engine;
  CHECK(test::error_of(2, [&](host::communicator& c) {
          layer::swiglu_mlp<block_mode::tensor, host::backend, double> mlp(
              engine, c,
              {make_matrix(gate.data(), 3, 4), make_matrix(up.data(), 3, 2),
               make_matrix(down.data(), 4, 3)});
        }) == "mlp: gate [3 × 4], up [3 × 2] and down [4 × 3] must be [I × H], [I × H], [H × I]");
}
