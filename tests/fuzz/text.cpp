// The tokenizer's fuzz targets (text/tokenizer.hpp):
//   tokenizer_json  the input as a tokenizer.json: it loads (and encodes and decodes a text), or
//                   ends in a tpx::error
//   encode          the input as text (any bytes), through the four fixture tokenizers of
//                   tests/text/fixtures: never an error, every id within the vocabulary, decoding
//                   never fails, and the byte-level ones give the text back exactly (as valid
//                   UTF-8: invalid bytes become U+FFFD)
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz.hpp"
#include "tpx/core/json.hpp"
#include "tpx/text/tokenizer.hpp"

namespace {

const std::vector<tpx::text::tokenizer>& fixtures() {
  static const std::vector<tpx::text::tokenizer> all = [] {
    std::vector<tpx::text::tokenizer> v;
    for (const char* name : {"gpt2_bytelevel", "llama3_split", "llama2_sp", "metaspace"})
      v.push_back(
          tpx::text::tokenizer::from_file(std::filesystem::path(TPX_TEXT_FIXTURES) / name));
    return v;
  }();
  return all;
}

}  // namespace

TPX_FUZZ_TARGET(tokenizer_json) {
  tpx::fuzz::only_tpx_errors([&] {
    const tpx::text::tokenizer t(
        tpx::parse_json(tpx::fuzz::text(data, size), "fuzz tokenizer.json"), "fuzz");
    const std::vector<tpx::text::token_id> ids = t.encode("Hello, world! 123 \xF0\x9F\x98\x80");
    (void)t.decode(ids, false);
    (void)t.decode(ids, true);
  });
}

TPX_FUZZ_TARGET(encode) {
  const std::string_view in = tpx::fuzz::text(data, size);
  const std::string valid = tpx::text::valid_utf8(in);
  const std::vector<tpx::text::tokenizer>& all = fixtures();
  for (std::size_t k = 0; k < all.size(); ++k) {
    const tpx::text::tokenizer& t = all[k];
    const std::vector<tpx::text::token_id> ids = t.encode(in);
    for (const tpx::text::token_id id : ids)
      if (id < 0 || id >= t.vocab_size()) std::abort();
    (void)t.decode(ids, true);
    const bool byte_level = k < 2;  // gpt2_bytelevel, llama3_split
    if (byte_level && t.decode(t.encode(in, false)) != valid) std::abort();
  }
}
