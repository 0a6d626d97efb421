#pragma once
// Runs one linear layer of any style on thread ranks against the fp64 oracle: builds the layer
// from the full weight, hands every rank its input in the style's input layout, runs forward and
// backward, gathers y, dx, dW and db back to full tensors with tpx's own collectives, and measures
// each against the oracle.
//
// Where ranks share output pieces (replicated KV heads), each holder gets dy / (number of
// holders) for the shared columns: the partial shares whose sum is the oracle's dy.

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

/// Worst relative errors of one rank: y, dx, dW, db.
using linear_errors = std::array<double, 4>;

namespace detail {

template <class T>
void poison(std::vector<T>& v) {
  std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
}

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

/// Every rank's [|pieces_r|, cols] block → the full [extent, cols], with tpx's gather by partition.
template <class Comm, class T>
std::vector<T> gather_rows(Comm& c, const std::vector<T>& local, index_t cols,
                           const shard::partition& p) {
  std::vector<T> full(static_cast<std::size_t>(p.extent() * cols));
  std::vector<T> scratch(static_cast<std::size_t>(comm::rows_scratch(cols, p)));
  comm::all_gather_rows<Comm, T>(c, make_matrix(local.data(), p.of(c.rank()).size(), cols),
                                 make_matrix(full.data(), p.extent(), cols), p, scratch);
  return full;
}

/// A tensor in layout L on every rank → the full [rows, cols] tensor. `p` partitions the sharded
/// dim (tokens for shard<0>, features for shard<1>).
template <class L, class Comm, class T>
std::vector<T> gather_full(Comm& c, const std::vector<T>& local, index_t rows, index_t cols,
                           const shard::partition& p) {
  if constexpr (std::is_same_v<L, style::layout::shard<0>>) {
    return gather_rows(c, local, cols, p);
  } else if constexpr (std::is_same_v<L, style::layout::shard<1>>) {
    std::vector<T> full(static_cast<std::size_t>(rows * cols));
    std::vector<T> scratch(static_cast<std::size_t>(comm::cols_scratch(rows, p)));
    comm::all_gather_cols<Comm, T>(c, make_matrix(local.data(), rows, p.of(c.rank()).size()),
                                   make_matrix(full.data(), rows, cols), p, scratch);
    return full;
  } else {
    return local;
  }
}

}  // namespace detail

/// Runs `Style` on `tp` thread ranks and returns every rank's errors against the oracle.
template <class Style, class T>
std::vector<linear_errors> check_linear(int tp, const linear_case& k) {
  using layer_t = layer::linear<Style, host::backend, T>;
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

  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
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

    const std::vector<T> x_local = detail::take<T>(x, in_rows, in_cols);
    const std::vector<T> dy_local = detail::take<T>(dy, out_rows, out_cols, share);
    std::vector<T> y_local(static_cast<std::size_t>(out_rows.size() * out_cols.size()));
    std::vector<T> dx_local(x_local.size());
    detail::poison(y_local);
    detail::poison(dx_local);

    const auto xv = make_matrix<const T>(x_local.data(), in_rows.size(), in_cols.size());
    lin.forward(xv, make_matrix(y_local.data(), out_rows.size(), out_cols.size()));
    lin.backward(xv, make_matrix<const T>(dy_local.data(), out_rows.size(), out_cols.size()),
                 make_matrix(dx_local.data(), in_rows.size(), in_cols.size()));

    const auto part_of = [&]<class L>(L) -> const shard::partition& {
      return std::is_same_v<L, shard<0>> ? tokens : features;
    };
    const auto y_full = detail::gather_full<out_l>(c, y_local, k.tokens, k.out, part_of(out_l{}));
    const auto dx_full = detail::gather_full<in_l>(c, dx_local, k.tokens, k.in, part_of(in_l{}));
    const std::vector<T> dw_local(lin.weight_grad().data(),
                                  lin.weight_grad().data() + lin.weight_grad().size());
    const auto dw_full =
        detail::gather_full<typename Style::weight>(c, dw_local, k.out, k.in, features);

    linear_errors& e = errors[static_cast<std::size_t>(c.rank())];
    e[0] = relative_error<T>(y_full, y_ref, {0, k.tokens}, {0, k.out});
    e[1] = relative_error<T>(dx_full, g.dx, {0, k.tokens}, {0, k.in});
    e[2] = relative_error<T>(dw_full, g.dw, {0, k.out}, {0, k.in});
    e[3] = 0;
    if (k.bias) {
      const std::vector<T> db_local(lin.bias_grad().begin(), lin.bias_grad().end());
      // The bias is split with the weight's out dim (colwise) or whole.
      const auto db_full =
          Style::split_dim == 0 ? detail::gather_rows(c, db_local, 1, features) : db_local;
      e[3] = relative_error<T>(db_full, column(g.db), {0, k.out}, {0, 1});
    }
  });
  return errors;
}

}  // namespace tpx::test
