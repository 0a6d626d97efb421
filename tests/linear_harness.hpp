#pragma once
// Runs one linear layer of any style on thread ranks against the fp64 oracle: builds the layer
// from the full weight, hands every rank its input in the style's input layout, runs forward and
// backward, gathers y, dx, dW and db back to full tensors with tpx's own collectives, and measures
// each against the oracle.
//
// Where ranks share output pieces (replicated KV heads, unit_colwise), each holder gets
// dy / (number of holders) for the shared columns: the partial shares whose sum is the oracle's
// dy. Where they share input pieces (unit_rowwise's replicas), each holder's dx is the oracle's
// dx / (number of holders), the share a layer before it sums.

#include <array>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/comm/collectives.hpp"
#include "tpx/layer/linear.hpp"

namespace tpx::test {

struct linear_case {
  index_t tokens = 6, out = 16, in = 8;
  bool bias = true;
  shard::split_kind split = shard::split_kind::balanced;
  std::uint64_t seed = 1;
  std::vector<shard::block> blocks = {};
  /// Builds the split dim's partition for a group size, when the case needs one.
  std::function<shard::partition(int)> partition = {};
};

/// A case whose split dim (out for colwise, in for rowwise) has `extent` elements and whose
/// other dim `other`, over 5 tokens.
template <class Style>
linear_case on_split_dim(index_t extent, index_t other) {
  linear_case k;
  k.tokens = 5;
  (Style::split_dim == 0 ? k.out : k.in) = extent;
  (Style::split_dim == 0 ? k.in : k.out) = other;
  return k;
}

/// Worst relative errors of one rank: y, dx, dW, db.
using linear_errors = std::array<double, 4>;

/// Where a harness runs: the backend, its buffers, how data gets in and out of them, and how
/// ranks are started. The cuda suite has its own (tests/cuda/platform.hpp).
struct host_platform {
  using backend = host::backend;
  template <class T>
  using buffer = std::vector<T>;

