#pragma once
// Runs RMSNorm (replicated or on token shards) and the tied LM (vocab-parallel embedding → its LM
// head → vocab-parallel cross-entropy) on the ranks of a platform (tests/linear_harness.hpp's
// host_platform, or the cuda suite's) against the fp64 oracle, forward and backward, and returns
// the worst relative error over ranks. Inputs are stored in the platform's memory and outputs
// poisoned with NaN first, so an element a layer does not write fails.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "linear_harness.hpp"
#include "tpx/layer/cross_entropy.hpp"
#include "tpx/layer/embedding.hpp"
#include "tpx/layer/norm.hpp"

namespace tpx::test {

/// RMSNorm of `Style` (replicate<> or sequence_parallel) on `tp` ranks: y, dx and dW.
template <class Style, class T, class P = host_platform>
double check_norm(int tp, index_t tokens, index_t hidden) {
  constexpr bool sp = std::is_same_v<Style, style::sequence_parallel>;
  const dense x = random_dense(tokens, hidden, 31);
  const dense dy = random_dense(tokens, hidden, 32);
  std::vector<double> w = random_dense(hidden, 1, 33).v;
  for (double& v : w) v += 1.5;
  const double eps = 1e-6;
  const dense y_ref = rms_norm_forward(x, w, eps);
  const norm_grads g = rms_norm_backward(x, w, eps, dy);
  const shard::partition rows = shard::partition::split(tokens, tp, shard::split_kind::balanced);
  const shard::pieces all_cols{{{0, hidden}}};
  const std::vector<T> w_t(w.begin(), w.end());
  worst_error err(tp);
  P::run(tp, [&](auto&, auto& c) {
    using comm_t = std::remove_reference_t<decltype(c)>;
    const shard::interval mine = sp ? rows.of(c.rank()).parts[0] : shard::interval{0, tokens};
    layer::rms_norm<Style, typename P::backend, T> norm(c, w_t, eps, "input_layernorm");
    const auto xl = P::store(detail::take<T>(x, mine, all_cols));
    const auto dyl = P::store(detail::take<T>(dy, mine, all_cols));
    typename P::template buffer<T> yl(xl.size()), dxl(xl.size());
    P::poison(yl);
    P::poison(dxl);
    const auto xv = make_matrix<const T>(xl.data(), mine.size(), hidden);
    norm.forward(xv, make_matrix(yl.data(), mine.size(), hidden));
    norm.backward(xv, make_matrix<const T>(dyl.data(), mine.size(), hidden),
                  make_matrix(dxl.data(), mine.size(), hidden));
    using L = typename Style::output;
    const auto y =
        detail::gather_full<L, P, comm_t, T>(c, detail::span_of<T>(yl), tokens, hidden, rows);
    const auto dx =
        detail::gather_full<L, P, comm_t, T>(c, detail::span_of<T>(dxl), tokens, hidden, rows);
    const std::vector<T> dw = P::load(norm.weight_grad());
    err.note(c.rank(), relative_error<T>(y, y_ref, {0, tokens}, {0, hidden}));
    err.note(c.rank(), relative_error<T>(dx, g.dx, {0, tokens}, {0, hidden}));
    err.note(c.rank(), relative_error<T>(dw, column(g.dw), {0, hidden}, {0, 1}));
  });
  return err.max();
}

struct lm_case {
  index_t tokens = 9, vocab = 23, hidden = 6;
  std::int64_t ignore = -100;
  std::vector<std::int64_t> ids = {}, targets = {};
};

/// Ids and targets that cover the vocabulary unevenly; with `with_ignored`, two ignored targets.
inline lm_case make_lm_case(index_t tokens, index_t vocab, bool with_ignored, index_t hidden = 6) {
  lm_case k{.tokens = tokens, .vocab = vocab, .hidden = hidden};
  for (index_t t = 0; t < tokens; ++t) {
    k.ids.push_back((t * 7 + 3) % vocab);
    k.targets.push_back((t * 5 + 1) % vocab);
  }
  if (with_ignored && tokens > 2)
    k.targets[1] = k.targets[static_cast<std::size_t>(tokens - 1)] = k.ignore;
  return k;
}

/// ids → vocab-parallel embedding → tied LM head → vocab-parallel cross-entropy, forward and
/// backward; the worst relative error of the loss, the embedding's output, dlogits and the
/// table's gradient (embedding and head summed) over ranks.
template <class Style, class T, class P = host_platform>
double check_tied_lm(int tp, const lm_case& k) {
  constexpr bool sp = std::is_same_v<Style, style::vocab_parallel_sp>;
  const dense w = random_dense(k.vocab, k.hidden, 41);
  // The oracle.
  const dense e = embedding_forward(w, k.ids);
  const dense logits = linear_forward(e, w, {});
  const cross_entropy_result ce = cross_entropy(logits, k.targets, k.ignore);
  const linear_grads head = linear_backward(e, w, ce.dlogits);
  dense dw = embedding_backward(k.vocab, k.ids, head.dx);
  for (std::size_t i = 0; i < dw.v.size(); ++i) dw.v[i] += head.dw.v[i];

  const std::vector<T> w_t = whole<T>(w);
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  const shard::partition vocab = shard::partition::split(k.vocab, tp, shard::split_kind::balanced);
  worst_error err(tp);
  P::run(tp, [&](auto& engine, auto& c) {
    using comm_t = std::remove_reference_t<decltype(c)>;
    using backend_t = typename P::backend;
    layer::vocab_embedding<Style, backend_t, T> emb(engine, c,
                                                    make_matrix(w_t.data(), k.vocab, k.hidden),
                                                    {.vocab = k.vocab, .hidden = k.hidden});
    const shard::interval own = emb.vocab_range();
    CHECK(own == vocab.of(c.rank()).parts[0]);
    layer::vocab_cross_entropy<backend_t, T> loss(
        c, {.vocab = k.vocab, .vocab_range = own, .ignore_index = k.ignore});
    const index_t mine = sp ? rows.of(c.rank()).size() : k.tokens;
    const index_t v_r = own.size();
    typename P::template buffer<T> el(static_cast<std::size_t>(mine * k.hidden)), del(el.size());
    typename P::template buffer<T> lg(static_cast<std::size_t>(k.tokens * v_r)), dlg(lg.size());
    P::poison(el);
    P::poison(del);
    P::poison(lg);
    P::poison(dlg);
    const auto ev = make_matrix(el.data(), mine, k.hidden);
    const auto lv = make_matrix(lg.data(), k.tokens, v_r);
    emb.zero_grad();
    emb.forward(k.ids, ev);
    emb.head_forward(ev, lv);
    const T l = loss.forward(lv, k.targets);
    loss.backward(lv, k.targets, make_matrix(dlg.data(), k.tokens, v_r));
    emb.head_backward(ev, make_matrix<const T>(dlg.data(), k.tokens, v_r),
                      make_matrix(del.data(), mine, k.hidden));
    emb.backward(k.ids, make_matrix<const T>(del.data(), mine, k.hidden));

    using L = typename Style::output;
    const auto e_full =
        detail::gather_full<L, P, comm_t, T>(c, detail::span_of<T>(el), k.tokens, k.hidden, rows);
    const auto dlg_full = P::load(detail::span_of<T>(dlg));
    const auto dw_full = detail::gather_rows<P, comm_t, T>(
        c, std::span<const T>(emb.weight_grad().data(), emb.weight_grad().size()), k.hidden, vocab);
    err.note(c.rank(), std::abs(as_double(l) - ce.loss) / std::max(1.0, ce.loss));
    err.note(c.rank(), relative_error<T>(e_full, e, {0, k.tokens}, {0, k.hidden}));
    err.note(c.rank(),
             relative_error<T>(dlg_full, ce.dlogits, {0, k.tokens}, {own.begin, own.end}));
    err.note(c.rank(), relative_error<T>(dw_full, dw, {0, k.vocab}, {0, k.hidden}));
  });
  return err.max();
}

}  // namespace tpx::test
