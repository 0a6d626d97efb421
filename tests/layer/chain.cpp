// The tensor-parallel MLP (colwise → activation → rowwise) against the unsharded MLP in fp64, and
// its communication: one all-reduce of [tokens, hidden] forward, one backward.

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/chain.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/shard/units.hpp"

using namespace tpx;

namespace {

struct mlp_reference {
  test::dense y, dx, dw1, dw2;
  std::vector<double> db1, db2;
};

mlp_reference reference_mlp(const test::dense& x, const test::dense& w1,
                            const std::vector<double>& b1, const test::dense& w2,
                            const std::vector<double>& b2, const test::dense& dy) {
  const test::dense h = test::linear_forward(x, w1, b1);
  test::dense a = h;
  for (double& v : a.v) v = v / (1 + std::exp(-v));
  mlp_reference r;
  r.y = test::linear_forward(a, w2, b2);
  const test::linear_grads g2 = test::linear_backward(a, w2, dy);
  test::dense dh = g2.dx;
  for (std::size_t i = 0; i < dh.v.size(); ++i) {
    const double s = 1 / (1 + std::exp(-h.v[i]));
    dh.v[i] *= s * (1 + h.v[i] * (1 - s));
  }
  const test::linear_grads g1 = test::linear_backward(x, w1, dh);
  r.dx = g1.dx;
  r.dw1 = g1.dw;
  r.dw2 = g2.dw;
  r.db1 = g1.db;
  r.db2 = g2.db;
  return r;
}

}  // namespace

TEST_CASE_TEMPLATE("the colwise → silu → rowwise MLP matches the unsharded MLP", Pair,
                   std::pair<style::colwise<>, style::rowwise<>>,
                   std::pair<style::colwise_gathered, style::rowwise_split>) {
  using first = layer::linear<typename Pair::first_type, host::backend, double>;
  using second = layer::linear<typename Pair::second_type, host::backend, double>;
  const index_t tokens = 5, hidden = 12, inter = 19;
  const test::dense x = test::random_dense(tokens, hidden, 11);
  const test::dense w1 = test::random_dense(inter, hidden, 12);
  const test::dense w2 = test::random_dense(hidden, inter, 13);
  const test::dense dy = test::random_dense(tokens, hidden, 14);
  const std::vector<double> b1 = test::random_dense(inter, 1, 15).v;
  const std::vector<double> b2 = test::random_dense(hidden, 1, 16).v;
  const mlp_reference ref = reference_mlp(x, w1, b1, w2, b2, dy);
  host::gemm_engine engine;

  for (const int tp : {1, 2, 3, 4, 8}) {
    CAPTURE(tp);
    std::vector<std::array<double, 4>> err(static_cast<std::size_t>(tp));
    std::vector<comm::stats> stats(static_cast<std::size_t>(tp));
    host::run(tp, [&](host::communicator& c) {
      first up(engine, c, make_matrix<const double>(w1.v.data(), inter, hidden), b1,
               {.name = "mlp.up_proj", .out_features = inter, .in_features = hidden});
      second down(engine, c, make_matrix<const double>(w2.v.data(), hidden, inter), b2,
                  {.name = "mlp.down_proj", .out_features = hidden, .in_features = inter});
      layer::chain<first, second, ops::activation::silu> mlp(up, down);
      std::vector<double> y(static_cast<std::size_t>(tokens * hidden), NAN), dx(y.size(), NAN);
      const auto xv = make_matrix<const double>(x.v.data(), tokens, hidden);
      mlp.forward(xv, make_matrix(y.data(), tokens, hidden));
      mlp.backward(xv, make_matrix<const double>(dy.v.data(), tokens, hidden),
                   make_matrix(dx.data(), tokens, hidden));
      auto& e = err[static_cast<std::size_t>(c.rank())];
      e[0] = test::relative_error<double>(y, ref.y, {0, tokens}, {0, hidden});
      e[1] = test::relative_error<double>(dx, ref.dx, {0, tokens}, {0, hidden});
      // Each rank's parameter-gradient shards against the oracle's matching slices.
      const auto span_of = [](auto v) {
        return std::span(v.data(), static_cast<std::size_t>(v.size()));
      };
      const std::vector<double> db1(up.bias_grad().begin(), up.bias_grad().end());
      const std::vector<double> db2(down.bias_grad().begin(), down.bias_grad().end());
      e[2] = std::max(test::relative_error<double>(span_of(up.weight_grad()), ref.dw1,
                                                   {up.slice().begin, up.slice().end}, {0, hidden}),
                      test::relative_error<double>(db1, test::column(ref.db1),
                                                   {up.slice().begin, up.slice().end}, {0, 1}));
      e[3] =
          std::max(test::relative_error<double>(span_of(down.weight_grad()), ref.dw2, {0, hidden},
                                                {down.slice().begin, down.slice().end}),
                   test::relative_error<double>(db2, test::column(ref.db2), {0, hidden}, {0, 1}));
      stats[static_cast<std::size_t>(c.rank())] = c.statistics();
    });
    for (const auto& e : err) {
      CHECK(e[0] < 1e-13);
      CHECK(e[1] < 1e-13);
      CHECK(e[2] < 1e-13);
      CHECK(e[3] < 1e-13);
    }
    // Forward: one all-reduce of [tokens, hidden]; backward: one of [tokens, hidden] (dx).
    const std::int64_t ar = tokens * hidden * 8;
    for (const auto& s : stats) {
      if (std::is_same_v<typename Pair::first_type, style::colwise<>>) {
        CHECK(s[comm::kind::all_reduce] == comm::counter{2, 2 * ar});
        CHECK(s.total_bytes() == 2 * ar);
      } else {  // gathered hidden: + all-gather of [tokens, inter] forward and backward
        CHECK(s[comm::kind::all_reduce] == comm::counter{2, 2 * ar});
        CHECK(s[comm::kind::all_gather] == comm::counter{2, 2 * tokens * inter * 8});
      }
    }
  }
}

