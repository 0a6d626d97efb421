#pragma once
// Runs the routed experts (and a shared expert) of one `style::moe_experts` mode on the ranks of
// a platform (host threads, or the cuda suite's device-local ranks) for fixed routing — ids and
// weights given, not computed — against the fp64 oracle: y, dx, d(routing weights) and every
// expert-weight gradient shard a rank holds. Outputs are poisoned with NaN first.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "block_harness.hpp"
#include "layer/grads.hpp"
#include "linear_harness.hpp"
#include "tpx/layer/experts.hpp"

namespace tpx::test {

struct experts_case {
  index_t tokens = 7, experts = 8, hidden = 6, inter = 5, shared_inter = 0, top_k = 2;
  std::uint64_t seed = 500;
};

/// Shapes both suites run: a shared expert or not, top-1 to top-3, experts and ranks without
/// tokens, no tokens at all (E = 8, so ep ∈ {1, 2, 4, 8} divides it).
inline std::vector<experts_case> experts_cases() {
  return {
      {.tokens = 7, .experts = 8, .hidden = 6, .inter = 5, .top_k = 2},
      {.tokens = 5, .experts = 8, .hidden = 5, .inter = 4, .shared_inter = 3, .top_k = 3},
      {.tokens = 2, .experts = 8, .hidden = 4, .inter = 3, .shared_inter = 2, .top_k = 1},
      {.tokens = 0, .experts = 8, .hidden = 3, .inter = 2, .top_k = 2},
  };
}

/// Expert ids t·3 + j·5 + seed mod E (distinct within a token when 5 and E are coprime; some
/// experts get no token when tokens are few).
inline std::vector<std::int64_t> experts_ids(const experts_case& k) {
  std::vector<std::int64_t> ids;
  for (index_t t = 0; t < k.tokens; ++t)
    for (index_t j = 0; j < k.top_k; ++j)
      ids.push_back((t * 3 + j * 5 + static_cast<index_t>(k.seed)) % k.experts);
  return ids;
}

/// Every rank's worst relative error over y, dx, d weights and its expert-gradient shards.
template <class Style, class T, class P = host_platform>
double check_experts(int tp, const experts_case& k) {
  const moe_weights w = random_moe(k.experts, k.hidden, k.inter, k.shared_inter, k.seed);
  const dense x = random_dense(k.tokens, k.hidden, k.seed + 3);
  const dense dy = random_dense(k.tokens, k.hidden, k.seed + 4);
  const dense weights = random_dense(k.tokens, k.top_k, k.seed + 5);
  const std::vector<std::int64_t> ids = experts_ids(k);
  const experts_result ref = experts(x, w, ids, weights, dy);

  const std::vector<T> gate_up = stacked<T>(w.gate_up), down = stacked<T>(w.down);
  const std::vector<T> sgu = whole<T>(w.shared_gate_up), sdn = whole<T>(w.shared_down);
  const layer::experts_options options{.name = "mlp.experts",
                                       .n_experts = k.experts,
                                       .hidden = k.hidden,
                                       .inter = k.inter,
                                       .top_k = k.top_k,
                                       .shared_inter = k.shared_inter};
  constexpr bool split_tokens = std::is_same_v<typename Style::input, style::layout::shard<0>>;
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  worst_error err(tp);
  P::run(tp, [&](auto& engine, auto& c) {
    using comm_t = std::remove_reference_t<decltype(c)>;
    layer::experts<Style, typename P::backend, T> ex(
        engine, c, tensor_view<const T, 3>(gate_up.data(), {{k.experts, 2 * k.inter, k.hidden}}),
        tensor_view<const T, 3>(down.data(), {{k.experts, k.hidden, k.inter}}),
        make_matrix(sgu.data(), 2 * k.shared_inter, k.hidden),
        make_matrix(sdn.data(), k.hidden, k.shared_inter), options);
    const shard::interval mine =
        split_tokens ? rows.of(c.rank()).parts[0] : shard::interval{0, k.tokens};
    const index_t n = mine.size();
    const shard::pieces all_h{{{0, k.hidden}}}, all_k{{{0, k.top_k}}};
    const auto xl = P::store(detail::take<T>(x, mine, all_h));
    const auto dyl = P::store(detail::take<T>(dy, mine, all_h));
    const auto wl = P::store(detail::take<T>(weights, mine, all_k));
    const std::vector<std::int64_t> idl(ids.begin() + mine.begin * k.top_k,
                                        ids.begin() + mine.end * k.top_k);
    typename P::template buffer<T> yl(xl.size()), dxl(xl.size()), dwl(wl.size());
    P::poison(yl);
    P::poison(dxl);
    P::poison(dwl);
    const auto xv = make_matrix<const T>(xl.data(), n, k.hidden);
    const auto wv = make_matrix<const T>(wl.data(), n, k.top_k);
    const auto iv = make_matrix(idl.data(), n, k.top_k);
    ex.forward(xv, iv, wv, make_matrix(yl.data(), n, k.hidden), k.tokens);
    ex.backward(xv, iv, wv, make_matrix<const T>(dyl.data(), n, k.hidden),
                make_matrix(dxl.data(), n, k.hidden), make_matrix(dwl.data(), n, k.top_k),
                k.tokens);

    using L = typename Style::output;
    const auto full = [&](const auto& local, index_t cols) {
      return detail::gather_full<L, P, comm_t, T>(c, detail::span_of<T>(local), k.tokens, cols,
                                                  rows);
    };
    const auto on_host = [](tensor_view<const T, 3> v, std::vector<T>& keep) {
      keep = P::load(std::span<const T>(v.data(), static_cast<std::size_t>(v.size())));
      return tensor_view<const T, 3>(keep.data(), v.extents());
    };
    std::vector<T> gu, dn, sgu_h, sdn_h;
    const int r = c.rank();
    err.note(r, relative_error<T>(full(yl, k.hidden), ref.y, {0, k.tokens}, {0, k.hidden}));
    err.note(r, relative_error<T>(full(dxl, k.hidden), ref.dx, {0, k.tokens}, {0, k.hidden}));
    err.note(r, relative_error<T>(full(dwl, k.top_k), ref.dweights, {0, k.tokens}, {0, k.top_k}));
    err.note(r, ffn_grad_error<T>(on_host(ex.gate_up_grad(), gu), on_host(ex.down_grad(), dn),
                                  ex.local_experts(), ex.inter_slice(), k.inter,
                                  [&](index_t e, bool first) -> const dense& {
                                    return first ? ref.dgate_up[static_cast<std::size_t>(e)]
                                                 : ref.ddown[static_cast<std::size_t>(e)];
                                  }));
    if (k.shared_inter > 0)
      err.note(r,
               ffn_grad_error<T>(on_host(ex.shared_gate_up_grad(), sgu_h),
                                 on_host(ex.shared_down_grad(), sdn_h), {0, 1}, ex.shared_slice(),
                                 k.shared_inter, [&](index_t, bool first) -> const dense& {
                                   return first ? ref.dshared_gate_up : ref.dshared_down;
                                 }));
  });
  return err.max();
}

}  // namespace tpx::test
