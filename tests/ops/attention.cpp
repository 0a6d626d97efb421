// The attention ops' laws. The reference (ops::reference, one query row at a time) equals the
// independent fp64 oracle of tests/oracle.hpp; every backend's ops that build here equal the
// reference — RoPE, causal and sliding-window attention forward and backward, and decode over a
// cache ring that wraps — in f32 and f64, on strided views (q, k and v as column ranges of one
// packed qkv, as the layer passes them), with token counts that cross and miss the host's blocks
// of query rows, and GQA groups of 1 to 6.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "../harness.hpp"
#include "tpx/backend/host/ops.hpp"
#include "tpx/ops/attention.hpp"

using namespace tpx;

namespace {

struct attn_case {
  index_t tokens, q_heads, kv_heads, head_dim, window;
  double softcap = 0;  ///< soft-capped scores; 0: none
  /// A rank's heads that start mid-group (any-tp GQA): query heads per KV head in the model and
  /// the first query head's place in its group; 0, 0: whole groups.
  index_t kv_group = 0, q_offset = 0;
};

/// Cases crossing the host's 64-row query blocks (1, 5, 64, 70, 130 tokens), with windows
/// shorter and longer than a block.
const attn_case cases[] = {
    {1, 2, 1, 4, 0},       {5, 4, 2, 6, 0},         {64, 3, 3, 2, 0},  {70, 3, 1, 8, 0},
    {130, 4, 4, 4, 0},     {130, 6, 1, 4, 17},      {70, 2, 1, 2, 64}, {9, 2, 2, 4, 1},
    {70, 4, 2, 4, 0, 0.5}, {130, 2, 1, 8, 17, 1.0},  // soft-capped (tight caps, so they bite)
    // heads straddling a group: 2 query heads from place 2 of groups of 3 (KV heads 0, 1); 3
    // from place 1 of groups of 2 (KV heads 0, 1, 1); 1 from place 6 of 7 (Qwen2-7B at tp 8)
    {5, 2, 2, 4, 0, 0, 3, 2},  {70, 3, 2, 4, 17, 0, 2, 1}, {9, 1, 1, 2, 0, 0, 7, 6},
};

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

/// Largest |a − b| relative to the largest |b| (or 1).
template <class T>
double rel(matrix_view<const T> a, matrix_view<const T> b) {
  double worst = 0, scale = 1;
  for (index_t i = 0; i < b.rows(); ++i)
    for (index_t j = 0; j < b.cols(); ++j) {
      scale = std::max(scale, std::abs(static_cast<double>(b(i, j))));
      const double d = std::abs(static_cast<double>(a(i, j)) - static_cast<double>(b(i, j)));
      worst = std::max(worst, std::isnan(d) ? INFINITY : d);
    }
  return worst / scale;
}

template <class T>
matrix_view<const T> cview(const std::vector<T>& v, index_t rows, index_t cols) {
  return make_matrix<const T>(v.data(), rows, cols);
}

/// A packed qkv [n, (q + 2 kv)·d] in T and views of its q, k and v columns.
template <class T>
struct packed {
  index_t n, qc, kc;
  std::vector<T> data;
  packed(const attn_case& c, std::uint64_t seed)
      : n(c.tokens), qc(c.q_heads * c.head_dim), kc(c.kv_heads * c.head_dim) {
    data = test::whole<T>(test::random_dense(n, qc + 2 * kc, seed));
  }
  matrix_view<const T> all() const { return cview(data, n, qc + 2 * kc); }
  matrix_view<const T> q() const { return all().col_range(0, qc); }
  matrix_view<const T> k() const { return all().col_range(qc, qc + kc); }
  matrix_view<const T> v() const { return all().col_range(qc + kc, qc + 2 * kc); }
};

ops::attention_shape shape_of(const attn_case& c) {
  return {.q_heads = c.q_heads,
          .kv_heads = c.kv_heads,
          .head_dim = c.head_dim,
          .scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim)),
          .window = c.window,
          .softcap = c.softcap,
          .kv_group = c.kv_group,
          .q_offset = c.q_offset};
}

test::dense dense_of(matrix_view<const double> m) {
  test::dense d(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) d(i, j) = m(i, j);
  return d;
}

