#pragma once
/// \file
/// `linear<Style, Backend, T>`: one `nn.Linear` (y = x · Wᵀ + b, W stored [out, in]) split over
/// the ranks of a communicator as `Style` says, with forward and backward running exactly the
/// style's conjugate collectives.
///
/// The layer is built from the full weight and bias (every rank passes the same); it keeps only
/// its shard. Activations are row-major `[tokens, features]` views in the layouts the style names:
/// `Style::input` for x and dx, `Style::output` for y and dy. Backward overwrites dx and the
/// layer's own weight and bias gradients; x must be the input forward saw.
///
/// Scratch memory grows to the largest token count seen and is then reused, so steady-state
/// forward and backward allocate nothing.

#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"

namespace tpx::inline v0::layer {

/// How a linear layer is built.
struct linear_options {
  std::string name = "linear";  ///< the tensor name used in error messages
  index_t out_features = 0;     ///< rows of the full weight
  index_t in_features = 0;      ///< columns of the full weight
  shard::split_kind split = shard::split_kind::balanced;
};

namespace detail {
template <class>
inline constexpr bool always_false = false;

template <class S>
inline constexpr bool is_linear_style = false;
template <style::colwise_output O>
inline constexpr bool is_linear_style<style::colwise<O>> = true;
template <style::rowwise_input I>
inline constexpr bool is_linear_style<style::rowwise<I>> = true;
template <style::grad_sync G>
inline constexpr bool is_linear_style<style::replicate<G>> = true;
}  // namespace detail

/// Primary template: only the linear styles (colwise, rowwise, replicate) have a linear layer.
template <class Style, class Backend, class T = float>
class linear {
  static_assert(
      detail::always_false<Style>,
      "tpx::linear: this style has no linear layer; use style::colwise, style::rowwise or "
      "style::replicate, or specialise tpx::layer::linear for your style");
};

template <class Style, backend Backend, class T>
requires detail::is_linear_style<Style>
class linear<Style, Backend, T> {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tpx::linear: the compute type must be float or double");

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  using buffer = typename Backend::template buffer<T>;
  static constexpr int split_dim = Style::split_dim;

  /// Builds this rank's shard of `full_weight` [out, in] and `full_bias` [out] (empty: no bias).
  linear(engine_type& engine, comm_type& comm, matrix_view<const T> full_weight,
         std::span<const T> full_bias, linear_options options)
      : engine_(&engine), comm_(&comm), opt_(std::move(options)) {
    const extents<2> shape{{opt_.out_features, opt_.in_features}};
    expect(full_weight.rows() == shape[0] && full_weight.cols() == shape[1],
           "{}: the weight is [{} × {}] but the layer is [{} × {}] (out_features × in_features)",
           opt_.name, full_weight.rows(), full_weight.cols(), shape[0], shape[1]);
    expect(full_bias.empty() || static_cast<index_t>(full_bias.size()) == shape[0],
           "{}: the bias has {} elements but out_features is {}", opt_.name, full_bias.size(),
           shape[0]);
    const int tp = comm.size();
    slice_ = Style::slice(shape, tp, comm.rank(), opt_.split, opt_.name + ".weight");
    local_ = Style::local_shape(shape, tp, comm.rank(), opt_.split, opt_.name + ".weight");
    for (int r = 0; r < tp; ++r)
      counts_.push_back(Style::slice(shape, tp, r, opt_.split, opt_.name + ".weight").size());
    has_bias_ = !full_bias.empty();

    std::vector<T> host(static_cast<std::size_t>(local_.size()));
    const matrix_view<const T> part =
        split_dim == 0   ? full_weight.row_range(slice_.begin, slice_.end)
        : split_dim == 1 ? full_weight.col_range(slice_.begin, slice_.end)
                         : full_weight;
    for (index_t i = 0; i < part.rows(); ++i)
      for (index_t j = 0; j < part.cols(); ++j)
        host[static_cast<std::size_t>(i * part.cols() + j)] = part(i, j);
    Backend::upload(std::span<const T>(host), weight_);
    dweight_.resize(host.size());
    if (has_bias_) {
      const std::span<const T> b = split_dim == 0
                                       ? full_bias.subspan(static_cast<std::size_t>(slice_.begin),
                                                           static_cast<std::size_t>(slice_.size()))
                                       : full_bias;
      Backend::upload(b, bias_);
      dbias_.resize(b.size());
    }
  }

  // --- shapes --------------------------------------------------------------------------------

  const std::string& name() const noexcept { return opt_.name; }
  index_t out_features() const noexcept { return opt_.out_features; }
  index_t in_features() const noexcept { return opt_.in_features; }
  /// The `[out, in]` shard this rank holds.
  const extents<2>& local_shape() const noexcept { return local_; }
  /// The interval of the split dim this rank holds (the whole dim for replicate).
  const shard::interval& slice() const noexcept { return slice_; }
  /// Every rank's size of the split dim.
  std::span<const index_t> counts() const noexcept { return counts_; }
  bool has_bias() const noexcept { return has_bias_; }
  /// Columns x and dx have on this rank.
  index_t input_cols() const noexcept {
    return std::is_same_v<typename Style::input, style::layout::shard<1>> ? local_[1]
                                                                          : opt_.in_features;
  }
  /// Columns y and dy have on this rank.
  index_t output_cols() const noexcept {
    return std::is_same_v<typename Style::output, style::layout::shard<1>> ? local_[0]
                                                                           : opt_.out_features;
  }

  // --- parameters ----------------------------------------------------------------------------

