#pragma once
/// \file
/// Top-k routing of router logits [tokens, E] to expert ids [tokens, k] and weights [tokens, k],
/// and its backward (d weights → d logits).
///
///   softmax (Mixtral, Qwen-MoE): p = softmax(l); the k largest p; w = p_sel (/ Σ p_sel when
///            renormalize) · scale
///   sigmoid (DeepSeek-V3): s = σ(l); the k largest s + selection_bias (the bias picks, it does not
///            weigh); w = s_sel (/ Σ s_sel when renormalize) · scale
///
/// Group-limited selection (DeepSeek's n_group, topk_group): the experts form n_group groups of
/// E / n_group in index order; a group's score is the sum of its two largest selection scores
/// (s + bias; its one score for a group of one) — DeepSeek-V3 — or its largest score (DeepSeek-V2's
/// "group_limited_greedy"), the topk_group best groups are kept, and the k experts are chosen among
/// theirs only — as transformers' DeepseekV3TopkRouter and DeepseekV2TopkRouter select. (V3's adds
/// 1e-20 to the renormalising sum, which changes no float64 weight by more than 1e-20 relative.)
///
/// Ties are broken towards the lower expert (and group) index.
///
/// `route` and `route_backward` here are the reference; a backend's ops model `routing_ops_of`
/// (`host::ops` with these loops). The ids are host memory: the experts' bookkeeping is computed
/// on the host, where they are.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::ops {

enum class scoring { softmax, sigmoid };
/// A group's score under group-limited selection: its two best selection scores summed
/// (DeepSeek-V3), or its best (DeepSeek-V2).
enum class group_scoring { top2_sum, best };

struct routing_options {
  std::string name = "router";
  index_t n_experts = 0;
  index_t top_k = 0;
  scoring score = scoring::softmax;
  bool renormalize = true;
  double scale = 1.0;                       ///< routed_scaling_factor
  std::vector<double> selection_bias = {};  ///< [E] or empty (e_score_correction_bias)
  index_t n_group = 1;     ///< groups the experts form for group-limited selection (1: none)
  index_t topk_group = 1;  ///< groups whose experts may be chosen
  group_scoring group_score = group_scoring::top2_sum;

  void check() const {
    expect(n_experts >= 1, "{}: there must be at least one expert, got {}", name, n_experts);
    expect(top_k >= 1 && top_k <= n_experts,
           "{}: top_k = {} must be between 1 and the number of experts, {}", name, top_k,
           n_experts);
    expect(selection_bias.empty() || static_cast<index_t>(selection_bias.size()) == n_experts,
           "{}: the selection bias has {} entries but there are {} experts", name,
           selection_bias.size(), n_experts);
    expect(n_group >= 1 && n_experts % n_group == 0 && topk_group >= 1 && topk_group <= n_group &&
               top_k <= topk_group * (n_experts / n_group),
           "{}: group-limited routing needs n_group to divide the {} experts, 1 ≤ topk_group ≤ "
           "n_group and top_k within the kept groups' experts (top_k ≤ topk_group · experts per "
           "group); got n_group = {}, topk_group = {}, top_k = {}",
           name, n_experts, n_group, topk_group, top_k);
  }
};

namespace detail {
/// Scores of one row of logits: softmax probabilities or sigmoids.
template <class T>
void scores(matrix_view<const T> logits, index_t t, scoring score, std::vector<T>& out) {
  const index_t e = logits.cols();
  out.resize(static_cast<std::size_t>(e));
  if (score == scoring::sigmoid) {
    for (index_t j = 0; j < e; ++j)
      out[static_cast<std::size_t>(j)] = T(1) / (T(1) + std::exp(-logits(t, j)));
    return;
  }
  T top = logits(t, 0), sum = 0;
  for (index_t j = 1; j < e; ++j) top = std::max(top, logits(t, j));
  for (index_t j = 0; j < e; ++j)
    sum += out[static_cast<std::size_t>(j)] = std::exp(logits(t, j) - top);
  for (T& p : out) p /= sum;
}
}  // namespace detail

