// python_pattern, DeepSpeed's pattern matcher: Python's own verdicts (re.match; the fixture
// written by make_pattern_cases.py) for DeepSpeed's, README's, hand-picked and random patterns,
// the features no automaton matches refused with a sentence, and names and patterns that made
// std::regex hang or overflow the stack answered at once.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../error_of.hpp"
#include "tpx/plan/pattern.hpp"

using namespace tpx;
using test::error_of;

namespace {

nlohmann::json python_cases() {
  const char* dir = std::getenv("TPX_PLAN_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_PLAN_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::string(dir) + "/python_re_cases.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

bool matches(const std::string& pattern, const std::string& name) {
  return plan::python_pattern(pattern, "test").match(name);
}

}  // namespace

TEST_CASE("python_pattern gives Python's re.match verdict, or its error, for every fixture case") {
  const nlohmann::json doc = python_cases();
  int compared = 0, errors = 0, refused = 0, too_big = 0, not_ascii = 0;
  for (const nlohmann::json& c : doc.at("cases")) {
    const std::string pattern = c.at("pattern").get<std::string>();
    CAPTURE(pattern);
    const std::string error = error_of([&] { (void)plan::python_pattern(pattern, "spec"); });
    if (c.contains("error")) {
      CAPTURE(c.at("error").get<std::string>());
      CHECK(error.find("spec: pattern") == 0);
      ++errors;
    } else if (error.find("automaton states tpx allows") != std::string::npos) {
      CHECK(pattern == "a{99999}");  // Python accepts it; tpx refuses to build 99,999 states
      ++too_big;
    } else if (c.contains("unsupported")) {
      CHECK(error.find("which tpx does not match: it matches patterns by an automaton") !=
            std::string::npos);
      ++refused;
    } else {
      REQUIRE(error == "no error");
      const plan::python_pattern p(pattern, "spec");
      for (const nlohmann::json& n : c.at("names")) {
        const std::string name = n[0].get<std::string>();
        CAPTURE(name);
        const std::string refusal = error_of([&] { (void)p.match(name); });
        if (refusal.find("which Python reads by Unicode's tables") != std::string::npos) {
          CHECK(std::any_of(name.begin(), name.end(), [](char b) { return (b & 0x80) != 0; }));
          ++not_ascii;
          continue;
        }
        CHECK(p.match(name) == n[1].get<bool>());
        ++compared;
      }
    }
  }
  MESSAGE("Python " << doc.at("python").get<std::string>() << ": " << compared
                    << " verdicts, " << errors << " errors, " << refused << " refusals, "
                    << not_ascii << " non-ASCII names refused, " << too_big << " too big");
  CHECK(compared > 10000);
  CHECK(errors > 100);
  CHECK(refused > 5);
}

TEST_CASE("python_pattern's errors say what is wrong and where, with Python's words") {
  const auto error = [](const std::string& pattern) {
    return error_of([&] { (void)plan::python_pattern(pattern, "ds.json: layer_specs[0]"); });
  };
  CHECK(error("(unclosed") ==
        "ds.json: layer_specs[0]: pattern \"(unclosed\" is not a valid regular expression: "
        "missing ), unterminated subpattern at position 0");
  CHECK(error("*x").find("nothing to repeat at position 0") != std::string::npos);
  CHECK(error("a**").find("multiple repeat at position 2") != std::string::npos);
  CHECK(error("a{3,2}").find("min repeat greater than max repeat at position 2") !=
        std::string::npos);
  CHECK(error("[z-a]").find("bad character range at position 1") != std::string::npos);
  CHECK(error("a)").find("unbalanced parenthesis at position 1") != std::string::npos);
  CHECK(error("\\q").find("bad escape at position 0") != std::string::npos);
  CHECK(error(R"((a)\1)") ==
        "ds.json: layer_specs[0]: pattern \"(a)\\1\" uses a backreference (at position 3), which "
        "tpx does not match: it matches patterns by an automaton, without backtracking");
  CHECK(error(R"(.*+\.o_proj\.weight$)").find("uses a possessive quantifier (at position 2)") !=
        std::string::npos);
  CHECK(error("(?=a)").find("uses a lookaround group") != std::string::npos);
  CHECK(error("(?i)a").find("uses inline flags") != std::string::npos);
  CHECK(error(std::string(5000, 'a')).find("a pattern of 5000 characters is longer than the 4096") !=
        std::string::npos);
  CHECK(error("a{30000}").find("repeats 30000 times, more than the 20000 automaton states") !=
        std::string::npos);
  CHECK(error("(a{100}){300}").find("compiles to more than the 20000 automaton states") !=
        std::string::npos);
  CHECK(error(std::string(101, '(') + std::string(101, ')')).find("nests groups more than 100") !=
        std::string::npos);
  CHECK(error(std::string(100, '(') + "a" + std::string(100, ')')) == "no error");
}

TEST_CASE("patterns std::regex backtracked on and names it recursed on are answered at once") {
  // (.*)*x$ takes Python minutes on a 40-character name, std::regex hung; .*+ (std::regex's
  // (.*)+) took 10 s; five .* multiplied backtracking by the name's length five times; a 38 KB
  // name overflowed std::regex's stack. The automaton's work is the name's length times its size.
  const std::string long_name = std::string(38'000, 'a') + ".o_proj.weight";
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(matches("(.*)*x$", std::string(5'000, 'a')));
  CHECK(matches("(.*)*x$", std::string(5'000, 'a') + "x"));
  CHECK_FALSE(matches(".*a.*b.*c.*d.*e", std::string(2'000, 'a') + "bcd"));
  CHECK(matches(R"(.*\.o_proj\.weight$)", long_name));
  CHECK_FALSE(matches(R"(.*\.down_proj\.weight$)", long_name));
  CHECK(matches("(a|aa)*$", std::string(10'000, 'a')));
  CHECK_FALSE(matches("(a|aa)*b", std::string(10'000, 'a')));
  // Not a timed test: the bound is generous enough for a sanitizer build, and a backtracking
  // matcher would take longer than the universe has existed.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
}

TEST_CASE("python_pattern matches by code point, anchors with Python's meaning") {
  CHECK(matches("mod.le", "modèle"));                // . is one code point, two bytes
  CHECK(matches(R"(.{6}$)", "modèle"));
  CHECK_FALSE(matches(R"(.{7}$)", "modèle"));
  CHECK(matches("[é-ï]", "ë"));
  CHECK(matches("weight$", "weight\n"));              // $ before a final newline
  CHECK_FALSE(matches(R"(weight\Z)", "weight\n"));
  CHECK_FALSE(matches(".", "\n"));
  CHECK(matches(R"(\bweight\b)", "weight"));
  // Python reads \d by Unicode's tables: a class escape against a non-ASCII name is refused.
  CHECK(error_of([] { (void)matches(R"(\d)", "٣"); }).find("write the class out, as [0-9]") !=
        std::string::npos);
  CHECK(matches("", "anything"));
  CHECK(matches(R"(lm_head)", "lm_head.weight"));    // re.match: a prefix
  CHECK_FALSE(matches(R"(head)", "lm_head.weight"));
  // An ill-formed UTF-8 byte is one code point of its own, never equal to a character.
  CHECK(matches("a.b", "a\xff" "b"));
  CHECK_FALSE(matches("a..b", "a\xff" "b"));
}
