#pragma once
/// \file
/// `chain<First, Second, Activation>`: two layers run one after the other with an elementwise
/// activation between them, e.g. the tensor-parallel MLP
///
///   x (replicate) → colwise → h (shard<1>) → act → a (shard<1>) → rowwise → y (replicate)
///
/// with one all-reduce in forward (rowwise output) and one in backward (colwise dx). The layouts
/// are checked at compile time: First's output layout must be Second's input layout. The chain
/// refers to its layers (composition, not ownership) and keeps h and a for backward.

#include <type_traits>

#include "tpx/core/tensor_view.hpp"
#include "tpx/ops/elementwise.hpp"
#include "tpx/layer/backend.hpp"

namespace tpx::inline v0::layer {

template <class First, class Second, class Activation = ops::activation::identity>
class chain {
  static_assert(
      std::is_same_v<typename First::style_type::output, typename Second::style_type::input>,
      "tpx::chain: the output layout of the first layer is not the input layout of the "
      "second; a colwise (shard<1>) output feeds a rowwise input, a replicated output "
      "feeds a colwise or rowwise_split input");
  static_assert(std::is_same_v<typename First::value_type, typename Second::value_type>,
                "tpx::chain: both layers must compute in the same value type");
  static_assert(std::is_same_v<typename First::backend_type, typename Second::backend_type>,
                "tpx::chain: both layers must run on the same backend");
  static_assert(ops::activation_ops_of<typename First::backend_type::ops, Activation,
                                       typename First::value_type>,
                "tpx::chain: the backend's ops cannot apply this activation (activate, "
                "activate_backward); cuda::ops has none yet: call the two linear layers and an "
                "activation kernel yourself");

 public:
  using value_type = typename First::value_type;
  using T = value_type;

  chain(First& first, Second& second) : first_(&first), second_(&second), ops_(first.comm()) {}

  First& first() noexcept { return *first_; }
  Second& second() noexcept { return *second_; }

  /// y = second(act(first(x))).
  void forward(matrix_view<const T> x, matrix_view<T> y) {
    const index_t tokens = x.rows();
    const index_t width = first_->output_cols();
    hidden_.resize(static_cast<std::size_t>(2 * tokens * width));
    const matrix_view<T> h = make_matrix(hidden_.data(), tokens, width);
    const matrix_view<T> a = make_matrix(hidden_.data() + tokens * width, tokens, width);
    first_->forward(x, h);
    ops_.activate(Activation{}, matrix_view<const T>(h), a);
    second_->forward(a, y);
  }

  /// dx from x (the input forward saw) and dy; leaves each layer's parameter gradients in it.
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    const index_t tokens = x.rows();
    const index_t width = first_->output_cols();
    expect(static_cast<index_t>(hidden_.size()) == 2 * tokens * width,
           "tpx::chain: backward for {} tokens needs the activations of a forward on {} tokens",
           tokens, width == 0 ? 0 : static_cast<index_t>(hidden_.size()) / (2 * width));
    const matrix_view<T> h = make_matrix(hidden_.data(), tokens, width);
    const matrix_view<T> a = make_matrix(hidden_.data() + tokens * width, tokens, width);
    grad_.resize(static_cast<std::size_t>(tokens * width));
    const matrix_view<T> da = make_matrix(grad_.data(), tokens, width);
    second_->backward(a, dy, da);
    ops_.activate_backward(Activation{}, matrix_view<const T>(h), da);
    first_->backward(x, da, dx);
  }

 private:
  First* first_;
  Second* second_;
  typename First::backend_type::ops ops_;
  typename First::buffer hidden_;  // [h | a], each [tokens, width]
  typename First::buffer grad_;    // dh
};

}  // namespace tpx::inline v0::layer
