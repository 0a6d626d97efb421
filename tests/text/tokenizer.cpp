// The tokenizer (text/tokenizer.hpp) against Hugging Face `tokenizers` 0.23: four small BPE
// tokenizers of the kinds tpx reads — byte-level with GPT-2's regex, a Llama-3 Split regex with
// ignore_merges and a BOS template, SentencePiece-style with byte fallback (Llama-2), Metaspace
// with Digits and a non-special added token (Mistral) — trained by tests/text/
// make_tokenizer_fixtures.py, which wrote the ids and decoded texts `tokenizers` gives for every
// text of a corpus (whitespace runs, digits, punctuation, code, emoji, CJK, accents, special
// tokens inside text, invalid UTF-8). And UTF-8 repair, GPT-2's byte map, and the refusals.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../error_of.hpp"
#include "tpx/io/file.hpp"
#include "tpx/text/tokenizer.hpp"

using namespace tpx;
namespace fs = std::filesystem;

namespace {

fs::path fixtures() {
  const char* dir = std::getenv("TPX_TEXT_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_TEXT_FIXTURES is not set: run this test through meson");
  return dir;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::vector<std::string> corpus() {
  const nlohmann::json j = io::read_json_file(fixtures() / "corpus.json", "corpus");
  std::vector<std::string> texts;
  for (const nlohmann::json& t : j.at("texts")) texts.push_back(from_hex(t.get<std::string>()));
  return texts;
}

/// Whether `t` encodes `text` as `tokenizers` did and decodes the ids to its texts (`w`, one
/// case of an expected.json): the ids with and without the template's specials, the text with
/// and without the special tokens.
bool agrees(const text::tokenizer& t, const nlohmann::json& w, const std::string& text) {
  const std::vector<text::token_id> ids = t.encode(text);
  return ids == w.at("ids").get<std::vector<text::token_id>>() &&
         t.encode(text, false) == w.at("ids_plain").get<std::vector<text::token_id>>() &&
         t.decode(ids) == w.at("decoded").get<std::string>() &&
         t.decode(ids, true) == w.at("decoded_skip").get<std::string>();
}

/// How many texts of the corpus `t` agrees on with `tokenizers` (`expected`, an expected.json);
/// with `check`, each one is a CHECK.
int agreeing(const text::tokenizer& t, const fs::path& expected, bool check) {
  const nlohmann::json want = io::read_json_file(expected, "expected");
  const std::vector<std::string> texts = corpus();
  REQUIRE(want.at("cases").size() == texts.size());
  int agree = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(i);
    CAPTURE(texts[i]);
    const bool same = agrees(t, want.at("cases")[i], texts[i]);
    if (check) CHECK(same);
    agree += same;
  }
  return agree;
}

/// Checks `t` on every text of the corpus against `tokenizers`' ids and decoded texts.
void check_corpus(const text::tokenizer& t, const fs::path& expected) {
  agreeing(t, expected, true);
}

}  // namespace

TEST_CASE("the tokenizer gives tokenizers' ids and decoded texts on every text of the corpus") {
  for (const char* name : {"gpt2_bytelevel", "llama3_split", "llama2_sp", "metaspace"}) {
    CAPTURE(name);
    check_corpus(text::tokenizer::from_file(fixtures() / name),
                 fixtures() / name / "expected.json");
  }
}

// Run by the real suite (tests/real/real_test.py, with --no-skip) on the tokenizer.json that
// tools/real-model wrote (SmolLM2-135M-Instruct's: 49,152 tokens, 17 special), against the ids
// tokenizers gave it (tests/real/tokenizer_expected.json).
TEST_CASE("a downloaded tokenizer gives tokenizers' ids on the corpus" * doctest::skip()) {
  const char* tokenizer = std::getenv("TPX_TEXT_TOKENIZER");
  const char* expected = std::getenv("TPX_TEXT_EXPECTED");
  REQUIRE_MESSAGE((tokenizer != nullptr && expected != nullptr),
                  "set TPX_TEXT_TOKENIZER and TPX_TEXT_EXPECTED (the real suite does)");
  check_corpus(text::tokenizer::from_file(tokenizer), expected);
}