/// The outputs of forward then backward of one ops type.
template <class T>
struct run_out {
  std::vector<T> o, lse, dq, dk, dv;
};

template <class T, class Ops>
run_out<T> forward_backward(Ops& ops, const attn_case& c, const packed<T>& in,
                            const std::vector<T>& dout) {
  const ops::attention_shape s = shape_of(c);
  const index_t n = c.tokens, qc = in.qc, kc = in.kc;
  run_out<T> r{std::vector<T>(static_cast<std::size_t>(n * qc), T(7)),
               std::vector<T>(static_cast<std::size_t>(c.q_heads * n), T(7)),
               std::vector<T>(static_cast<std::size_t>(n * qc), T(7)),
               {},
               {}};
  // dk and dv as column ranges of one [n, 2 kc] buffer, stale values in it.
  std::vector<T> dkv(static_cast<std::size_t>(n * 2 * kc), T(7));
  ops.attention_forward(s, in.q(), in.k(), in.v(), make_matrix(r.o.data(), n, qc),
                        std::span<T>(r.lse));
  const matrix_view<T> dkv_m = make_matrix(dkv.data(), n, 2 * kc);
  ops.attention_backward(s, in.q(), in.k(), in.v(), cview(r.o, n, qc), std::span<const T>(r.lse),
                         cview(dout, n, qc), make_matrix(r.dq.data(), n, qc),
                         dkv_m.col_range(0, kc), dkv_m.col_range(kc, 2 * kc));
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < kc; ++j) {
      r.dk.push_back(dkv_m(i, j));
      r.dv.push_back(dkv_m(i, kc + j));
    }
  return r;
}

template <class T>
void check_equal(const run_out<T>& got, const run_out<T>& want, const attn_case& c) {
  const index_t n = c.tokens, qc = c.q_heads * c.head_dim, kc = c.kv_heads * c.head_dim;
  CHECK(rel(cview(got.o, n, qc), cview(want.o, n, qc)) <= tolerance<T>());
  CHECK(rel(cview(got.lse, c.q_heads, n), cview(want.lse, c.q_heads, n)) <= tolerance<T>());
  CHECK(rel(cview(got.dq, n, qc), cview(want.dq, n, qc)) <= tolerance<T>());
  CHECK(rel(cview(got.dk, n, kc), cview(want.dk, n, kc)) <= tolerance<T>());
  CHECK(rel(cview(got.dv, n, kc), cview(want.dv, n, kc)) <= tolerance<T>());
}

}  // namespace

TEST_CASE("the reference attention and RoPE equal the fp64 oracle") {
  for (const attn_case& c : cases) {
    if (c.window != 0 || c.softcap != 0) continue;  // the oracle has no window and no cap
    CAPTURE(c.tokens);
    CAPTURE(c.q_heads);
    CAPTURE(c.kv_heads);
    const packed<double> in(c, 3);
    const test::dense q = dense_of(in.q()), k = dense_of(in.k()), v = dense_of(in.v());
    const test::attention_shape a{c.q_heads, c.kv_heads, c.head_dim, c.kv_group, c.q_offset};
    const test::dense dout = test::random_dense(c.tokens, in.qc, 4);
    ops::reference::attention ref;
    const run_out<double> r = forward_backward(ref, c, in, dout.v);
    const test::attention_grads g = test::attention_backward(q, k, v, dout, a);
    const auto oracle = [](const test::dense& m) { return cview(m.v, m.rows, m.cols); };
    CHECK(rel(cview(r.o, c.tokens, in.qc), oracle(test::attention_forward(q, k, v, a))) <= 1e-13);
    CHECK(rel(cview(r.dq, c.tokens, in.qc), oracle(g.dq)) <= 1e-12);
    CHECK(rel(cview(r.dk, c.tokens, in.kc), oracle(g.dk)) <= 1e-12);
    CHECK(rel(cview(r.dv, c.tokens, in.kc), oracle(g.dv)) <= 1e-12);
    // RoPE from the tables at positions 0 … n − 1, forward and back.
    const double theta = 500.0;
    std::vector<double> cos, sin;
    ops::rope_tables(std::span<const double>(ops::default_inv_freq(theta, c.head_dim)), c.tokens,
                     cos, sin);
    std::vector<double> x = q.v;
    const index_t half = c.head_dim / 2;
    ops::reference::rope(make_matrix(x.data(), c.tokens, in.qc), c.head_dim, 0,
                         cview(cos, c.tokens, half), cview(sin, c.tokens, half), false);
    CHECK(rel(cview(x, c.tokens, in.qc), oracle(test::rope(q, c.head_dim, theta))) <= 1e-13);
  }
}

