// RMSNorm (replicated and on token shards), the vocab-parallel embedding, its tied LM head and the
// vocab-parallel cross-entropy, against the fp64 oracle for tp ∈ {1, 2, 3, 4, 8} with token
// counts and vocabularies that tp does not divide.

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "../vocab_harness.hpp"

using namespace tpx;
using test::check_norm;
using test::check_tied_lm;
using test::lm_case;
using test::make_lm_case;

namespace {
constexpr int group_sizes[] = {1, 2, 3, 4, 8};
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
