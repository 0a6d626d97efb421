#pragma once
/// \file
/// The element-wise operations layers are made of, as plain reference loops over host views:
/// activations with their derivatives (`activation::identity`, `relu`, `silu`: `value(x)` and
/// `derivative(x)`), the gated SwiGLU of a packed [gate | up] activation and its backward, and the
/// residual add. Elementwise maps keep every layout, so an activation can sit between any two
/// layers of a chain. `host::ops` is these loops; another backend's ops compute the same.

#include <cmath>
#include <string_view>

#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::ops {

namespace activation {

struct identity {
  static constexpr std::string_view name = "identity";
  template <class T>
  static constexpr T value(T x) noexcept {
    return x;
  }
  template <class T>
  static constexpr T derivative(T) noexcept {
    return T(1);
  }
};

struct relu {
  static constexpr std::string_view name = "relu";
  template <class T>
  static constexpr T value(T x) noexcept {
    return x > T(0) ? x : T(0);
  }
  template <class T>
  static constexpr T derivative(T x) noexcept {
    return x > T(0) ? T(1) : T(0);
  }
};

/// x · sigmoid(x), the SwiGLU family's activation.
struct silu {
  static constexpr std::string_view name = "silu";
  template <class T>
  static T value(T x) noexcept {
    return x / (T(1) + std::exp(-x));
  }
  template <class T>
  static T derivative(T x) noexcept {
    const T s = T(1) / (T(1) + std::exp(-x));
    return s * (T(1) + x * (T(1) - s));
  }
};

}  // namespace activation

/// a = silu(gate) ⊙ up for h = [gate | up], h [n, 2i] → a [n, i].
template <class T>
void swiglu(matrix_view<const T> h, matrix_view<T> a) {
  const index_t i = a.cols();
  for (index_t r = 0; r < a.rows(); ++r)
    for (index_t j = 0; j < i; ++j) a(r, j) = activation::silu::value(h(r, j)) * h(r, i + j);
}

/// dh = [d gate | d up] [n, 2i] from h and da [n, i].
template <class T>
void swiglu_backward(matrix_view<const T> h, matrix_view<const T> da, matrix_view<T> dh) {
  const index_t i = da.cols();
  for (index_t r = 0; r < da.rows(); ++r)
    for (index_t j = 0; j < i; ++j) {
      const T g = h(r, j), u = h(r, i + j);
      dh(r, j) = da(r, j) * u * activation::silu::derivative(g);
      dh(r, i + j) = da(r, j) * activation::silu::value(g);
    }
}

/// a = act(h) and da ⊙= act'(h), element by element, for an activation of `activation`.
template <class Activation, class T>
void activate(matrix_view<const T> h, matrix_view<T> a) {
  for (index_t r = 0; r < h.rows(); ++r)
    for (index_t j = 0; j < h.cols(); ++j) a(r, j) = Activation::value(h(r, j));
}
template <class Activation, class T>
void activate_backward(matrix_view<const T> h, matrix_view<T> da) {
  for (index_t r = 0; r < h.rows(); ++r)
    for (index_t j = 0; j < h.cols(); ++j) da(r, j) *= Activation::derivative(h(r, j));
}

/// Ops `O` apply `Activation` on element type T: `activate(Activation{}, h, a)` and
/// `activate_backward(Activation{}, h, da)`, as the functions above.
template <class O, class Activation, class T>
concept activation_ops_of = requires(O& o, matrix_view<const T> in, matrix_view<T> out) {
  o.activate(Activation{}, in, out);
  o.activate_backward(Activation{}, in, out);
};

/// a += b, element by element.
template <class T>
void add_to(matrix_view<T> a, matrix_view<const T> b) {
  for (index_t i = 0; i < a.rows(); ++i)
    for (index_t j = 0; j < a.cols(); ++j) a(i, j) += b(i, j);
}

}  // namespace tpx::inline v0::ops
