#pragma once
// Runs one linear layer of any style on thread ranks against the fp64 oracle: builds the layer
// from the full weight, hands every rank its input in the style's input layout, runs forward and
// backward, gathers y, dx, dW and db back to full tensors with tpx's own collectives, and measures
// each against the oracle.

#include <array>
#include <limits>
#include <mutex>
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
};

/// Worst relative errors of one rank: y, dx, dW, db.
using linear_errors = std::array<double, 4>;

namespace detail {

/// Gathers a rank's block of a tensor in layout L back to the full [rows, cols] tensor.
template <class L, class Comm, class T>
std::vector<T> gather_full(Comm& c, const std::vector<T>& local, index_t rows, index_t cols,
                           std::span<const index_t> counts) {
  std::vector<T> full(static_cast<std::size_t>(rows * cols));
  const auto full_view = make_matrix(full.data(), rows, cols);
  if constexpr (std::is_same_v<L, style::layout::shard<0>>) {
    const index_t mine = counts[static_cast<std::size_t>(c.rank())];
    comm::all_gather_rows<Comm, T>(c, make_matrix(local.data(), mine, cols), full_view, counts);
  } else if constexpr (std::is_same_v<L, style::layout::shard<1>>) {
    const index_t mine = counts[static_cast<std::size_t>(c.rank())];
    std::vector<T> scratch(static_cast<std::size_t>(comm::cols_scratch(rows, counts)));
    comm::all_gather_cols<Comm, T>(c, make_matrix(local.data(), rows, mine), full_view, counts,
                                   scratch);
  } else {
    full = local;
  }
  return full;
}

template <class T>
void poison(std::vector<T>& v) {
  std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
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
  const std::vector<index_t> tokens = shard::split_sizes(k.tokens, tp, shard::split_kind::balanced);
  std::vector<linear_errors> errors(static_cast<std::size_t>(tp));

  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    layer_t lin(
        engine, c, make_matrix<const T>(w_t.data(), k.out, k.in), b_t,
        {.name = "test.proj", .out_features = k.out, .in_features = k.in, .split = k.split});
    const shard::interval features = lin.slice();
    const shard::interval tok = shard::split(k.tokens, tp, c.rank(), shard::split_kind::balanced);
    const auto rows_of = [&]<class L>(L) {
      return std::is_same_v<L, shard<0>> ? tok : shard::interval{0, k.tokens};
    };
    const auto cols_of = [&]<class L>(L, index_t full) {
      return std::is_same_v<L, shard<1>> ? features : shard::interval{0, full};
    };
    const auto counts_of = [&]<class L>(L) -> std::span<const index_t> {
      return std::is_same_v<L, shard<0>> ? std::span<const index_t>(tokens) : lin.counts();
    };
    using in_l = typename Style::input;
    using out_l = typename Style::output;
    const shard::interval in_rows = rows_of(in_l{}), in_cols = cols_of(in_l{}, k.in);
    const shard::interval out_rows = rows_of(out_l{}), out_cols = cols_of(out_l{}, k.out);

    const std::vector<T> x_local = block<T>(x, in_rows, in_cols);
    const std::vector<T> dy_local = block<T>(dy, out_rows, out_cols);
    std::vector<T> y_local(static_cast<std::size_t>(out_rows.size() * out_cols.size()));
    std::vector<T> dx_local(x_local.size());
    detail::poison(y_local);
    detail::poison(dx_local);

    const auto xv = make_matrix<const T>(x_local.data(), in_rows.size(), in_cols.size());
    lin.forward(xv, make_matrix(y_local.data(), out_rows.size(), out_cols.size()));
    lin.backward(xv, make_matrix<const T>(dy_local.data(), out_rows.size(), out_cols.size()),
                 make_matrix(dx_local.data(), in_rows.size(), in_cols.size()));

    using w_l = typename Style::weight;
    const auto y_full = detail::gather_full<out_l>(c, y_local, k.tokens, k.out, counts_of(out_l{}));
    const auto dx_full = detail::gather_full<in_l>(c, dx_local, k.tokens, k.in, counts_of(in_l{}));
    const std::vector<T> dw_local(lin.weight_grad().data(),
                                  lin.weight_grad().data() + lin.weight_grad().size());
    const auto dw_full = detail::gather_full<w_l>(c, dw_local, k.out, k.in, lin.counts());

    linear_errors& e = errors[static_cast<std::size_t>(c.rank())];
    e[0] = relative_error<T>(y_full, y_ref, {0, k.tokens}, {0, k.out});
    e[1] = relative_error<T>(dx_full, g.dx, {0, k.tokens}, {0, k.in});
    e[2] = relative_error<T>(dw_full, g.dw, {0, k.out}, {0, k.in});
    e[3] = 0;
    if (k.bias) {
      const std::vector<T> db_local(lin.bias_grad().begin(), lin.bias_grad().end());
      // The bias is split with the weight's out dim (colwise) or whole.
      const auto db_full = Style::split_dim == 0
                               ? detail::gather_full<shard<0>>(c, db_local, k.out, 1, lin.counts())
                               : db_local;
      e[3] = relative_error<T>(db_full, column(g.db), {0, k.out}, {0, 1});
    }
  });
  return errors;
}

}  // namespace tpx::test