TEST_CASE("the soft-capped reference: its backward is the derivative of its forward, and it caps") {
  for (const attn_case& c : cases) {
    if (c.softcap == 0) continue;
    CAPTURE(c.tokens);
    const packed<double> in(c, 9);
    const index_t n = c.tokens, qc = in.qc, kc = in.kc, width = qc + 2 * kc;
    const std::vector<double> dout = test::random_dense(n, qc, 10).v;
    const std::vector<double> dir = test::random_dense(n, width, 11).v;
    ops::reference::attention ref;
    const run_out<double> r = forward_backward(ref, c, in, dout);
    // ⟨do, o(x + e·dir)⟩ by central differences against ⟨dq|dk|dv, dir⟩ from backward.
    const auto loss = [&](double e) {
      packed<double> at = in;
      for (std::size_t i = 0; i < at.data.size(); ++i) at.data[i] += e * dir[i];
      std::vector<double> o(static_cast<std::size_t>(n * qc)),
          lse(static_cast<std::size_t>(c.q_heads * n));
      ref.attention_forward(shape_of(c), at.q(), at.k(), at.v(), make_matrix(o.data(), n, qc),
                            std::span<double>(lse));
      double sum = 0;
      for (std::size_t i = 0; i < o.size(); ++i) sum += dout[i] * o[i];
      return sum;
    };
    double analytic = 0;
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < qc; ++j) analytic += r.dq[i * qc + j] * dir[i * width + j];
      for (index_t j = 0; j < kc; ++j)
        analytic += r.dk[i * kc + j] * dir[i * width + qc + j] +
                    r.dv[i * kc + j] * dir[i * width + qc + kc + j];
    }
    const double e = 1e-6, numeric = (loss(e) - loss(-e)) / (2 * e);
    CHECK(std::abs(numeric - analytic) <= 1e-6 * std::max(1.0, std::abs(numeric)));
    // The cap changes the result: without it the output differs.
    attn_case plain = c;
    plain.softcap = 0;
    const run_out<double> u = forward_backward(ref, plain, in, dout);
    CHECK(rel(cview(u.o, n, qc), cview(r.o, n, qc)) > 1e-3);
  }
}

TEST_CASE_TEMPLATE(
    "host attention ops equal the reference: forward and backward, causal and "
    "sliding window, GQA, strided views",
    T, float, double) {
  for (const attn_case& c : cases) {
    CAPTURE(c.tokens);
    CAPTURE(c.q_heads);
    CAPTURE(c.kv_heads);
    CAPTURE(c.window);
    const packed<T> in(c, 5);
    const std::vector<T> dout = test::whole<T>(test::random_dense(c.tokens, in.qc, 6));
    ops::reference::attention ref;
    host::ops fast;
    check_equal(forward_backward(fast, c, in, dout), forward_backward(ref, c, in, dout), c);
  }
}

TEST_CASE_TEMPLATE(
    "host RoPE equals the reference at any first position, and its inverse undoes "
    "it",
    T, float, double) {
  const index_t d = 6, heads = 3, rows = 5, first = 9, half = d / 2;
  std::vector<T> cos, sin;
  ops::rope_tables(std::span<const double>(ops::default_inv_freq(10000.0, d)), first + rows, cos,
                   sin);
  const auto c = cview(cos, first + rows, half), s = cview(sin, first + rows, half);
  // x is the middle columns of a wider matrix (a strided view).
  std::vector<T> wide = test::whole<T>(test::random_dense(rows, heads * d + 4, 8));
  const std::vector<T> before = wide;
  std::vector<T> ref_wide = wide;
  const auto x = make_matrix(wide.data(), rows, heads * d + 4).col_range(2, 2 + heads * d);
  const auto xr = make_matrix(ref_wide.data(), rows, heads * d + 4).col_range(2, 2 + heads * d);
  host::ops fast;
  fast.rope(x, d, first, c, s, false);
  ops::reference::rope(xr, d, first, c, s, false);
  CHECK(rel(matrix_view<const T>(x), matrix_view<const T>(xr)) <= tolerance<T>());
  CHECK(wide != before);
  fast.rope(x, d, first, c, s, true);
  CHECK(rel(cview(wide, rows, heads * d + 4), cview(before, rows, heads * d + 4)) <=
        tolerance<T>());
}

