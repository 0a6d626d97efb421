// Grouped-query attention over tpx linear layers against the fp64 oracle: q, k and v colwise in
// whole heads (a KV head on every rank whose query heads use it), o rowwise over the q heads. Each
// rank runs attention on its own heads only, so the result is right only if every query head sits
// on a rank holding its KV head, and backward is right only if the dK, dV (and dW_k, dW_v) of a
// replicated KV head are summed over the ranks that share it.

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <vector>

#include "../linear_harness.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/shard/units.hpp"

using namespace tpx;

namespace {

template <class T>
test::dense to_dense(const std::vector<T>& v, index_t rows, index_t cols) {
  test::dense m(rows, cols);
  for (std::size_t i = 0; i < v.size(); ++i) m.v[i] = static_cast<double>(v[i]);
  return m;
}

struct gqa_case {
  index_t tokens = 5, hidden = 7;
  shard::gqa heads;
  std::uint64_t seed = 11;
};

/// Relative errors of y, dx, dW_q, dW_k, dW_v, dW_o, worst over ranks, when the query heads are
/// placed by `q_partition` (the GQA placement unless a test misplaces them on purpose).
template <class T>
std::array<double, 6> check_attention(int tp, const gqa_case& k,
                                      const std::function<shard::partition(int)>& q_partition) {
  const shard::gqa& a = k.heads;
  const index_t d = a.head_dim, nq = a.n_heads * d, nkv = a.n_kv_heads * d;
  const test::dense x = test::random_dense(k.tokens, k.hidden, k.seed);
  const test::dense wq = test::random_dense(nq, k.hidden, k.seed + 1);
  const test::dense wk = test::random_dense(nkv, k.hidden, k.seed + 2);
  const test::dense wv = test::random_dense(nkv, k.hidden, k.seed + 3);
  const test::dense wo = test::random_dense(k.hidden, nq, k.seed + 4);
  const test::dense dy = test::random_dense(k.tokens, k.hidden, k.seed + 5);

  // The oracle: the whole attention block in fp64.
  const test::attention_shape full{a.n_heads, a.n_kv_heads, d};
  const test::dense q = test::linear_forward(x, wq, {});
  const test::dense kk = test::linear_forward(x, wk, {});
  const test::dense v = test::linear_forward(x, wv, {});
  const test::dense o = test::attention_forward(q, kk, v, full);
  const test::dense y = test::linear_forward(o, wo, {});
  const test::linear_grads go = test::linear_backward(o, wo, dy);
  const test::attention_grads ga = test::attention_backward(q, kk, v, go.dx, full);
  const test::linear_grads gq = test::linear_backward(x, wq, ga.dq);
  const test::linear_grads gk = test::linear_backward(x, wk, ga.dk);
  const test::linear_grads gv = test::linear_backward(x, wv, ga.dv);
  test::dense dx = gq.dx;
  for (std::size_t i = 0; i < dx.v.size(); ++i) dx.v[i] += gk.dx.v[i] + gv.dx.v[i];

  using col = layer::linear<style::colwise<>, host::backend, T>;
  using row = layer::linear<style::rowwise<>, host::backend, T>;
  const auto w_q = test::whole<T>(wq), w_k = test::whole<T>(wk), w_v = test::whole<T>(wv),
             w_o = test::whole<T>(wo), x_t = test::whole<T>(x), dy_t = test::whole<T>(dy);
  std::vector<std::array<double, 6>> errors(static_cast<std::size_t>(tp));
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    const shard::partition qp = q_partition(tp), kvp = a.kv_partition(tp);
    const auto colwise = [&](const std::vector<T>& w, index_t out, const char* name,
                             const shard::partition& p) {
      return col(engine, c, make_matrix<const T>(w.data(), out, k.hidden), {},
                 {.name = name, .out_features = out, .in_features = k.hidden, .partition = p});
    };
    col lq = colwise(w_q, nq, "q_proj", qp), lk = colwise(w_k, nkv, "k_proj", kvp),
        lv = colwise(w_v, nkv, "v_proj", kvp);
    row lo(engine, c, make_matrix<const T>(w_o.data(), k.hidden, nq), {},
           {.name = "o_proj", .out_features = k.hidden, .in_features = nq, .partition = qp});

    const index_t t = k.tokens, q_cols = lq.output_cols(), kv_cols = lk.output_cols();
    const test::attention_shape local{q_cols / d, kv_cols / d, d, a.group(),
                                      a.q_offset(tp, c.rank())};
    const auto xv = make_matrix<const T>(x_t.data(), t, k.hidden);
    const auto run_proj = [&](col& l) {
      std::vector<T> out(static_cast<std::size_t>(t * l.output_cols()));
      l.forward(xv, make_matrix(out.data(), t, l.output_cols()));
      return to_dense(out, t, l.output_cols());
    };
    const test::dense ql = run_proj(lq), kl = run_proj(lk), vl = run_proj(lv);
    const auto o_local = test::whole<T>(test::attention_forward(ql, kl, vl, local));
    std::vector<T> y_t(static_cast<std::size_t>(t * k.hidden));
    const auto ov = make_matrix<const T>(o_local.data(), t, q_cols);
    lo.forward(ov, make_matrix(y_t.data(), t, k.hidden));

    std::vector<T> do_t(o_local.size());
    lo.backward(ov, make_matrix<const T>(dy_t.data(), t, k.hidden),
                make_matrix(do_t.data(), t, q_cols));
    const test::attention_grads gl =
        test::attention_backward(ql, kl, vl, to_dense(do_t, t, q_cols), local);
    std::vector<T> dx_t(x_t.size(), T(0));
    const auto back_proj = [&](col& l, const test::dense& grad) {
      const std::vector<T> g = test::whole<T>(grad);
      std::vector<T> part(x_t.size());
      l.backward(xv, make_matrix<const T>(g.data(), t, l.output_cols()),
                 make_matrix(part.data(), t, k.hidden));
      for (std::size_t i = 0; i < part.size(); ++i) dx_t[i] += part[i];
    };
    back_proj(lq, gl.dq);
    back_proj(lk, gl.dk);
    back_proj(lv, gl.dv);

    const auto dw = [&](auto& l) {
      const auto g = l.weight_grad();
      return std::vector<T>(g.data(), g.data() + g.size());
    };
    using style::layout::shard;
    const auto dwq = test::detail::gather_full<shard<0>>(c, dw(lq), nq, k.hidden, qp);
    const auto dwk = test::detail::gather_full<shard<0>>(c, dw(lk), nkv, k.hidden, kvp);
    const auto dwv = test::detail::gather_full<shard<0>>(c, dw(lv), nkv, k.hidden, kvp);
    const auto dwo = test::detail::gather_full<shard<1>>(c, dw(lo), k.hidden, nq, qp);

    const auto err = [](const std::vector<T>& got, const test::dense& want) {
      return test::relative_error<T>(got, want, {0, want.rows}, {0, want.cols});
    };
    errors[static_cast<std::size_t>(c.rank())] = {err(y_t, y),     err(dx_t, dx),
                                                  err(dwq, gq.dw), err(dwk, gk.dw),
                                                  err(dwv, gv.dw), err(dwo, go.dw)};
  });
  std::array<double, 6> worst{};
  for (const auto& e : errors)
    for (std::size_t i = 0; i < e.size(); ++i) worst[i] = std::max(worst[i], e[i]);
  return worst;
}

