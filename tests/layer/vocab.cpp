// RMSNorm (replicated and on token shards), the vocab-parallel embedding, its tied LM head and the
// vocab-parallel cross-entropy, against the fp64 oracle for tp ∈ {1, 2, 3, 4, 8} with token
// counts and vocabularies that tp does not divide.

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "../linear_harness.hpp"
#include "tpx/layer/cross_entropy.hpp"
#include "tpx/layer/embedding.hpp"
#include "tpx/layer/norm.hpp"

using namespace tpx;

namespace {

constexpr int group_sizes[] = {1, 2, 3, 4, 8};

/// The worst of every rank's errors.
struct worst {
  std::vector<double> by_rank;
  explicit worst(int tp) : by_rank(static_cast<std::size_t>(tp), 0.0) {}
  void note(int rank, double e) {
    double& w = by_rank[static_cast<std::size_t>(rank)];
    w = std::max(w, e);
  }
  double max() const { return *std::max_element(by_rank.begin(), by_rank.end()); }
};

template <class Style, class T>
double check_norm(int tp, index_t tokens, index_t hidden) {
  constexpr bool sp = std::is_same_v<Style, style::sequence_parallel>;
  const test::dense x = test::random_dense(tokens, hidden, 31);
  const test::dense dy = test::random_dense(tokens, hidden, 32);
  std::vector<double> w = test::random_dense(hidden, 1, 33).v;
  for (double& v : w) v += 1.5;
  const double eps = 1e-6;
  const test::dense y_ref = test::rms_norm_forward(x, w, eps);
  const test::norm_grads g = test::rms_norm_backward(x, w, eps, dy);
  const shard::partition rows = shard::partition::split(tokens, tp, shard::split_kind::balanced);
  const shard::pieces all_cols{{{0, hidden}}};
  const std::vector<T> w_t(w.begin(), w.end());
  worst err(tp);
  host::run(tp, [&](host::communicator& c) {
    const shard::interval mine = sp ? rows.of(c.rank()).parts[0] : shard::interval{0, tokens};
    layer::rms_norm<Style, host::backend, T> norm(c, w_t, eps, "input_layernorm");
    const std::vector<T> xl = test::detail::take<T>(x, mine, all_cols);
    const std::vector<T> dyl = test::detail::take<T>(dy, mine, all_cols);
    std::vector<T> yl(xl.size()), dxl(xl.size());
    test::detail::poison(yl);
    test::detail::poison(dxl);
    const auto xv = make_matrix<const T>(xl.data(), mine.size(), hidden);
    norm.forward(xv, make_matrix(yl.data(), mine.size(), hidden));
    norm.backward(xv, make_matrix<const T>(dyl.data(), mine.size(), hidden),
                  make_matrix(dxl.data(), mine.size(), hidden));
    using L = typename Style::output;
    const auto y = test::detail::gather_full<L>(c, yl, tokens, hidden, rows);
    const auto dx = test::detail::gather_full<L>(c, dxl, tokens, hidden, rows);
    const std::vector<T> dw(norm.weight_grad().begin(), norm.weight_grad().end());
    err.note(c.rank(), test::relative_error<T>(y, y_ref, {0, tokens}, {0, hidden}));
    err.note(c.rank(), test::relative_error<T>(dx, g.dx, {0, tokens}, {0, hidden}));
    err.note(c.rank(), test::relative_error<T>(dw, test::column(g.dw), {0, hidden}, {0, 1}));
  });
  return err.max();
}

}  // namespace

TEST_CASE_TEMPLATE("RMSNorm, replicated and on token shards, reproduces the oracle", S,
                   style::replicate<>, style::sequence_parallel) {
  for (const int tp : group_sizes)
    for (const index_t tokens : {7, 16, 2, 0}) {
      CAPTURE(tp);
      CAPTURE(tokens);
      CHECK(check_norm<S, double>(tp, tokens, 10) < 1e-13);
      CHECK(check_norm<S, float>(tp, tokens, 10) < 1e-5);
    }
}

