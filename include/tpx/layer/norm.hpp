#pragma once
/// \file
/// `rms_norm<Style, Backend, T>`: y = x / sqrt(mean(x²) + eps) ⊙ w over the features of each
/// token, with the weight [features] replicated on every rank.
///
///   style::replicate<>           x, y replicated [T, H]; every rank computes the same dW
///   style::sequence_parallel     x, y split on tokens [T_r, H]; dW is partial per rank and
///                                all-reduced in backward (the norm's only collective)
///
/// Per-token arithmetic is the backend's `ops` (host loops, or kernels on the rank's stream).

#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/sequence_parallel.hpp"

namespace tpx::inline v0::layer {

template <class Style, backend_with_ops Backend, class T = float>
class rms_norm {
  static_assert(std::is_same_v<Style, style::replicate<>> ||
                    std::is_same_v<Style, style::sequence_parallel>,
                "tpx::rms_norm: the style must be style::replicate<> (replicated activations) or "
                "style::sequence_parallel (token shards, gradient all-reduce)");

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using comm_type = typename Backend::communicator;
  using buffer = typename Backend::template buffer<T>;

  /// `weight` [features], the same on every rank.
  rms_norm(comm_type& comm, std::span<const T> weight, double eps, std::string name = "norm")
      : comm_(&comm), ops_(comm), eps_(eps), name_(std::move(name)) {
    expect(eps >= 0, "{}: eps must be non-negative, got {}", name_, eps);
    Backend::upload(weight, weight_);
  }

  /// Where each rank's copy of the weight [features] sits: whole on every rank, as the style says.
  static shard::placement weight_placement(std::string_view name, index_t features, int tp) {
    return style::placement<Style>({name, {features}}, tp);
  }

  const std::string& name() const noexcept { return name_; }
  index_t features() const noexcept { return static_cast<index_t>(weight_.size()); }
  std::span<const T> weight() const noexcept { return {weight_.data(), weight_.size()}; }
  /// dW of the last backward; empty before the first.
  std::span<const T> weight_grad() const noexcept { return {dweight_.data(), dweight_.size()}; }

  void forward(matrix_view<const T> x, matrix_view<T> y) {
    expect_rows(x, "input");
    expect(y.rows() == x.rows() && y.cols() == x.cols(),
           "{}: the output is [{} × {}] but the input is [{} × {}]", name_, y.rows(), y.cols(),
           x.rows(), x.cols());
    ops_.rms_norm_forward(x, weight(), eps_, y);
  }

  /// dx (overwritten) and dW from x and dy.
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    expect_rows(x, "input");
    expect(dy.rows() == x.rows() && dy.cols() == x.cols() && dx.rows() == x.rows() &&
               dx.cols() == x.cols(),
           "{}: the output gradient is [{} × {}] and the input gradient [{} × {}] but the input "
           "is [{} × {}]",
           name_, dy.rows(), dy.cols(), dx.rows(), dx.cols(), x.rows(), x.cols());
    if (dweight_.size() != weight_.size()) dweight_.resize(weight_.size());
    const std::span<T> dw(dweight_.data(), dweight_.size());
    ops_.rms_norm_backward(x, weight(), eps_, dy, dx, dw);
    if constexpr (std::is_same_v<Style, style::sequence_parallel>) comm_->all_reduce(dw);
  }

 private:
  template <class V>
  void expect_rows(const V& x, std::string_view what) const {
    expect(x.cols() == features(), "{} ({}, rank {}): the {} has {} features but the weight has {}",
           name_, Style::name, comm_->rank(), what, x.cols(), features());
  }

  comm_type* comm_;
  typename Backend::ops ops_;
  double eps_;
  std::string name_;
  buffer weight_, dweight_;
};

}  // namespace tpx::inline v0::layer
