// Whole decoder layers against the fp64 oracle: Llama-style (attention + SwiGLU MLP) and
// Mixtral-style (attention + experts), each in TP and TP+SP mode (and with expert-parallel
// experts), for tp ∈ {1, 2, 3, 4, 8} with KV heads replicated past n_kv, an odd token count and
// intermediate sizes tp does not divide: output, dx and every weight gradient. Then the bytes
// every block moves, against the analytic minimum.

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "../block_harness.hpp"
#include "../linear_harness.hpp"
#include "grads.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
using layer::block_mode;

namespace {

constexpr int group_sizes[] = {1, 2, 3, 4, 8};

struct block_case {
  index_t tokens = 7, hidden = 10, inter = 9;
  shard::gqa heads{24, 4, 2};  // tp 8 replicates each KV head on 2 ranks
  bool moe = false;
  index_t experts = 8, top_k = 2, expert_inter = 5, shared_inter = 0;
  std::uint64_t seed = 500;
};

test::block_weights make_block(const block_case& k) {
  test::block_weights w;
  const index_t d = k.heads.head_dim, nq = k.heads.n_heads * d, nkv = k.heads.n_kv_heads * d;
  w.heads = {k.heads.n_heads, k.heads.n_kv_heads, d};
  w.norm1 = test::random_dense(k.hidden, 1, k.seed).v;
  w.norm2 = test::random_dense(k.hidden, 1, k.seed + 1).v;
  for (double& v : w.norm1) v += 1.5;
  for (double& v : w.norm2) v += 1.5;
  w.q = test::random_dense(nq, k.hidden, k.seed + 2);
  w.k = test::random_dense(nkv, k.hidden, k.seed + 3);
  w.v = test::random_dense(nkv, k.hidden, k.seed + 4);
  w.o = test::random_dense(k.hidden, nq, k.seed + 5);
  w.moe = k.moe;
  if (!k.moe) {
    w.inter = k.inter;
    w.gate_up = test::random_dense(2 * k.inter, k.hidden, k.seed + 6);
    w.down = test::random_dense(k.hidden, k.inter, k.seed + 7);
    return w;
  }
  w.routing = {.top_k = k.top_k};
  w.experts = test::random_moe(k.experts, k.hidden, k.expert_inter, k.shared_inter, k.seed + 8);
  return w;
}

/// Runs the layer on tp ranks; returns the worst relative error over y, dx and every gradient.
template <class Layer, class T>
double check_block(int tp, const block_case& k) {
  const test::block_weights w = make_block(k);
  const test::dense x = test::random_dense(k.tokens, k.hidden, k.seed + 50);
  const test::dense dy = test::random_dense(k.tokens, k.hidden, k.seed + 51);
  const test::block_result ref = test::decoder_layer(x, w, dy);
  const test::block_storage<T> s(w);
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  std::vector<double> errors(static_cast<std::size_t>(tp), 0.0);
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    Layer block = s.template build<Layer>(engine, c);
    constexpr bool sp = Layer::mode == block_mode::sequence;
    const shard::interval mine = sp ? rows.of(c.rank()).parts[0] : shard::interval{0, k.tokens};
    const shard::pieces all{{{0, k.hidden}}};
    const std::vector<T> xl = test::detail::take<T>(x, mine, all),
                         dyl = test::detail::take<T>(dy, mine, all);
    std::vector<T> yl(xl.size()), dxl(xl.size());
    test::detail::poison(yl);
    test::detail::poison(dxl);
    block.forward(make_matrix(xl.data(), mine.size(), k.hidden),
                  make_matrix(yl.data(), mine.size(), k.hidden), k.tokens);
    block.backward(make_matrix(xl.data(), mine.size(), k.hidden),
                   make_matrix(dyl.data(), mine.size(), k.hidden),
                   make_matrix(dxl.data(), mine.size(), k.hidden), k.tokens);
    using L = std::conditional_t<sp, style::layout::shard<0>, style::layout::replicate>;
    const auto y = test::detail::gather_full<L>(c, yl, k.tokens, k.hidden, rows);
    const auto dx = test::detail::gather_full<L>(c, dxl, k.tokens, k.hidden, rows);
    double& e = errors[static_cast<std::size_t>(c.rank())];
    const auto note = [&](double v) { e = std::max(e, v); };
    note(test::relative_error<T>(y, ref.y, {0, k.tokens}, {0, k.hidden}));
    note(test::relative_error<T>(dx, ref.dx, {0, k.tokens}, {0, k.hidden}));
    note(test::vector_grad_error(block.input_norm().weight_grad(), ref.dnorm1));
    note(test::vector_grad_error(block.post_norm().weight_grad(), ref.dnorm2));
    test::dense dqkv(ref.dq.rows + 2 * ref.dk.rows, k.hidden);
    dqkv.v = ref.dq.v;
    dqkv.v.insert(dqkv.v.end(), ref.dk.v.begin(), ref.dk.v.end());
    dqkv.v.insert(dqkv.v.end(), ref.dv.v.begin(), ref.dv.v.end());
    note(test::linear_grad_error(block.attention().qkv(), dqkv));
    note(test::linear_grad_error(block.attention().o(), ref.dout));
    if constexpr (std::is_same_v<typename Layer::ffn_type,
                                 layer::swiglu_mlp<Layer::mode, host::backend, T>>) {
      note(test::linear_grad_error(block.ffn().gate_up(), ref.dgate_up));
      note(test::linear_grad_error(block.ffn().down(), ref.ddown));
    } else {
      note(test::moe_grad_error(block.ffn(), ref.experts, k.expert_inter, k.shared_inter));
    }
  });
  return *std::max_element(errors.begin(), errors.end());
}

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
  const block_case k{.heads = {8, 2, 2}};
  const test::block_weights w = make_block(k);
  const test::block_storage<double> s(w);
  host::gemm_engine engine;
  CHECK(test::error_of(3,
                       [&](host::communicator& c) {
                         (void)s.build<llama<block_mode::tensor, double>>(engine, c);
                       }) ==
        "self_attn: n_heads = 8 and n_kv_heads = 2 cannot be split over tp = 3; tp must be at most "
        "n_kv_heads (KV heads split in whole heads), or a multiple of n_kv_heads that divides "
        "n_heads (each KV head replicated on tp / n_kv_heads ranks)");
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