constexpr std::array<const char*, 6> names{"y", "dx", "dW_q", "dW_k", "dW_v", "dW_o"};

}  // namespace

TEST_CASE("the oracle's attention backward matches finite differences") {
  const test::attention_shape a{4, 2, 3};
  const index_t t = 4;
  const test::dense q = test::random_dense(t, 12, 1), k = test::random_dense(t, 6, 2),
                    v = test::random_dense(t, 6, 3), dout = test::random_dense(t, 12, 4);
  const auto loss = [&](const test::dense& qq, const test::dense& kk, const test::dense& vv) {
    const test::dense o = test::attention_forward(qq, kk, vv, a);
    double s = 0;
    for (std::size_t i = 0; i < o.v.size(); ++i) s += o.v[i] * dout.v[i];
    return s;
  };
  const test::attention_grads g = test::attention_backward(q, k, v, dout, a);
  const double h = 1e-6;
  const auto check = [&](int which, const test::dense& grad) {
    for (std::size_t i = 0; i < grad.v.size(); ++i) {
      std::array<test::dense, 3> plus{q, k, v}, minus{q, k, v};
      plus[static_cast<std::size_t>(which)].v[i] += h;
      minus[static_cast<std::size_t>(which)].v[i] -= h;
      const double fd =
          (loss(plus[0], plus[1], plus[2]) - loss(minus[0], minus[1], minus[2])) / (2 * h);
      CHECK(grad.v[i] == doctest::Approx(fd).epsilon(1e-6));
    }
  };
  check(0, g.dq);
  check(1, g.dk);
  check(2, g.dv);
}