/// ids and weights [tokens, k] from logits [tokens, E].
template <class T>
void route(matrix_view<const T> logits, const routing_options& opt, matrix_view<std::int64_t> ids,
           matrix_view<T> weights) {
  opt.check();
  const index_t tokens = logits.rows(), k = opt.top_k;
  expect(logits.cols() == opt.n_experts && ids.rows() == tokens && ids.cols() == k &&
             weights.rows() == tokens && weights.cols() == k,
         "{}: logits [{} × {}], ids [{} × {}] and weights [{} × {}] must be [tokens × {}] and "
         "[tokens × {}]",
         opt.name, tokens, logits.cols(), ids.rows(), ids.cols(), weights.rows(), weights.cols(),
         opt.n_experts, k);
  std::vector<T> s;
  std::vector<index_t> order(static_cast<std::size_t>(opt.n_experts));
  const index_t per_group = opt.n_experts / opt.n_group;
  std::vector<index_t> groups(static_cast<std::size_t>(opt.n_group));
  std::vector<double> group_score(static_cast<std::size_t>(opt.n_group));
  std::vector<bool> kept(static_cast<std::size_t>(opt.n_group), true);
  for (index_t t = 0; t < tokens; ++t) {
    detail::scores(logits, t, opt.score, s);
    const auto choice = [&](index_t e) {
      return static_cast<double>(s[static_cast<std::size_t>(e)]) +
             (opt.selection_bias.empty() ? 0.0 : opt.selection_bias[static_cast<std::size_t>(e)]);
    };
    if (opt.n_group > 1) {  // the topk_group groups of the best group scores
      for (index_t g = 0; g < opt.n_group; ++g) {
        double best = -INFINITY, second = -INFINITY;
        for (index_t e = g * per_group; e < (g + 1) * per_group; ++e) {
          const double c = choice(e);
          if (c > best)
            second = best, best = c;
          else if (c > second)
            second = c;
        }
        group_score[static_cast<std::size_t>(g)] =
            per_group > 1 && opt.group_score == group_scoring::top2_sum ? best + second : best;
        groups[static_cast<std::size_t>(g)] = g;
      }
      const auto gk = [&](index_t g) { return group_score[static_cast<std::size_t>(g)]; };
      std::partial_sort(
          groups.begin(), groups.begin() + opt.topk_group, groups.end(),
          [&](index_t a, index_t b) { return gk(a) > gk(b) || (gk(a) == gk(b) && a < b); });
      std::fill(kept.begin(), kept.end(), false);
      for (index_t j = 0; j < opt.topk_group; ++j)
        kept[static_cast<std::size_t>(groups[static_cast<std::size_t>(j)])] = true;
    }
    const auto key = [&](index_t e) {
      return kept[static_cast<std::size_t>(e / per_group)] ? choice(e) : -INFINITY;
    };
    for (index_t e = 0; e < opt.n_experts; ++e) order[static_cast<std::size_t>(e)] = e;
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](index_t a, index_t b) {
      return key(a) > key(b) || (key(a) == key(b) && a < b);
    });
    T sum = 0;
    for (index_t j = 0; j < k; ++j)
      sum += s[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
    for (index_t j = 0; j < k; ++j) {
      const index_t e = order[static_cast<std::size_t>(j)];
      ids(t, j) = e;
      weights(t, j) = s[static_cast<std::size_t>(e)] / (opt.renormalize ? sum : T(1)) *
                      static_cast<T>(opt.scale);
    }
  }
}

/// Ops `O` route on element type T: `route(logits, options, ids, weights)` and
/// `route_backward(logits, options, ids, dweights, dlogits)`, as the functions above.
template <class O, class T>
concept routing_ops_of = requires(O& o, matrix_view<const T> in, matrix_view<T> out,
                                  const routing_options& r, matrix_view<std::int64_t> ids,
                                  matrix_view<const std::int64_t> chosen) {
  o.route(in, r, ids, out);
  o.route_backward(in, r, chosen, in, out);
};

/// Routing ops for the two compute types.
template <class O>
concept routing_ops = routing_ops_of<O, float> && routing_ops_of<O, double>;

/// dlogits [tokens, E] from d weights [tokens, k], for the ids route chose from `logits`.
template <class T>
void route_backward(matrix_view<const T> logits, const routing_options& opt,
                    matrix_view<const std::int64_t> ids, matrix_view<const T> dweights,
                    matrix_view<T> dlogits) {
  const index_t tokens = logits.rows(), k = opt.top_k, n = opt.n_experts;
  expect(dweights.rows() == tokens && dweights.cols() == k && dlogits.rows() == tokens &&
             dlogits.cols() == n && ids.rows() == tokens && ids.cols() == k,
         "{}: d weights [{} × {}] and d logits [{} × {}] must be [{} × {}] and [{} × {}]", opt.name,
         dweights.rows(), dweights.cols(), dlogits.rows(), dlogits.cols(), tokens, k, tokens, n);
  std::vector<T> s, ds(static_cast<std::size_t>(n));
  const T scale = static_cast<T>(opt.scale);
  for (index_t t = 0; t < tokens; ++t) {
    detail::scores(logits, t, opt.score, s);
    std::fill(ds.begin(), ds.end(), T(0));
    // w_j = scale · s_j / S (S = Σ_sel s, or 1): ds_m = scale/S · (dw_m − Σ_j dw_j s_j / S).
    T sum = 0, dot = 0;
    for (index_t j = 0; j < k; ++j) {
      const T sj = s[static_cast<std::size_t>(ids(t, j))];
      sum += sj;
      dot += dweights(t, j) * sj;
    }
    if (!opt.renormalize) sum = T(1), dot = T(0);
    for (index_t j = 0; j < k; ++j)
      ds[static_cast<std::size_t>(ids(t, j))] += scale / sum * (dweights(t, j) - dot / sum);
    if (opt.score == scoring::sigmoid) {
      for (index_t e = 0; e < n; ++e) {
        const T se = s[static_cast<std::size_t>(e)];
        dlogits(t, e) = ds[static_cast<std::size_t>(e)] * se * (T(1) - se);
      }
    } else {
      T inner = 0;  // Σ_e p_e ds_e
      for (index_t e = 0; e < n; ++e)
        inner += s[static_cast<std::size_t>(e)] * ds[static_cast<std::size_t>(e)];
      for (index_t e = 0; e < n; ++e)
        dlogits(t, e) = s[static_cast<std::size_t>(e)] * (ds[static_cast<std::size_t>(e)] - inner);
    }
  }
}

}  // namespace tpx::inline v0::ops