TEST_CASE("unit_colwise → silu → unit_rowwise over replicated units matches the unsharded MLP") {
  // 6 units of 3 (heads) over tp 1 … 8: at tp 4 each rank holds 3 units and each unit sits on 2
  // ranks; at tp 8, on 4. Replicas compute the same hidden units: the rowwise output is summed
  // over one rank of each replica group (the unit axis), its dx is each replica's 1 / replicas
  // share, and the colwise dx all-reduce and shared dW rows sum those shares back.
  using up_t = layer::linear<style::colwise<>, host::backend, double>;
  using down_t = layer::linear<style::rowwise<>, host::backend, double>;
  const shard::units units{6, 3};
  const index_t tokens = 5, hidden = 8, inter = units.n_units * units.unit_size;
  const test::dense x = test::random_dense(tokens, hidden, 21);
  const test::dense w1 = test::random_dense(inter, hidden, 22);
  const test::dense w2 = test::random_dense(hidden, inter, 23);
  const test::dense dy = test::random_dense(tokens, hidden, 24);
  const std::vector<double> b1 = test::random_dense(inter, 1, 25).v;
  const std::vector<double> b2 = test::random_dense(hidden, 1, 26).v;
  const mlp_reference ref = reference_mlp(x, w1, b1, w2, b2, dy);
  host::gemm_engine engine;

  for (const int tp : {1, 2, 3, 4, 5, 6, 8}) {
    CAPTURE(tp);
    const int replicas = units.replicas(tp);
    std::vector<std::array<double, 4>> err(static_cast<std::size_t>(tp));
    std::vector<std::array<comm::stats, 3>> stats(static_cast<std::size_t>(tp));
    host::run(tp, [&](host::communicator& c) {
      up_t up(engine, c, make_matrix<const double>(w1.v.data(), inter, hidden), b1,
              {.name = "attn.v_proj",
               .out_features = inter,
               .in_features = hidden,
               .partition = units.of(tp)});
      down_t down(engine, c, make_matrix<const double>(w2.v.data(), hidden, inter), b2,
                  {.name = "attn.o_proj",
                   .out_features = hidden,
                   .in_features = inter,
                   .partition = units.of(tp)});
      layer::chain<up_t, down_t, ops::activation::silu> mlp(up, down);
      std::vector<double> y(static_cast<std::size_t>(tokens * hidden), NAN), dx(y.size(), NAN);
      const auto xv = make_matrix<const double>(x.v.data(), tokens, hidden);
      mlp.forward(xv, make_matrix(y.data(), tokens, hidden));
      mlp.backward(xv, make_matrix<const double>(dy.v.data(), tokens, hidden),
                   make_matrix(dx.data(), tokens, hidden));
      auto& e = err[static_cast<std::size_t>(c.rank())];
      e[0] = test::relative_error<double>(y, ref.y, {0, tokens}, {0, hidden});
      e[1] = test::relative_error<double>(dx, ref.dx, {0, tokens}, {0, hidden});
      const auto span_of = [](auto v) {
        return std::span(v.data(), static_cast<std::size_t>(v.size()));
      };
      const shard::interval own = up.slice();  // one interval of whole units
      const std::vector<double> db1(up.bias_grad().begin(), up.bias_grad().end());
      const std::vector<double> db2(down.bias_grad().begin(), down.bias_grad().end());
      e[2] = std::max(
          test::relative_error<double>(span_of(up.weight_grad()), ref.dw1, {own.begin, own.end},
                                       {0, hidden}),
          test::relative_error<double>(db1, test::column(ref.db1), {own.begin, own.end}, {0, 1}));
      e[3] =
          std::max(test::relative_error<double>(span_of(down.weight_grad()), ref.dw2, {0, hidden},
                                                {own.begin, own.end}),
                   test::relative_error<double>(db2, test::column(ref.db2), {0, hidden}, {0, 1}));
      stats[static_cast<std::size_t>(c.rank())] = {c.statistics(), up.shared_statistics(),
                                                   down.shared_statistics()};
    });
    for (const auto& e : err) {
      CHECK(e[0] < 1e-13);
      CHECK(e[1] < 1e-13);
      CHECK(e[2] < 1e-13);
      CHECK(e[3] < 1e-13);
    }
    // The group: dx's all-reduce in backward, and the rowwise forward's unless units replicate.
    // The replica groups: the shared [dW | db] rows of the rank's units; the unit axis: the
    // rowwise forward's [tokens, hidden].
    const std::int64_t ar = tokens * hidden * 8;
    const std::int64_t shared = inter / units.groups(tp) * (hidden + 1) * 8;
    for (const auto& [group, up_subs, down_subs] : stats) {
      if (replicas == 1) {
        CHECK(group[comm::kind::all_reduce] == comm::counter{2, 2 * ar});
        CHECK(up_subs.total_bytes() == 0);
        CHECK(down_subs.total_bytes() == 0);
      } else {
        CHECK(group[comm::kind::all_reduce] == comm::counter{1, ar});
        CHECK(up_subs[comm::kind::all_reduce] == comm::counter{1, shared});
        CHECK(down_subs[comm::kind::all_reduce] == comm::counter{1, ar});
      }
      CHECK(group.total_bytes() == (replicas == 1 ? 2 : 1) * ar);
    }
  }
}
