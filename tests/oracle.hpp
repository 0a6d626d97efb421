#pragma once
// The oracle: the unsharded layer in fp64 on the host, in plain loops that share no code with the
// engines under test.

#include <cmath>
#include <cstdint>
#include <vector>

#include "tpx/core/extents.hpp"

namespace tpx::test {

/// A dense row-major fp64 matrix.
struct dense {
  index_t rows = 0, cols = 0;
  std::vector<double> v;
  dense() = default;
  dense(index_t r, index_t c) : rows(r), cols(c), v(static_cast<std::size_t>(r * c), 0.0) {}
  double& operator()(index_t i, index_t j) { return v[static_cast<std::size_t>(i * cols + j)]; }
  double operator()(index_t i, index_t j) const {
    return v[static_cast<std::size_t>(i * cols + j)];
  }
};

/// Deterministic values in [-1, 1) from a seed (splitmix64), the same on every rank.
inline dense random_dense(index_t rows, index_t cols, std::uint64_t seed) {
  dense m(rows, cols);
  for (double& x : m.v) {
    seed += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x = static_cast<double>(z >> 11) / static_cast<double>(1ull << 52) - 1.0;
  }
  return m;
}

/// y = x · Wᵀ + b.
inline dense linear_forward(const dense& x, const dense& w, const std::vector<double>& b) {
  dense y(x.rows, w.rows);
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t o = 0; o < w.rows; ++o) {
      double acc = b.empty() ? 0.0 : b[static_cast<std::size_t>(o)];
      for (index_t i = 0; i < x.cols; ++i) acc += x(t, i) * w(o, i);
      y(t, o) = acc;
    }
  return y;
}

struct linear_grads {
  dense dx, dw;
  std::vector<double> db;
};

/// dx = dy · W, dW = dyᵀ · x, db = Σ_t dy.
inline linear_grads linear_backward(const dense& x, const dense& w, const dense& dy) {
  linear_grads g{dense(x.rows, x.cols), dense(w.rows, w.cols),
                 std::vector<double>(static_cast<std::size_t>(w.rows), 0.0)};
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t o = 0; o < w.rows; ++o) {
      const double d = dy(t, o);
      g.db[static_cast<std::size_t>(o)] += d;
      for (index_t i = 0; i < x.cols; ++i) {
        g.dx(t, i) += d * w(o, i);
        g.dw(o, i) += d * x(t, i);
      }
    }
  return g;
}

}  // namespace tpx::test