  template <class T>
  static buffer<T> store(const std::vector<T>& v) {
    return v;
  }
  template <class T>
  static std::vector<T> load(std::span<const T> s) {
    return {s.begin(), s.end()};
  }
  /// Fills with NaN, so elements a layer should write but does not are caught.
  template <class T>
  static void poison(buffer<T>& b) {
    std::fill(b.begin(), b.end(), std::numeric_limits<T>::quiet_NaN());
  }
  /// Runs `fn(engine, comm)` on `tp` thread ranks.
  template <class Fn>
  static void run(int tp, Fn fn) {
    host::gemm_engine engine;
    host::run(tp, [&](host::communicator& c) { fn(engine, c); });
  }
};

namespace detail {

/// Rows `rows` and the columns listed by `cols` of an oracle matrix, scaled per column, as T.
template <class T>
std::vector<T> take(const dense& m, shard::interval rows, const shard::pieces& cols,
                    const std::vector<double>& col_scale = {}) {
  std::vector<T> out;
  for (index_t i = rows.begin; i < rows.end; ++i)
    for (const shard::interval& p : cols.parts)
      for (index_t j = p.begin; j < p.end; ++j)
        out.push_back(static_cast<T>(
            m(i, j) * (col_scale.empty() ? 1.0 : col_scale[static_cast<std::size_t>(j)])));
  return out;
}

/// A buffer's elements as a span of const T (host vectors and device buffers alike).
template <class T, class Buffer>
std::span<const T> span_of(const Buffer& b) {
  return {b.data(), b.size()};
}

/// Every rank's [|pieces_r|, cols] block → the full [extent, cols] on the host, gathered in the
/// platform's memory with tpx's gather by partition.
template <class P, class Comm, class T>
std::vector<T> gather_rows(Comm& c, std::span<const T> local, index_t cols,
                           const shard::partition& p) {
  typename P::template buffer<T> full(static_cast<std::size_t>(p.extent() * cols));
  typename P::template buffer<T> scratch(static_cast<std::size_t>(comm::rows_scratch(cols, p)));
  comm::all_gather_rows<Comm, T>(c, make_matrix(local.data(), p.of(c.rank()).size(), cols),
                                 make_matrix(full.data(), p.extent(), cols), p,
                                 std::span<T>(scratch.data(), scratch.size()));
  return P::load(span_of<T>(full));
}

/// A tensor in layout L on every rank → the full [rows, cols] tensor on the host. `p` partitions
/// the sharded dim (tokens for shard<0>, features for shard<1>).
template <class L, class P, class Comm, class T>
std::vector<T> gather_full(Comm& c, std::span<const T> local, index_t rows, index_t cols,
                           const shard::partition& p) {
  if constexpr (std::is_same_v<L, style::layout::shard<0>>) {
    return gather_rows<P>(c, local, cols, p);
  } else if constexpr (std::is_same_v<L, style::layout::shard<1>>) {
    typename P::template buffer<T> full(static_cast<std::size_t>(rows * cols));
    typename P::template buffer<T> scratch(static_cast<std::size_t>(comm::cols_scratch(rows, p)));
    comm::all_gather_cols<Comm, T>(c, make_matrix(local.data(), rows, p.of(c.rank()).size()),
                                   make_matrix(full.data(), rows, cols), p,
                                   std::span<T>(scratch.data(), scratch.size()));
    return P::load(span_of<T>(full));
  } else {
    return P::load(local);
  }
}

/// Host shorthands: NaN-filling and gathering host vectors.
template <class T>
void poison(std::vector<T>& v) {
  host_platform::poison(v);
}
template <class Comm, class T>
std::vector<T> gather_rows(Comm& c, const std::vector<T>& local, index_t cols,
                           const shard::partition& p) {
  return gather_rows<host_platform, Comm, T>(c, std::span<const T>(local), cols, p);
}
template <class L, class Comm, class T>
std::vector<T> gather_full(Comm& c, const std::vector<T>& local, index_t rows, index_t cols,
                           const shard::partition& p) {
  return gather_full<L, host_platform, Comm, T>(c, std::span<const T>(local), rows, cols, p);
}

}  // namespace detail

/// Runs `Style` on `tp` ranks of platform P and returns every rank's errors against the oracle.
template <class Style, class T, class P = host_platform>
std::vector<linear_errors> check_linear(int tp, const linear_case& k) {
  using layer_t = layer::linear<Style, typename P::backend, T>;
  using style::layout::shard;
  const dense x = random_dense(k.tokens, k.in, k.seed);
  const dense w = random_dense(k.out, k.in, k.seed + 1);
  const dense dy = random_dense(k.tokens, k.out, k.seed + 2);
  std::vector<double> b;
  if (k.bias) b = random_dense(k.out, 1, k.seed + 3).v;
  const dense y_ref = linear_forward(x, w, b);
  const linear_grads g = linear_backward(x, w, dy);

  const std::vector<T> w_t = whole<T>(w);
  std::vector<T> b_t(b.begin(), b.end());
  const shard::partition tokens =
      shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  std::vector<linear_errors> errors(static_cast<std::size_t>(tp));
  layer::linear_options options{.name = "test.proj",
                                .out_features = k.out,
                                .in_features = k.in,
                                .split = k.split,
                                .blocks = k.blocks};
  if (k.partition) options.partition = k.partition(tp);

  P::run(tp, [&](auto& engine, auto& c) {
    using comm_t = std::remove_reference_t<decltype(c)>;
    layer_t lin(engine, c, make_matrix<const T>(w_t.data(), k.out, k.in), b_t, options);
    const shard::partition& features = lin.partition();
    // dy of output pieces held by several ranks is split into equal partial shares.
    std::vector<double> share(static_cast<std::size_t>(k.out), 1.0);
    if (Style::split_dim == 0) {
      const std::vector<int> holders = features.coverage();
      for (std::size_t j = 0; j < share.size(); ++j) share[j] = 1.0 / holders[j];
    }
    const shard::pieces all_in{{{0, k.in}}}, all_out{{{0, k.out}}};
    const auto rows_of = [&]<class L>(L) {
      return std::is_same_v<L, shard<0>> ? tokens.of(c.rank()).parts[0]
                                         : shard::interval{0, k.tokens};
    };
    using in_l = typename Style::input;
    using out_l = typename Style::output;
    const shard::interval in_rows = rows_of(in_l{}), out_rows = rows_of(out_l{});
    const shard::pieces& in_cols = std::is_same_v<in_l, shard<1>> ? lin.pieces() : all_in;
    const shard::pieces& out_cols = std::is_same_v<out_l, shard<1>> ? lin.pieces() : all_out;

    const auto x_local = P::store(detail::take<T>(x, in_rows, in_cols));
    const auto dy_local = P::store(detail::take<T>(dy, out_rows, out_cols, share));
    typename P::template buffer<T> y_local(
        static_cast<std::size_t>(out_rows.size() * out_cols.size()));
    typename P::template buffer<T> dx_local(x_local.size());
    P::poison(y_local);
    P::poison(dx_local);

    const auto xv = make_matrix<const T>(x_local.data(), in_rows.size(), in_cols.size());
    lin.forward(xv, make_matrix(y_local.data(), out_rows.size(), out_cols.size()));
    lin.backward(xv, make_matrix<const T>(dy_local.data(), out_rows.size(), out_cols.size()),
                 make_matrix(dx_local.data(), in_rows.size(), in_cols.size()));

    const auto part_of = [&]<class L>(L) -> const shard::partition& {
      return std::is_same_v<L, shard<0>> ? tokens : features;
    };
    const auto y_full = detail::gather_full<out_l, P, comm_t, T>(c, detail::span_of<T>(y_local),
                                                                 k.tokens, k.out, part_of(out_l{}));
    const auto dx_full = detail::gather_full<in_l, P, comm_t, T>(c, detail::span_of<T>(dx_local),
                                                                 k.tokens, k.in, part_of(in_l{}));
    const auto dw_full = detail::gather_full<typename Style::weight, P, comm_t, T>(
        c, lin.weight_grad().span(), k.out, k.in, features);

    linear_errors& e = errors[static_cast<std::size_t>(c.rank())];
    e[0] = relative_error<T>(y_full, y_ref, {0, k.tokens}, {0, k.out});
    // Input pieces held by several ranks (unit_rowwise's replicas): each holds its share of dx.
    dense dx_ref = g.dx;
    if (Style::split_dim == 1) {
      const std::vector<int> holders = features.coverage();
      for (index_t t = 0; t < k.tokens; ++t)
        for (index_t j = 0; j < k.in; ++j) dx_ref(t, j) /= holders[static_cast<std::size_t>(j)];
    }
    e[1] = relative_error<T>(dx_full, dx_ref, {0, k.tokens}, {0, k.in});
    e[2] = relative_error<T>(dw_full, g.dw, {0, k.out}, {0, k.in});
    e[3] = 0;
    if (k.bias) {
      // The bias is split with the weight's out dim (colwise) or whole.
      const auto db_full = Style::split_dim == 0
                               ? detail::gather_rows<P, comm_t, T>(c, lin.bias_grad(), 1, features)
                               : P::load(lin.bias_grad());
      e[3] = relative_error<T>(db_full, column(g.db), {0, k.out}, {0, 1});
    }
  });
  return errors;
}

}  // namespace tpx::test
