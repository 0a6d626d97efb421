#pragma once
/// \file
/// Elementwise activations for composed layers. Elementwise maps keep every layout, so they can sit
/// between any two layers of a chain. Each has `value(x)` and `derivative(x)` (d value / dx).

#include <cmath>
#include <string_view>

#include "tpx/version.hpp"

namespace tpx::inline v0::layer::activation {

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

}  // namespace tpx::inline v0::layer::activation
