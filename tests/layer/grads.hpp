#pragma once
// Compares one rank's parameter-gradient shards with the oracle's full gradients: a linear's rows
// or columns by its partition, an experts layer's experts and intermediate slice; and the
// central difference that checks the oracle's own gradients.

#include <algorithm>
#include <cmath>
#include <functional>

#include "../oracle.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/shard/partition.hpp"

namespace tpx::test {

/// Largest |got − want| over the scale of what it was compared with (largest |want|, at least 1).
class error_meter {
 public:
  void compare(double got, double want) {
    scale_ = std::max(scale_, std::abs(want));
    const double d = std::abs(got - want);
    worst_ = std::isnan(d) ? INFINITY : std::max(worst_, d);
  }
  double relative() const { return worst_ / scale_; }

 private:
  double worst_ = 0, scale_ = 1;
};

/// A linear layer's dW shard (rows split when split_dim is 0, columns when 1, else whole) against
/// the full dW.
template <class Linear>
double linear_grad_error(const Linear& lin, const dense& full) {
  error_meter m;
  const auto dw = lin.weight_grad();
  for (index_t i = 0; i < dw.rows(); ++i)
    for (index_t j = 0; j < dw.cols(); ++j) {
      const index_t gi = Linear::split_dim == 0 ? lin.pieces().global(i) : i;
      const index_t gj = Linear::split_dim == 1 ? lin.pieces().global(j) : j;
      m.compare(dw(i, j), full(gi, gj));
    }
  return m.relative();
}

/// A vector gradient held whole on every rank.
template <class T>
double vector_grad_error(std::span<const T> got, const std::vector<double>& want) {
  error_meter m;
  if (got.size() != want.size()) return INFINITY;
  for (std::size_t i = 0; i < got.size(); ++i) m.compare(got[i], want[i]);
  return m.relative();
}

/// FFN shards d gate_up [E_l, 2·I_r, H] and d down [E_l, H, I_r] of experts `experts`, slice
/// `slice` of I, against the oracle's per-expert [2I, H] (gate rows, then up rows) and [H, I].
template <class T>
double ffn_grad_error(tensor_view<const T, 3> dgu, tensor_view<const T, 3> ddn,
                      shard::interval experts, shard::interval slice, index_t inter,
                      const std::function<const dense&(index_t, bool)>& want) {
  error_meter m;
  const index_t ir = slice.size(), hidden = ddn.extent(1);
  for (index_t le = 0; le < experts.size(); ++le) {
    const dense &gu = want(experts.begin + le, true), &dn = want(experts.begin + le, false);
    for (index_t row = 0; row < 2 * ir; ++row)
      for (index_t col = 0; col < hidden; ++col)
        m.compare(dgu(le, row, col), gu((row < ir ? 0 : inter) + slice.begin + row % ir, col));
    for (index_t row = 0; row < hidden; ++row)
      for (index_t col = 0; col < ir; ++col)
        m.compare(ddn(le, row, col), dn(row, slice.begin + col));
  }
  return m.relative();
}

/// Every gradient of a moe layer on this rank (router, experts, shared expert).
template <class Moe>
double moe_grad_error(Moe& layer, const moe_result& ref, index_t inter, index_t shared_inter) {
  using T = typename Moe::value_type;
  const auto dr = layer.router().weight_grad();
  error_meter router;
  for (index_t i = 0; i < dr.rows(); ++i)
    for (index_t j = 0; j < dr.cols(); ++j) router.compare(dr(i, j), ref.drouter(i, j));
  const auto& ex = layer.experts_layer();
  double worst = router.relative();
  worst = std::max(
      worst, ffn_grad_error<T>(ex.gate_up_grad(), ex.down_grad(), ex.local_experts(),
                               ex.inter_slice(), inter, [&](index_t e, bool first) -> const dense& {
                                 return first ? ref.dgate_up[static_cast<std::size_t>(e)]
                                              : ref.ddown[static_cast<std::size_t>(e)];
                               }));
  if (shared_inter > 0)
    worst =
        std::max(worst, ffn_grad_error<T>(ex.shared_gate_up_grad(), ex.shared_down_grad(), {0, 1},
                                          ex.shared_slice(), shared_inter,
                                          [&](index_t, bool first) -> const dense& {
                                            return first ? ref.dshared_gate_up : ref.dshared_down;
                                          }));
  if (ex.shared_gate()) {  // Qwen2-MoE's gate, [1, H] whole on every rank
    const auto dg = ex.shared_gate()->weight_grad();
    error_meter gate;
    for (index_t j = 0; j < dg.cols(); ++j) gate.compare(dg(0, j), ref.dshared_gate(0, j));
    worst = std::max(worst, gate.relative());
  }
  return worst;
}

/// d loss / d v by a central difference of step 1e-6; `v` is restored.
inline double central_difference(double& v, const std::function<double()>& loss) {
  const double h = 1e-6, keep = v;
  v = keep + h;
  const double up = loss();
  v = keep - h;
  const double down = loss();
  v = keep;
  return (up - down) / (2 * h);
}

/// Σ a ⊙ b, the loss whose gradient with respect to y is dy.
inline double dot(const dense& a, const dense& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.v.size(); ++i) s += a.v[i] * b.v[i];
  return s;
}

}  // namespace tpx::test
