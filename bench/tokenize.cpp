// tpx-bench --tokenize TOKENIZER --text FILE: the tokenizer's encoding speed (text/tokenizer.hpp)
// on a text file encoded as one text — MB/s and tokens/s, the best of 5 repetitions — with the
// ids' count and checksum, so that bench/compare/encode.py can time Hugging Face tokenizers on
// the same text in the same run and check the ids are equal. Built when Meson finds PCRE2.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common.hpp"
#include "tpx/io/file.hpp"
#include "tpx/text/tokenizer.hpp"

namespace tpx::bench {

void bench_tokenize(const options& o, report& out) {
  expect(!o.tokenizer.empty() && !o.text.empty(),
         "--tokenize needs --tokenize TOKENIZER (a tokenizer.json or a model directory) and --text "
         "FILE");
  const auto t0 = clock_type::now();
  const text::tokenizer t = text::tokenizer::from_file(o.tokenizer);
  const double load_s = since(t0);
  const std::string raw = io::read_text_file(o.text, "--text");
  std::vector<text::token_id> ids;
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < (o.quick ? 2 : 5); ++r) {
    const auto t1 = clock_type::now();
    ids = t.encode(raw, false);
    best = std::min(best, since(t1));
  }
  // Σ id · (position + 1) mod 2^61 − 1, as bench/compare/encode.py computes it (ids < 2^31 and
  // positions < 2^32: each product fits 63 bits).
  constexpr std::uint64_t p = (std::uint64_t{1} << 61) - 1;
  std::uint64_t sum = 0;
  for (std::size_t k = 0; k < ids.size(); ++k)
    sum = (sum + static_cast<std::uint64_t>(ids[k]) * (k + 1) % p) % p;
  const double mb = static_cast<double>(raw.size()) / 1e6;
  out.line(fmt::format("#\n# tokenizer: {} ({} tokens, loaded in {:.1f} ms); text: {} ({} bytes)",
                       o.tokenizer, t.vocab_size(), load_s * 1e3, o.text, raw.size()));
  out.line(fmt::format("# {:>10} {:>10} {:>12} {:>10}", "tokens", "MB/s", "tokens/s", "ms"));
  out.row(fmt::format("  {:>10} {:>10.2f} {:>12.0f} {:>10.2f}", ids.size(), mb / best,
                      static_cast<double>(ids.size()) / best, best * 1e3),
          fmt::format("{{\"mode\":\"tokenize\",\"bytes\":{},\"tokens\":{},\"checksum\":{},"
                      "\"mb_per_s\":{},\"tokens_per_s\":{},\"seconds\":{},\"load_seconds\":{}}}",
                      raw.size(), ids.size(), sum, mb / best,
                      static_cast<double>(ids.size()) / best, best, load_s));
}

}  // namespace tpx::bench