TEST_CASE_TEMPLATE("GQA attention on whole heads matches the oracle, KV heads replicated or split",
                   T, double, float) {
  const double tolerance = std::is_same_v<T, double> ? 1e-12 : 2e-5;
  struct config {
    shard::gqa heads;
  };
  // Every tp from 1 to n_heads (at most 8): KV heads split, replicated on a multiple of n_kv,
  // or shared by the ranks whose query heads straddle a group boundary (6 / 2 at tp 4: KV head 1
  // on ranks 1, 2 and 3).
  const std::vector<config> configs{
      {{8, 2, 4}}, {{6, 3, 2}}, {{4, 4, 3}}, {{12, 1, 2}}, {{28, 4, 2}},
      {{6, 2, 2}}, {{4, 2, 2}}, {{8, 8, 2}}, {{32, 8, 2}},
  };
  for (const config& cfg : configs)
    for (int tp = 1; tp <= std::min<index_t>(8, cfg.heads.n_heads); ++tp) {
      CAPTURE(tp);
      CAPTURE(cfg.heads.n_heads);
      CAPTURE(cfg.heads.n_kv_heads);
      const auto worst = check_attention<T>(tp, {.heads = cfg.heads},
                                            [&](int n) { return cfg.heads.q_partition(n); });
      for (std::size_t i = 0; i < worst.size(); ++i) {
        CAPTURE(names[i]);
        CHECK(worst[i] < tolerance);
      }
    }
}

TEST_CASE("query heads placed without regard to their KV heads give a wrong attention") {
  // The check above can fail: 8 query heads over 2 KV heads on tp 2, but the query heads dealt
  // as two packed blocks, so rank 0 holds query heads 0, 1, 4, 5 beside KV head 0 (heads 4 and 5
  // belong to KV head 1).
  const shard::gqa heads{8, 2, 4};
  const auto worst = check_attention<double>(2, {.heads = heads}, [&](int n) {
    const std::array<shard::block, 2> halves{{{16, 4}, {16, 4}}};
    return shard::partition::packed(halves, n, shard::split_kind::balanced);
  });
  CHECK(worst[0] > 1e-3);
}