TEST_CASE_TEMPLATE(
    "host decode over a cache ring equals the reference, and a whole prefix "
    "decoded equals the forward",
    T, float, double) {
  for (const attn_case& c : cases) {
    CAPTURE(c.tokens);
    CAPTURE(c.window);
    const ops::attention_shape s = shape_of(c);
    const packed<T> in(c, 9);
    const index_t n = c.tokens, qc = in.qc, kc = in.kc;
    host::ops fast;
    ops::reference::attention ref;
    // The whole sequence in a cache of n rows, decoded in one call from position 0: the forward.
    {
      std::vector<T> o_dec(static_cast<std::size_t>(n * qc)), o_fwd(o_dec.size()),
          lse(static_cast<std::size_t>(c.q_heads * n));
      fast.attention_decode(s, in.q(), in.k(), in.v(), 0, make_matrix(o_dec.data(), n, qc));
      fast.attention_forward(s, in.q(), in.k(), in.v(), make_matrix(o_fwd.data(), n, qc),
                             std::span<T>(lse));
      CHECK(rel(cview(o_dec, n, qc), cview(o_fwd, n, qc)) <= tolerance<T>());
    }
    if (c.window == 0) continue;  // without a window, a ring shorter than the prefix loses keys
    // A ring of `ring` rows holding positions up to p; rows at positions p − m + 1 … p, where the
    // positions the first of them sees span the ring's wrap.
    const index_t ring = c.window + 3;
    const index_t m = std::min<index_t>(4, ring - std::max<index_t>(c.window, 1) + 1);
    const index_t last = ring + ring / 2 + m, first = last - m + 1;
    std::vector<T> keys(static_cast<std::size_t>(ring * kc)), values(keys.size());
    const test::dense kv = test::random_dense(last + 1, 2 * kc, 10);
    for (index_t p = 0; p <= last; ++p)
      for (index_t j = 0; j < kc; ++j) {
        keys[static_cast<std::size_t>((p % ring) * kc + j)] = static_cast<T>(kv(p, j));
        values[static_cast<std::size_t>((p % ring) * kc + j)] = static_cast<T>(kv(p, kc + j));
      }
    CAPTURE(first);
    const std::vector<T> q = test::whole<T>(test::random_dense(m, qc, 11));
    std::vector<T> got(static_cast<std::size_t>(m * qc)), want(got.size());
    fast.attention_decode(s, cview(q, m, qc), cview(keys, ring, kc), cview(values, ring, kc), first,
                          make_matrix(got.data(), m, qc));
    ref.attention_decode(s, cview(q, m, qc), cview(keys, ring, kc), cview(values, ring, kc), first,
                         make_matrix(want.data(), m, qc));
    CHECK(rel(cview(got, m, qc), cview(want, m, qc)) <= tolerance<T>());
  }
}

TEST_CASE("host decode refuses rows that would see more positions than the ring holds") {
  const attn_case c{4, 2, 1, 4, 3};
  const ops::attention_shape s = shape_of(c);
  std::vector<double> keys(3 * 4, 0.5), q(4 * 8, 0.25), o(4 * 8);
  host::ops fast;
  CHECK(test::error_of([&] {
          fast.attention_decode(s, cview(q, 4, 8), cview(keys, 3, 4), cview(keys, 3, 4), 10,
                                make_matrix(o.data(), 4, 8));
        }) ==
        "host::attention: query rows at positions 10 … 13 see 6 key positions but the cache ring "
        "holds 3 rows");
}
