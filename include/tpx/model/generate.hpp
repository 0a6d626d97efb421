#pragma once
/// \file
/// Generation: several prompts at once through one KV cache of each rank's own KV heads.
///
///   step 0    every prompt's tokens, packed, one prefill (each sequence causal within itself)
///   step k    one token per unfinished sequence, packed, one cached decode step
///   a sequence finishes after an end-of-sequence id (kept as its last token) or
///   `max_new_tokens` new tokens; the others go on
///
/// The next token is chosen from the last position's logits of each sequence, gathered (those
/// rows only) over the vocabulary so that every rank holds the same values and chooses the same
/// token (no broadcast needed): greedy (arg max, ties to the lower id) at temperature 0, else a
/// sample of softmax(logits / temperature) restricted to the `top_k` most likely ids and then to
/// the smallest most-likely set whose probability reaches `top_p` (transformers' order of these
/// warpers). Sampling draws from a splitmix64 stream per sequence, seeded by `seed` and the
/// sequence's index in the batch: the same seed and prompts give the same tokens on every run and
/// rank.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/layer/kv_cache.hpp"

namespace tpx::inline v0::model {

/// How the next token is chosen from a row of logits.
struct sampling {
  double temperature = 0;  ///< 0: greedy
  index_t top_k = 0;       ///< keep the k most likely ids (0: all)
  double top_p = 1;        ///< keep the smallest most-likely set reaching this probability
  std::uint64_t seed = 0;
};

struct generation_options {
  index_t max_new_tokens = 0;
  std::vector<std::int64_t> eos = {};  ///< ids that end a sequence (model::config::eos_token_ids)
  sampling sample = {};
  /// Called with (prompt index, id) as each new token is chosen, on every rank (the same calls
  /// on each), before the next step runs — to stream the tokens; empty: nothing is called.
  std::function<void(index_t prompt, std::int64_t id)> on_token = {};
};

/// A reproducible stream of uniform numbers in [0, 1) (splitmix64, 53 bits per draw).
class uniform_stream {
 public:
  explicit uniform_stream(std::uint64_t seed) : state_(seed) {}
  double next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-53;
  }

 private:
  std::uint64_t state_;
};

/// Checks `s`: a sentence naming the option otherwise.
inline void expect_valid(const sampling& s) {
  expect(std::isfinite(s.temperature) && s.temperature >= 0,
         "sampling: temperature must be a finite number ≥ 0 (0: greedy), got {}", s.temperature);
  expect(s.top_k >= 0, "sampling: top_k must be ≥ 0 (0: every id), got {}", s.top_k);
  expect(s.top_p > 0 && s.top_p <= 1, "sampling: top_p must be in (0, 1], got {}", s.top_p);
}

/// Checks that every prompt has tokens and every id is in [0, vocab): a sentence naming the
/// prompt and the token otherwise.
inline void expect_prompts(const std::vector<std::vector<std::int64_t>>& prompts, index_t vocab) {
  expect(!prompts.empty(), "generate: no prompts");
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    expect(!prompts[i].empty(), "generate: prompt {} is empty", i);
    for (std::size_t t = 0; t < prompts[i].size(); ++t)
      expect(prompts[i][t] >= 0 && prompts[i][t] < vocab,
             "generate: token {} of prompt {} has id {}, outside the vocabulary [0, {})", t, i,
             prompts[i][t], vocab);
  }
}