TEST_CASE("the corpus tells tokenizers apart: merge order and GPT-2's regex change the ids") {
  // Checks that the comparison above can fail: the byte-level tokenizer with its merges' ranks
  // reversed, or read with use_regex off (merging across words), agrees on fewer texts.
  const nlohmann::json j =
      io::read_json_file(fixtures() / "gpt2_bytelevel" / "tokenizer.json", "t");
  const int all = static_cast<int>(corpus().size());
  CHECK(agreeing(text::tokenizer(j, "as written"), fixtures() / "gpt2_bytelevel" / "expected.json",
                 false) == all);
  nlohmann::json reversed = j;
  std::reverse(reversed["model"]["merges"].begin(), reversed["model"]["merges"].end());
  CHECK(agreeing(text::tokenizer(reversed, "reversed merges"),
                 fixtures() / "gpt2_bytelevel" / "expected.json", false) < all);
  nlohmann::json no_regex = j;
  REQUIRE(no_regex.at("pre_tokenizer").at("use_regex") == true);
  no_regex["pre_tokenizer"]["use_regex"] = false;
  CHECK(agreeing(text::tokenizer(no_regex, "no regex"),
                 fixtures() / "gpt2_bytelevel" / "expected.json", false) < all);
}

TEST_CASE("invalid UTF-8 becomes U+FFFD per maximal ill-formed subpart, as Python decodes it") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(text::valid_utf8("ok \xE2\x82\xAC") == "ok \xE2\x82\xAC");
  CHECK(text::valid_utf8("a\xFF"
                         "b") == "a" + r + "b");
  CHECK(text::valid_utf8("\xE6\x97 x") == r + " x");             // a truncated 3-byte sequence
  CHECK(text::valid_utf8("\xC0\xAF") == r + r);                  // overlong: two
  CHECK(text::valid_utf8("\xED\xA0\x80") == r + r + r);          // a surrogate: three
  CHECK(text::valid_utf8("\xF0\x9F\x98") == r);                  // cut at the end
  CHECK(text::valid_utf8("\xF4\x90\x80\x80") == r + r + r + r);  // past U+10FFFF
}

TEST_CASE("GPT-2's byte map writes every byte as one character and reads it back") {
  const text::byte_map& m = text::byte_map::instance();
  CHECK(m.of(' ') == "\xC4\xA0");  // Ġ
  CHECK(m.of('A') == "A");
  CHECK(m.of('\n') == "\xC4\x8A");  // Ċ
  for (int b = 0; b < 256; ++b) {
    const std::string c = m.of(static_cast<unsigned char>(b));
    CHECK(m.byte_of(text::code_point(c, 0, static_cast<int>(c.size()))) == b);
  }
  CHECK(m.byte_of(U'\u2581') == -1);
}

TEST_CASE("a tokenizer.json tpx cannot run exactly is refused with a sentence") {
  const nlohmann::json base =
      io::read_json_file(fixtures() / "gpt2_bytelevel" / "tokenizer.json", "t");
  const auto error = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = base;
    edit(j);
    return test::error_of([&] { text::tokenizer t(j, "tok.json"); });
  };
  CHECK(error([](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }) ==
        "tok.json: model of type 'WordPiece' is not one tpx's tokenizer implements (see "
        "text/tokenizer.hpp)");
  CHECK(error([](nlohmann::json& j) {
          j["normalizer"] = {{"type", "NFC"}};
        }) ==
        "tok.json: normalizer of type 'NFC' is not one tpx's tokenizer implements (see "
        "text/tokenizer.hpp)");
  CHECK(error([](nlohmann::json& j) {
          j["pre_tokenizer"] = {
              {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
        })
            .find("tok.json: pre_tokenizer: the pattern '(unclosed' does not compile (PCRE2, at "
                  "offset 9: missing closing parenthesis)") != std::string::npos);
  CHECK(error([](nlohmann::json& j) { j["model"]["merges"][0] = "Ġ zzz"; }) ==
        "tok.json: model.merges[0] merges 'Ġ' and 'zzz' into 'Ġzzz', but not all three are in the "
        "vocabulary");
  CHECK(error([](nlohmann::json& j) {
          j["model"]["dropout"] = 0.1;
        }).find("model.dropout samples merges at random") != std::string::npos);
  CHECK(error([](nlohmann::json& j) { j.erase("model"); }) == "tok.json: \"model\" is missing");
  CHECK(error([](nlohmann::json& j) { j["model"]["vocab"]["zzz"] = 2147483000; })
            .find("gives token 'zzz' the id 2147483000, not a whole number in [0, 604) (ids are "
                  "dense") != std::string::npos);
  CHECK(error([](nlohmann::json&) {}) == "no error");
  const text::tokenizer t(base, "tok.json");
  const std::vector<text::token_id> bad{5, 600};
  CHECK(test::error_of([&] { (void)t.decode(bad); }) ==
        "tok.json: token id 600 is outside the vocabulary [0, 600)");
}