TEST_CASE("a shared KV head's dW and db rows are summed over the ranks holding it, and no more") {
  // 6 query / 2 KV heads of dim 2 at tp 4: KV head 0 on ranks 0, 1; KV head 1 on ranks 1, 2, 3.
  // Each rank all-reduces (rows · (in + 1)) doubles per KV head it holds, in that head's
  // sub-group; the layer's own communicator moves only dx.
  const shard::gqa heads{6, 2, 2};
  const int tp = 4;
  const index_t tokens = 3, in = 5, out = heads.n_kv_heads * heads.head_dim;
  const test::dense w = test::random_dense(out, in, 1), b = test::random_dense(out, 1, 2);
  const test::dense x = test::random_dense(tokens, in, 3);
  const std::vector<shard::sharing> sets = heads.kv_partition(tp).shared_parts();
  REQUIRE(sets.size() == 2);
  CHECK(sets[0].ranks == std::vector<int>{0, 1});
  CHECK(sets[1].ranks == std::vector<int>{1, 2, 3});
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    using col = layer::linear<style::colwise<>, host::backend, double>;
    col l(engine, c, make_matrix<const double>(w.v.data(), out, in), b.v,
          {.name = "k_proj",
           .out_features = out,
           .in_features = in,
           .partition = heads.kv_partition(tp)});
    const std::vector<double> dy(static_cast<std::size_t>(tokens * l.output_cols()), 0.5);
    std::vector<double> dx(static_cast<std::size_t>(tokens * in));
    l.backward(make_matrix<const double>(x.v.data(), tokens, in),
               make_matrix<const double>(dy.data(), tokens, l.output_cols()),
               make_matrix(dx.data(), tokens, in));
    std::int64_t want = 0, calls = 0;
    for (const shard::sharing& s : sets)
      if (s.holds(c.rank())) {
        want += s.size() * (in + 1) * 8;
        ++calls;
      }
    const comm::stats shared = l.shared_statistics();
    CHECK(shared[comm::kind::all_reduce].bytes == want);
    CHECK(shared[comm::kind::all_reduce].calls == calls);
    CHECK(shared.total_bytes() == want);
    CHECK(c.statistics()[comm::kind::all_reduce].bytes == tokens * in * 8);  // dx only
    // Every holder of a row ends with the same summed gradient: the row's dy (0.5 on each
    // holder's share) times x, summed over the holders.
    const auto dw = l.weight_grad();
    for (index_t i = 0; i < l.output_cols(); ++i) {
      const index_t row = heads.kv_partition(tp).of(c.rank()).global(i);
      const index_t holders = heads.holders(tp, row / heads.head_dim).size();
      for (index_t j = 0; j < in; ++j) {
        double col_sum = 0;
        for (index_t t = 0; t < tokens; ++t) col_sum += x(t, j);
        CHECK(dw(i, j) == doctest::Approx(holders * 0.5 * col_sum).epsilon(1e-12));
      }
    }
  });
}

namespace {
/// A communicator an engine brings that cannot make sub-groups: the host group's, less split.
class unsplittable {
 public:
  explicit unsplittable(host::communicator& c) : c_(&c) {}
  int rank() const { return c_->rank(); }
  int size() const { return c_->size(); }
  template <class T>
  void all_reduce(std::span<T> d, comm::reduce_op op = comm::reduce_op::sum) {
    c_->all_reduce(d, op);
  }
  template <class T>
  void all_gather(std::span<const T> s, std::span<T> r, std::span<const index_t> n) {
    c_->all_gather(s, r, n);
  }
  template <class T>
  void reduce_scatter(std::span<const T> s, std::span<T> r, std::span<const index_t> n,
                      comm::reduce_op op = comm::reduce_op::sum) {
    c_->reduce_scatter(s, r, n, op);
  }
  template <class T>
  void broadcast(std::span<T> d, int root) {
    c_->broadcast(d, root);
  }
  template <class T>
  void all_to_all_v(std::span<const T> s, std::span<const index_t> sn, std::span<T> r,
                    std::span<const index_t> rn) {
    c_->all_to_all_v(s, sn, r, rn);
  }
  template <class T>
  void send(std::span<const T> d, int peer) {
    c_->send(d, peer);
  }
  template <class T>
  void recv(std::span<T> d, int peer) {
    c_->recv(d, peer);
  }
  void barrier() { c_->barrier(); }
  const comm::stats& statistics() const { return c_->statistics(); }

 private:
  host::communicator* c_;
};
static_assert(comm::communicator<unsplittable> && !comm::splittable<unsplittable>);

struct unsplittable_backend : host::backend {
  using communicator = unsplittable;
};
}  // namespace