/// The id chosen from `logits` [V] under `s`, drawing from `u` when sampling.
template <class T>
std::int64_t choose(std::span<const T> logits, const sampling& s, uniform_stream& u) {
  const index_t v = static_cast<index_t>(logits.size());
  expect(v >= 1, "sampling: no logits to choose from");
  if (s.temperature == 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  // Ids by descending logit, ties to the lower id.
  std::vector<index_t> order(static_cast<std::size_t>(v));
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
  });
  std::size_t keep = s.top_k > 0 ? std::min<std::size_t>(order.size(), s.top_k) : order.size();
  const double top = static_cast<double>(logits[static_cast<std::size_t>(order[0])]);
  std::vector<double> p(keep);
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i)
    sum += p[i] = std::exp((static_cast<double>(logits[static_cast<std::size_t>(order[i])]) - top) /
                           s.temperature);
  if (s.top_p < 1) {
    double mass = 0;
    std::size_t n = 0;
    while (n < keep && mass < s.top_p * sum) mass += p[n++];
    keep = std::max<std::size_t>(n, 1);
    sum = 0;
    for (std::size_t i = 0; i < keep; ++i) sum += p[i];
  }
  const double at = u.next() * sum;
  double run = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    run += p[i];
    if (at < run) return order[i];
  }
  return order[keep - 1];
}

/// The new ids of every prompt (in prompt order), generated as the file comment says by `lm`
/// (a model::causal_lm; every rank calls this with the same prompts and options). `cache_bytes`,
/// when given, receives this rank's KV cache size.
template <class LM>
std::vector<std::vector<std::int64_t>> generate(
    LM& lm, const std::vector<std::vector<std::int64_t>>& prompts, const generation_options& o,
    index_t* cache_bytes = nullptr) {
  using T = typename LM::value_type;
  expect(o.max_new_tokens >= 0, "generate: cannot generate {} tokens", o.max_new_tokens);
  expect_valid(o.sample);
  expect_prompts(prompts, lm.vocab());
  index_t longest = 0;
  for (const std::vector<std::int64_t>& p : prompts)
    longest = std::max(longest, static_cast<index_t>(p.size()));
  const index_t n = static_cast<index_t>(prompts.size());
  std::vector<std::vector<std::int64_t>> out(prompts.size());
  if (cache_bytes != nullptr) *cache_bytes = 0;
  if (o.max_new_tokens == 0) return out;
  typename LM::cache kv = lm.make_cache(n, longest + o.max_new_tokens);
  if (cache_bytes != nullptr) *cache_bytes = kv.bytes();
  std::vector<uniform_stream> streams;
  for (index_t i = 0; i < n; ++i)
    streams.emplace_back(o.sample.seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(i)));
  std::vector<std::int64_t> ids;
  std::vector<layer::segment> step;
  for (index_t i = 0; i < n; ++i) {
    const std::vector<std::int64_t>& p = prompts[static_cast<std::size_t>(i)];
    ids.insert(ids.end(), p.begin(), p.end());
    step.push_back({i, static_cast<index_t>(p.size())});
  }
  while (!step.empty()) {
    lm.forward_cached(ids, kv, step);
    // Only each sequence's last position is chosen from: gather those rows alone.
    std::vector<index_t> last_rows;
    index_t row = 0;
    for (const layer::segment& g : step) {
      row += g.tokens;
      last_rows.push_back(row - 1);
    }
    const std::vector<T> full = lm.gather_logits(last_rows);
    std::vector<std::int64_t> next_ids;
    std::vector<layer::segment> next;
    for (std::size_t i = 0; i < step.size(); ++i) {
      const layer::segment& g = step[i];
      const std::span<const T> last(full.data() + static_cast<index_t>(i) * lm.vocab(),
                                    static_cast<std::size_t>(lm.vocab()));
      std::vector<std::int64_t>& mine = out[static_cast<std::size_t>(g.seq)];
      mine.push_back(choose(last, o.sample, streams[static_cast<std::size_t>(g.seq)]));
      if (o.on_token) o.on_token(g.seq, mine.back());
      const bool ended = std::find(o.eos.begin(), o.eos.end(), mine.back()) != o.eos.end();
      if (ended || static_cast<index_t>(mine.size()) == o.max_new_tokens) continue;
      next_ids.push_back(mine.back());
      next.push_back({g.seq, 1});
    }
    ids = std::move(next_ids);
    step = std::move(next);
  }
  return out;
}

}  // namespace tpx::inline v0::model
