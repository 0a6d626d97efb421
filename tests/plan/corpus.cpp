// Every parallel plan transformers 5.24 and 5.25 ship (tests/plan/fixtures/hf_5_2{4,5}_corpus.json,
// written by make_hf_corpus.py from transformers' own classes): each parses with no unknown
// string, and each model whose default config builds resolves against its own in-memory
// parameters in TP, EP and SP modes with every rule honoured and, parameter by parameter, the
// style transformers' own expansion of its plans gives it.

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tpx/plan/resolve.hpp"

using namespace tpx;

namespace {

/// One release's corpus and what it holds: plan count, models that resolve (a vocabulary and
/// tensors), those resolved at ep 2 (an EP plan and an even expert count).
struct release {
  plan::hf_release version;
  const char* file;
  const char* transformers;
  int plans, resolvable, expert_parallel;
};
// 5.25 adds ergo, kolibri1_1, minicpm5_moe (unit_colwise k / v) and param2moe, and moves the
// experts of 69 MoE TP plans to their EP plans.
constexpr release releases[] = {
    {plan::hf_release::v5_24, "hf_5_24_corpus.json", "5.24.0", 166, 126, 57},
    {plan::hf_release::v5_25, "hf_5_25_corpus.json", "5.25.0", 170, 130, 62}};

nlohmann::json corpus(const release& r) {
  const char* dir = std::getenv("TPX_PLAN_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_PLAN_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::filesystem::path(dir) / r.file);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

/// The plan sections of a corpus entry.
nlohmann::json sections(const nlohmann::json& entry) {
  nlohmann::json s = nlohmann::json::object();
  for (const char* k : {"base_model_tp_plan", "base_model_ep_plan", "lm_tp_plan"})
    if (entry.contains(k)) s[k] = entry.at(k);
  return s;
}

}  // namespace

TEST_CASE("every plan transformers 5.24 and 5.25 ship parses: no unknown style string") {
  const plan::registry styles = plan::registry::builtin();
  for (const release& rel : releases) {
    const std::string version = rel.transformers;
    CAPTURE(version);
    const nlohmann::json doc = corpus(rel);
    CHECK(doc.at("transformers") == rel.transformers);
    int plans = 0, ep_plans = 0;
    for (const auto& [type, entry] : doc.at("models").items()) {
      CAPTURE(type);
      const plan::hf_plan hp = plan::parse_hf_plan(sections(entry), type, true, styles);
      CHECK_FALSE(hp.rules.empty());
      for (const plan::rule& r : hp.rules) {
        CAPTURE(r.key);
        CHECK(plan::transformers_registers(r.style, rel.version));  // transformers' own
      }
      ++plans;
      ep_plans += entry.contains("base_model_ep_plan") ? 1 : 0;
    }
    CHECK(plans == rel.plans);
    CHECK(ep_plans >= 60);
  }
}

TEST_CASE(
    "every transformers 5.24 and 5.25 model resolves against its own parameters, every rule "
    "honoured") {
  const plan::registry styles = plan::registry::builtin();
  for (const release& rel : releases) {
    const std::string version = rel.transformers;
    CAPTURE(version);
    const nlohmann::json doc = corpus(rel);
    int resolved = 0, expert_parallel = 0, encoders = 0;
    for (const auto& [type, entry] : doc.at("models").items()) {
      if (!entry.contains("tensors")) continue;
      CAPTURE(type);
      // A vision or audio encoder has no vocabulary; tpx plans language models.
      if (!entry.at("config").contains("vocab_size")) {
        ++encoders;
        continue;
      }
      const plan::model_config c = plan::parse_model_config(entry.at("config"), type);
      std::vector<plan::tensor_decl> tensors;
      for (const nlohmann::json& t : entry.at("tensors"))
        tensors.push_back({t.at(0).get<std::string>(), t.at(1).get<std::vector<index_t>>()});
      const plan::hf_plan hp = plan::parse_hf_plan(sections(entry), type, c.causal_lm(), styles);
      plan::plan_sources src;
      src.hf = &hp;
      src.hf_name = type;
      src.heuristics = false;
      const bool ep =
          entry.contains("base_model_ep_plan") && c.n_experts > 0 && c.n_experts % 2 == 0;
      for (const plan::resolve_options o :
           {plan::resolve_options{.tp = 2}, plan::resolve_options{.tp = 2, .sp = true},
            plan::resolve_options{.tp = 2, .ep = ep ? 2 : 1}}) {
        CAPTURE(o.sp);
        CAPTURE(o.ep);
        const plan::resolution r = plan::resolve(c, tensors, src, styles, o);
        CHECK(r.report.unsupported.empty());
        CHECK(r.report.unplaceable.empty());
        // transformers' own decision, parameter by parameter: the style its effective plan
        // gives each one is the style tpx applies (under EP, transformers' EP styles where it has
        // one; its TP rules on expert modules are dropped, as tpx's overlay replaces them).
        const auto& tp_styles = entry.value("transformers_tp_styles", nlohmann::json::object());
        const auto& ep_styles = entry.value("transformers_ep_styles", nlohmann::json::object());
        for (const plan::resolved_tensor& t : r.tensors) {
          CAPTURE(t.tensor.name);
          CAPTURE(t.source);
          const std::string& n = t.tensor.name;
          if (o.ep > 1 && ep_styles.contains(n))
            CHECK(t.style == ep_styles.at(n).get<std::string>());
          else if (tp_styles.contains(n) &&
                   !(o.ep > 1 && t.source.find("_ep_plan") != std::string::npos))
            CHECK(t.style == tp_styles.at(n).get<std::string>());
          else if (!(o.ep > 1 && t.source.find("_ep_plan") != std::string::npos))
            CHECK(t.style == "replicate");  // transformers leaves it without a style
        }
        ++resolved;
      }
      expert_parallel += ep ? 1 : 0;
    }
    // gemma4_vision, muse_glimmer_assistant / _vision, and llama4 (its dims are under text_config,
    // which the corpus does not record)
    CHECK(encoders == 4);
    CHECK(resolved == 3 * rel.resolvable);
    // EP at ep 2 where the expert count is even (aria_text's and gemma4_text's counts are under
    // keys tpx does not read; flex_olmo has 7 experts).
    CHECK(expert_parallel == rel.expert_parallel);
  }
}
