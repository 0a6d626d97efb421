#pragma once
// Helpers shared by the test suites: conversions between the oracle's fp64 matrices and the
// layouts a style gives each rank, and error measures.

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "error_of.hpp"
#include "oracle.hpp"
#include "tpx/backend/host/communicator.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/shard/split.hpp"

namespace tpx::test {

/// Largest |got − want| over the block, relative to the largest |want| in the whole matrix (or 1).
template <class T>
double relative_error(std::span<const T> got, const dense& want, shard::interval rows,
                      shard::interval cols) {
  double scale = 0;
  for (double x : want.v) scale = std::max(scale, std::abs(x));
  scale = std::max(scale, 1.0);
  double worst = got.size() == static_cast<std::size_t>(rows.size() * cols.size()) ? 0.0 : INFINITY;
  if (std::isinf(worst)) return worst;
  std::size_t k = 0;
  for (index_t i = rows.begin; i < rows.end; ++i)
    for (index_t j = cols.begin; j < cols.end; ++j) {
      const double d = std::abs(as_double(got[k++]) - want(i, j));
      worst = std::max(worst, std::isnan(d) ? INFINITY : d);
    }
  return worst / scale;
}

/// Runs `fn` on `tp` thread ranks and returns the message of the tpx::error it ends with, or
/// "no error".
inline std::string error_of(int tp, const std::function<void(host::communicator&)>& fn) {
  return error_of([&] { host::run(tp, fn); });
}

/// The worst of every rank's errors (NaN counts as infinite).
struct worst_error {
  std::vector<double> by_rank;
  explicit worst_error(int tp) : by_rank(static_cast<std::size_t>(tp), 0.0) {}
  void note(int rank, double e) {
    double& w = by_rank[static_cast<std::size_t>(rank)];
    w = std::max(w, std::isnan(e) ? INFINITY : e);
  }
  double max() const { return *std::max_element(by_rank.begin(), by_rank.end()); }
};

inline dense column(const std::vector<double>& v) {
  dense m(static_cast<index_t>(v.size()), 1);
  m.v = v;
  return m;
}

}  // namespace tpx::test