namespace {

struct lm_case {
  index_t tokens = 9, vocab = 23, hidden = 6;
  std::int64_t ignore = -100;
  std::vector<std::int64_t> ids = {}, targets = {};
};

lm_case make_lm_case(index_t tokens, index_t vocab, bool with_ignored) {
  lm_case k{.tokens = tokens, .vocab = vocab};
  for (index_t t = 0; t < tokens; ++t) {
    k.ids.push_back((t * 7 + 3) % vocab);
    k.targets.push_back((t * 5 + 1) % vocab);
  }
  if (with_ignored && tokens > 2)
    k.targets[1] = k.targets[static_cast<std::size_t>(tokens - 1)] = k.ignore;
  return k;
}

/// ids → vocab-parallel embedding → tied LM head → vocab-parallel cross-entropy, forward and
/// backward; returns the worst relative error of the loss, the embedding's output and the table's
/// gradient (embedding and head summed) over ranks.
template <class Style, class T>
double check_tied_lm(int tp, const lm_case& k) {
  constexpr bool sp = std::is_same_v<Style, style::vocab_parallel_sp>;
  const test::dense w = test::random_dense(k.vocab, k.hidden, 41);
  // The oracle.
  const test::dense e = test::embedding_forward(w, k.ids);
  const test::dense logits = test::linear_forward(e, w, {});
  const test::cross_entropy_result ce = test::cross_entropy(logits, k.targets, k.ignore);
  const test::linear_grads head = test::linear_backward(e, w, ce.dlogits);
  test::dense dw = test::embedding_backward(k.vocab, k.ids, head.dx);
  for (std::size_t i = 0; i < dw.v.size(); ++i) dw.v[i] += head.dw.v[i];

  const std::vector<T> w_t = test::whole<T>(w);
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  const shard::partition vocab = shard::partition::split(k.vocab, tp, shard::split_kind::balanced);
  worst err(tp);
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    layer::vocab_embedding<Style, host::backend, T> emb(engine, c,
                                                        make_matrix(w_t.data(), k.vocab, k.hidden),
                                                        {.vocab = k.vocab, .hidden = k.hidden});
    CHECK(emb.vocab_range() == vocab.of(c.rank()).parts[0]);
    layer::vocab_cross_entropy<host::backend, T> loss(
        c, {.vocab = k.vocab, .vocab_range = emb.vocab_range(), .ignore_index = k.ignore});
    const index_t mine = sp ? rows.of(c.rank()).size() : k.tokens;
    const index_t v_r = emb.vocab_range().size();
    std::vector<T> el(static_cast<std::size_t>(mine * k.hidden)), del(el.size());
    std::vector<T> lg(static_cast<std::size_t>(k.tokens * v_r)), dlg(lg.size());
    test::detail::poison(el);
    test::detail::poison(del);
    test::detail::poison(dlg);
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
    const auto e_full = test::detail::gather_full<L>(c, el, k.tokens, k.hidden, rows);
    const std::vector<T> dwl(emb.weight_grad().data(),
                             emb.weight_grad().data() + emb.weight_grad().size());
    const auto dw_full = test::detail::gather_rows(c, dwl, k.hidden, vocab);
    err.note(c.rank(), std::abs(static_cast<double>(l) - ce.loss) / std::max(1.0, ce.loss));
    err.note(c.rank(), test::relative_error<T>(e_full, e, {0, k.tokens}, {0, k.hidden}));
    err.note(c.rank(), test::relative_error<T>(dw_full, dw, {0, k.vocab}, {0, k.hidden}));
  });
  return err.max();
}

}  // namespace

TEST_CASE_TEMPLATE(
    "the vocab-parallel embedding, its tied LM head and the vocab-parallel cross-entropy "
    "reproduce the oracle's loss and table gradient",
    S, style::vocab_parallel<>, style::vocab_parallel_sp) {
  for (const int tp : group_sizes)
    for (const auto& [tokens, vocab] : {std::pair<index_t, index_t>{9, 23}, {8, 32}, {3, 5}}) {
      for (const bool ignored : {false, true}) {
        CAPTURE(tp);
        CAPTURE(tokens);
        CAPTURE(vocab);
        CAPTURE(ignored);
        const lm_case k = make_lm_case(tokens, vocab, ignored);
        CHECK(check_tied_lm<S, double>(tp, k) < 1e-12);
        CHECK(check_tied_lm<S, float>(tp, k) < 1e-5);
      }
    }
}

TEST_CASE("a cross-entropy over only ignored tokens is 0 with zero gradients") {
  lm_case k = make_lm_case(4, 6, false);
  for (std::int64_t& t : k.targets) t = k.ignore;
  host::run(2, [&](host::communicator& c) {
    const shard::interval own = shard::split(k.vocab, 2, c.rank(), shard::split_kind::balanced);
    layer::vocab_cross_entropy<host::backend, double> loss(
        c, {.vocab = k.vocab, .vocab_range = own, .ignore_index = k.ignore});
    const std::vector<double> lg(static_cast<std::size_t>(4 * own.size()), 1.0);
    std::vector<double> dlg(lg.size(), 5.0);
    const auto lv = make_matrix(lg.data(), 4, own.size());
    CHECK(loss.forward(lv, k.targets) == 0.0);
    CHECK(loss.valid_tokens() == 0);
    loss.backward(lv, k.targets, make_matrix(dlg.data(), 4, own.size()));
    for (const double d : dlg) CHECK(d == 0.0);
  });
}

TEST_CASE("token ids and targets outside the vocabulary are errors naming the token") {
  const std::vector<double> w(5 * 2, 0.25);
  host::gemm_engine engine;
  CHECK(test::error_of(2, [&](host::communicator& c) {
          layer::vocab_embedding<style::vocab_parallel<>, host::backend, double> emb(
              engine, c, make_matrix(w.data(), 5, 2), {.vocab = 5, .hidden = 2});
          const std::vector<std::int64_t> ids{0, 4, 5};
          std::vector<double> y(3 * 2);
          emb.forward(ids, make_matrix(y.data(), 3, 2));
        }) == "embed_tokens: token 2 has id 5, outside the vocabulary [0, 5)");
  CHECK(test::error_of(
            2,
            [&](host::communicator& c) {
              const shard::interval own = shard::split(5, 2, c.rank(), shard::split_kind::balanced);
              layer::vocab_cross_entropy<host::backend, double> loss(
                  c, {.vocab = 5, .vocab_range = own});
              const std::vector<std::int64_t> targets{-100, -1};
              const std::vector<double> lg(static_cast<std::size_t>(2 * own.size()), 0.0);
              loss.forward(make_matrix(lg.data(), 2, own.size()), targets);
            }) ==
        "cross_entropy: token 1 has target -1, outside the vocabulary [0, 5) and not the "
        "ignore_index -100");
}
