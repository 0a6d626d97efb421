// The style registry and Hugging Face plans: every string of every vocabulary resolves, unknown
// strings list the known ones, users can register their own, and plan keys match parameter names
// by the documented precedence.

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../error_of.hpp"
#include "tpx/plan/hf.hpp"

using namespace tpx;
using plan::collective;
using plan::family;
using test::error_of;

namespace {

nlohmann::json fixture() {
  const char* dir = std::getenv("TPX_PLAN_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_PLAN_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::string(dir) + "/hf_plans_sample.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("every string of the three vocabularies is known, with its meaning") {
  const plan::registry r = plan::registry::builtin();
  // REFERENCE.md §1, row by row.
  const std::vector<std::string> all{
      "colwise", "rowwise", "colwise_rep", "rowwise_rep", "local_colwise", "local_rowwise",
      "local_packed_rowwise", "local", "gather", "replicate", "sequence_parallel",
      "colwise_gather_output", "rowwise_split_input", "packed_colwise", "packed_rowwise",
      "embedding_rowwise", "embedding_colwise", "replicated_with_grad_allreduce", "moe_tp_experts",
      "moe_identity_expert", "grouped_gemm", "ep_router", "mla_kv_a_proj", "all_reduce",
      "colwise_allgather", "colwise_loss_parallel", "rowwise_allreduce", "rowwise_reduce_scatter",
      "vocab_allreduce", "vocab_reduce_scatter", "activation", "activation_seq_dim_2",
      "module_allgather", "module_allgather_hidden_states", "module_allgather_split",
      "moe_experts_allreduce",
      // transformers 5.24 (REFERENCE.md §7)
      "ep_dispatch_experts", "local_params",
      // transformers 5.25 (REFERENCE.md §8)
      "unit_colwise", "unit_rowwise"};
  for (const std::string& s : all) {
    CAPTURE(s);
    CHECK(r.contains(s));
  }
  // Plus tpx's own names of the styles no Hugging Face string spells (style::*::name).
  const std::vector<std::string> own{"colwise_sequence_parallel", "rowwise_sequence_parallel",
                                     "vocab_parallel", "vocab_parallel_sequence"};
  for (const std::string& s : own) CHECK(r.at(s).vocabulary == "tpx");
  CHECK(r.names().size() == all.size() + own.size());

  // The three spellings of a gathered colwise are one policy; so are the split-input rowwises.
  CHECK(r.at("colwise_gather_output").policy() == "style::colwise_gathered");
  CHECK(r.at("colwise_rep").policy() == "style::colwise_gathered");
  CHECK(r.at("colwise_allgather").policy() == "style::colwise_gathered");
  CHECK(r.at("rowwise_split_input").policy() == "style::rowwise_split");
  CHECK(r.at("rowwise_rep").policy() == "style::rowwise_split");
  CHECK(r.at("rowwise_allreduce").policy() == "style::rowwise<>");
  CHECK(r.at("replicated_with_grad_allreduce").policy() == "style::replicate_grad_all_reduce");
  CHECK(r.at("rowwise_reduce_scatter").output == collective::reduce_scatter);
  CHECK(r.at("packed_colwise").packed);
  CHECK(r.at("unit_colwise").units);
  CHECK(r.at("unit_colwise").split_dim() == 0);
  CHECK(r.at("unit_rowwise").split_dim() == 1);
  CHECK(r.at("unit_rowwise").output == collective::all_reduce);
  CHECK(r.at("packed_colwise").split_dim() == 0);
  CHECK(r.at("packed_rowwise").split_dim() == 1);
  CHECK(r.at("local_packed_rowwise").local);
  CHECK(r.at("local").divide_by_tp);
  CHECK(r.at("embedding_rowwise").split_dim() == 0);  // vocab rows
  CHECK(r.at("embedding_colwise").split_dim() == 1);  // hidden columns
  CHECK(r.at("grouped_gemm").split_dim() == 0);       // whole experts
  CHECK(r.at("activation_seq_dim_2").sequence_dim == 2);
  CHECK(r.at("colwise_loss_parallel").loss_parallel);
  CHECK(r.at("module_allgather_split").output == collective::split);
}

TEST_CASE("an unknown style string is an error that lists every known one") {
  const plan::registry r = plan::registry::builtin();
  const std::string e = error_of([&] { r.at("colwize"); });
  CHECK(e.find("unknown style string 'colwize'") != std::string::npos);
  for (const std::string& known : r.names()) CHECK(e.find(known) != std::string::npos);
}

TEST_CASE("users register their own strings and aliases; a taken name is refused") {
  plan::registry r = plan::registry::builtin();
  r.alias("megatron_column_parallel", "colwise_gather_output");
  CHECK(r.at("megatron_column_parallel").policy() == "style::colwise_gathered");
  r.add("my_rowwise_rs", {.kind = family::rowwise, .output = collective::reduce_scatter});
  CHECK(r.at("my_rowwise_rs").split_dim() == 1);
  CHECK(error_of([&] { r.add("colwise", {}); }).find("'colwise' is registered already") !=
        std::string::npos);
  CHECK(error_of([&] { r.alias("x", "nope"); }).find("unknown style string 'nope'") !=
        std::string::npos);
}

TEST_CASE("every plan of the fixture parses, every style of it resolves") {
  const plan::registry r = plan::registry::builtin();
  const nlohmann::json f = fixture();
  std::size_t rules = 0;
  for (const char* vocab : {"current_vocabulary", "older_vocabulary", "dtensor_vocabulary"})
    for (const auto& [model, plans] : f.at(vocab).items()) {
      CAPTURE(vocab);
      CAPTURE(model);
      const plan::hf_plan p = plan::parse_hf_plan(plans, model, true, r);
      CHECK(!p.of(plan::plan_kind::tp).empty());
      for (const plan::rule& rule : p.rules) {
        CHECK(r.contains(rule.style));
        // base-model keys get the causal-LM prefix, LM-head keys do not.
        CHECK((rule.source.rfind("base_model", 0) == 0) == (rule.key.rfind("model.", 0) == 0));
      }
      rules += p.rules.size();
    }
  CHECK(rules == 101);  // every entry of the fixture
}

TEST_CASE("plans: sections, prefixes and bad input") {
  const plan::registry r = plan::registry::builtin();
  const auto j = nlohmann::json::parse(R"({
    "base_model_tp_plan": {"layers.*.mlp.down_proj": "rowwise"},
    "base_model_ep_plan": {"layers.*.mlp.gate": "ep_router"},
    "lm_tp_plan": {"lm_head": "colwise_gather_output"}})");
  const plan::hf_plan lm = plan::parse_hf_plan(j, "config.json", true, r);
  REQUIRE(lm.rules.size() == 3);
  CHECK(lm.rules[0].key == "model.layers.*.mlp.down_proj");
  CHECK(lm.of(plan::plan_kind::ep)[0]->key == "model.layers.*.mlp.gate");
  CHECK(lm.of(plan::plan_kind::tp)[1]->key == "lm_head");
  const plan::hf_plan base = plan::parse_hf_plan(j, "config.json", false, r);
  CHECK(base.rules[0].key == "layers.*.mlp.down_proj");
  const plan::hf_plan plain =
      plan::parse_hf_plan(nlohmann::json::parse(R"({"a.b": "colwise"})"), "p.json", true, r);
  CHECK(plain.rules[0].key == "a.b");
  CHECK(plain.rules[0].source == "plan");

  const auto bad = [&](const char* text) {
    return error_of([&] { plan::parse_hf_plan(nlohmann::json::parse(text), "p.json", true, r); });
  };
  CHECK(bad(R"(["colwise"])").find("p.json: a plan must be a JSON object, got array") !=
        std::string::npos);
  CHECK(
      bad(R"({"q_proj": 3})").find("p.json: plan: the style of key 'q_proj' is 3, not a string") !=
      std::string::npos);
  CHECK(bad(R"({"lm_tp_plan": {"lm_head": "colwise_gathered"}})")
            .find("lm_tp_plan: key 'lm_head': unknown style string 'colwise_gathered'; known:") !=
        std::string::npos);
  CHECK(bad(R"({"base_model_tp_plan": ["x"]})").find("must be an object") != std::string::npos);
}

TEST_CASE("keys match names: * is one digit component, modules cover their own parameters") {
  const plan::matcher m({"model.layers.*.self_attn.q_proj", "model.layers.*.mlp.experts",
                         "model.layers.*.mlp.experts.gate_up_proj", "lm_head"});
  const auto rule_of = [&](std::string_view name) -> int {
    const plan::match r = m.best(name);
    return r.rule ? static_cast<int>(*r.rule) : -1;
  };
  CHECK(rule_of("model.layers.0.self_attn.q_proj.weight") == 0);
  CHECK(rule_of("model.layers.17.self_attn.q_proj.bias") == 0);
  CHECK(rule_of("model.layers.x.self_attn.q_proj.weight") == -1);    // * is digits only
  CHECK(rule_of("model.layers.0.1.self_attn.q_proj.weight") == -1);  // * is one component
  // Any direct parameter of the module, as transformers' _get_parameter_plan matches it.
  CHECK(rule_of("model.layers.0.self_attn.q_proj.scales") == 0);
  CHECK(rule_of("model.layers.0.self_attn.q_proj.x.weight") == -1);  // a submodule's is not
  CHECK(rule_of("model.layers.0.self_attn.q_proj") == 0);            // the module itself
  CHECK(rule_of("model.layers.3.mlp.experts.gate_up_proj") == 2);    // a parameter key
  CHECK(rule_of("model.layers.3.mlp.experts.down_proj") == 1);       // a parameter of experts
  CHECK(rule_of("lm_head.weight") == 3);
  CHECK(rule_of("model.embed_tokens.weight") == -1);
}

TEST_CASE("a parameter key beats its module's key; a concrete index beats a wildcard") {
  const plan::matcher m({"model.layers.*.mlp.down_proj", "model.layers.*.mlp.down_proj.weight",
                         "model.layers.0.mlp.down_proj", "model.layers.*.*.x", "model.layers.0.*.x",
                         "model.layers.*.1.x"});
  CHECK(*m.best("model.layers.5.mlp.down_proj.weight").rule == 1);  // param key
  CHECK(*m.best("model.layers.5.mlp.down_proj.bias").rule == 0);    // only the module covers it
  CHECK(*m.best("model.layers.0.mlp.down_proj.bias").rule == 2);    // concrete module key
  // A concrete module key does not beat a parameter key: precedence is parameter first.
  CHECK(*m.best("model.layers.0.mlp.down_proj.weight").rule == 1);
  CHECK(*m.best("model.layers.2.3.x").rule == 3);        // two wildcards, alone
  const plan::match tie = m.best("model.layers.0.1.x");  // one wildcard each
  CHECK(*tie.rule == 4);
  CHECK(tie.tied_with == std::vector<std::size_t>{5});
}