TEST_CASE("without split, a shared KV head's rows are summed over the whole group, zero-padded") {
  // The same 6 / 2 heads at tp 4: the same gradients as the sub-groups give, and the whole
  // [extent, in + 1] buffer all-reduced on the layer's communicator.
  const shard::gqa heads{6, 2, 2};
  const int tp = 4;
  const index_t tokens = 3, in = 5, out = heads.n_kv_heads * heads.head_dim;
  const test::dense w = test::random_dense(out, in, 1), b = test::random_dense(out, 1, 2);
  const test::dense x = test::random_dense(tokens, in, 3), g = test::random_dense(tokens, out, 4);
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    const layer::linear_options opts{.name = "k_proj",
                                     .out_features = out,
                                     .in_features = in,
                                     .partition = heads.kv_partition(tp)};
    unsplittable u(c);
    layer::linear<style::colwise<>, unsplittable_backend, double> plain(
        engine, u, make_matrix<const double>(w.v.data(), out, in), b.v, opts);
    layer::linear<style::colwise<>, host::backend, double> split(
        engine, c, make_matrix<const double>(w.v.data(), out, in), b.v, opts);
    const index_t cols = split.output_cols();
    std::vector<double> dy;  // this rank's columns of g
    for (index_t t = 0; t < tokens; ++t)
      for (index_t i = 0; i < cols; ++i)
        dy.push_back(g(t, heads.kv_partition(tp).of(c.rank()).global(i)));
    std::vector<double> dx(static_cast<std::size_t>(tokens * in));
    const auto xv = make_matrix<const double>(x.v.data(), tokens, in);
    const auto dyv = make_matrix<const double>(dy.data(), tokens, cols);
    c.reset_statistics();
    plain.backward(xv, dyv, make_matrix(dx.data(), tokens, in));
    CHECK(c.statistics()[comm::kind::all_reduce].bytes == (tokens * in + out * (in + 1)) * 8);
    split.backward(xv, dyv, make_matrix(dx.data(), tokens, in));
    const auto a = plain.weight_grad(), s = split.weight_grad();
    for (index_t i = 0; i < cols; ++i)
      for (index_t j = 0; j < in; ++j) CHECK(a(i, j) == doctest::Approx(s(i, j)).epsilon(1e-14));
    for (index_t i = 0; i < cols; ++i)
      CHECK(plain.bias_grad()[static_cast<std::size_t>(i)] ==
            doctest::Approx(split.bias_grad()[static_cast<std::size_t>(i)]).epsilon(1e-14));
  });
}

TEST_CASE("without split, a rowwise layer's replicas scale their partial outputs by 1 / replicas") {
  // unit_rowwise over 2 units of 3 at tp 4: each unit on 2 ranks. Without a unit-axis sub-group
  // the whole group sums the outputs, each replica's partial scaled by 1 / 2: the same y as the
  // sub-group gives and as the unsharded layer, in one all-reduce on the layer's communicator.
  const shard::units units{2, 3};
  const int tp = 4;
  const index_t tokens = 3, in = units.n_units * units.unit_size, out = 5;
  const test::dense w = test::random_dense(out, in, 5), b = test::random_dense(out, 1, 6);
  const test::dense x = test::random_dense(tokens, in, 7);
  const test::dense y_ref = test::linear_forward(x, w, b.v);
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    const layer::linear_options opts{
        .name = "o_proj", .out_features = out, .in_features = in, .partition = units.of(tp)};
    unsplittable u(c);
    layer::linear<style::rowwise<>, unsplittable_backend, double> plain(
        engine, u, make_matrix<const double>(w.v.data(), out, in), b.v, opts);
    layer::linear<style::rowwise<>, host::backend, double> split(
        engine, c, make_matrix<const double>(w.v.data(), out, in), b.v, opts);
    const shard::pieces& own = split.pieces();
    std::vector<double> xl;  // this rank's units of x
    for (index_t t = 0; t < tokens; ++t)
      for (index_t j = 0; j < own.size(); ++j) xl.push_back(x(t, own.global(j)));
    const auto xv = make_matrix<const double>(xl.data(), tokens, own.size());
    std::vector<double> y_plain(static_cast<std::size_t>(tokens * out)), y_split(y_plain.size());
    c.reset_statistics();
    plain.forward(xv, make_matrix(y_plain.data(), tokens, out));
    CHECK(c.statistics()[comm::kind::all_reduce] == comm::counter{1, tokens * out * 8});
    split.forward(xv, make_matrix(y_split.data(), tokens, out));
    CHECK(split.shared_statistics()[comm::kind::all_reduce] == comm::counter{1, tokens * out * 8});
    CHECK(test::relative_error<double>(y_plain, y_ref, {0, tokens}, {0, out}) < 1e-14);
    CHECK(test::relative_error<double>(y_split, y_ref, {0, tokens}, {0, out}) < 1e-14);
  });
}