  matrix_view<const T> weight() const {
    return make_matrix<const T>(weight_.data(), local_[0], local_[1]);
  }
  matrix_view<const T> weight_grad() const {
    return make_matrix<const T>(dweight_.data(), local_[0], local_[1]);
  }
  std::span<const T> bias() const noexcept { return {bias_.data(), bias_.size()}; }
  std::span<const T> bias_grad() const noexcept { return {dbias_.data(), dbias_.size()}; }

  // --- compute -------------------------------------------------------------------------------

  /// y = x · W_rᵀ (+ b), with the style's forward collectives.
  void forward(matrix_view<const T> x, matrix_view<T> y) {
    expect_activation(x, input_cols(), "input", x.rows());
    expect_activation(y, output_cols(), "output", x.rows());
    const index_t tokens = x.rows();
    const matrix_view<const T> x_local = local_input(x);
    const std::span<const T> b(bias_.data(), bias_.size());

    if constexpr (std::is_same_v<typename Style::output_pair, comm::gather_from_parallel>) {
      const std::span<T> scratch =
          reserve(tokens * local_[0] + comm::cols_scratch(tokens, counts_));
      const matrix_view<T> y_local = make_matrix(scratch.data(), tokens, local_[0]);
      engine_->gemm(gemm::gemm_args<T>{
          .op_b = gemm::op::transpose, .a = x_local, .b = weight(), .c = y_local, .bias = b});
      comm::gather_from_parallel::forward<comm_type, T>(
          *comm_, y_local, y, counts_, scratch.subspan(static_cast<std::size_t>(y_local.size())));
    } else if constexpr (std::is_same_v<typename Style::output_pair, comm::reduce_from_parallel>) {
      engine_->gemm(
          gemm::gemm_args<T>{.op_b = gemm::op::transpose, .a = x_local, .b = weight(), .c = y});
      comm::reduce_from_parallel::forward<comm_type, T>(*comm_, y,
                                                        reserve(y.is_contiguous() ? 0 : y.size()));
      if (has_bias_) engine_->add_bias(y, b);  // once, after the reduction
    } else {
      engine_->gemm(gemm::gemm_args<T>{
          .op_b = gemm::op::transpose, .a = x_local, .b = weight(), .c = y, .bias = b});
    }
  }

  /// dx, dW_r and db_r from x and dy, with the style's backward collectives.
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    expect_activation(x, input_cols(), "input", x.rows());
    expect_activation(dy, output_cols(), "output gradient", x.rows());
    expect_activation(dx, input_cols(), "input gradient", x.rows());
    const index_t tokens = x.rows();
    const matrix_view<const T> x_local = local_input(x);
    const matrix_view<const T> dy_local =
        std::is_same_v<typename Style::output_pair, comm::gather_from_parallel>
            ? comm::gather_from_parallel::backward(dy, slice_)
            : dy;

    // dX first, so its collective could overlap the weight-gradient GEMM on an async backend.
    if constexpr (std::is_same_v<typename Style::input_pair, comm::split_to_parallel>) {
      const std::span<T> scratch =
          reserve(tokens * local_[1] + comm::cols_scratch(tokens, counts_));
      const matrix_view<T> dx_local = make_matrix(scratch.data(), tokens, local_[1]);
      engine_->gemm(gemm::gemm_args<T>{.a = dy_local, .b = weight(), .c = dx_local});
      comm::split_to_parallel::backward<comm_type, T>(
          *comm_, dx_local, dx, counts_,
          scratch.subspan(static_cast<std::size_t>(dx_local.size())));
    } else {
      engine_->gemm(gemm::gemm_args<T>{.a = dy_local, .b = weight(), .c = dx});
      if constexpr (std::is_same_v<typename Style::input_pair, comm::copy_to_parallel>)
        comm::copy_to_parallel::backward<comm_type, T>(*comm_, dx,
                                                       reserve(dx.is_contiguous() ? 0 : dx.size()));
    }

    const matrix_view<T> dw = make_matrix(dweight_.data(), local_[0], local_[1]);
    engine_->gemm(
        gemm::gemm_args<T>{.op_a = gemm::op::transpose, .a = dy_local, .b = x_local, .c = dw});
    const std::span<T> db(dbias_.data(), dbias_.size());
    if (has_bias_) engine_->bias_grad(dy_local, db);
    if constexpr (std::is_same_v<Style, style::replicate<style::grad_sync::all_reduce>>) {
      comm_->all_reduce(std::span<T>(dweight_.data(), dweight_.size()));
      if (has_bias_) comm_->all_reduce(db);
    }
  }

 private:
  matrix_view<const T> local_input(matrix_view<const T> x) const {
    if constexpr (std::is_same_v<typename Style::input_pair, comm::split_to_parallel>)
      return comm::split_to_parallel::forward(x, slice_);
    else
      return x;
  }

  template <class V>
  void expect_activation(const V& v, index_t cols, std::string_view what, index_t tokens) const {
    expect(v.cols() == cols && v.rows() == tokens,
           "{} ({}, tp = {}, rank {}): the {} is [{} × {}] but must be [{} × {}] (tokens × "
           "features, {} layout)",
           opt_.name, Style::name, comm_->size(), comm_->rank(), what, v.rows(), v.cols(), tokens,
           cols, what.starts_with("input") ? Style::input::name : Style::output::name);
  }

  std::span<T> reserve(index_t n) {
    if (static_cast<index_t>(scratch_.size()) < n) scratch_.resize(static_cast<std::size_t>(n));
    return {scratch_.data(), static_cast<std::size_t>(n)};
  }

  engine_type* engine_;
  comm_type* comm_;
  linear_options opt_;
  shard::interval slice_{};
  extents<2> local_{};
  std::vector<index_t> counts_;
  bool has_bias_ = false;
  buffer weight_, dweight_, bias_, dbias_, scratch_;
};

}  // namespace tpx::inline v0::layer
