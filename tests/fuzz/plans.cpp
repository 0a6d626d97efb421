// Fuzz targets: the plans a model brings. Each input is JSON text, parsed by tpx's one parser,
// then read as a Hugging Face plan or a DeepSpeed config and resolved over the tensors of a small
// Llama and a small Mixtral at tp 2 (TP, SP, EP), or read as a config.json (dims, RoPE,
// defaults) and, when small, resolved over its preset's tensors.
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz.hpp"
#include "tpx/core/json.hpp"
#include "tpx/model/config.hpp"
#include "tpx/plan/resolve.hpp"

namespace {

using namespace tpx;

const plan::registry& styles() {
  static const plan::registry r = plan::registry::builtin();
  return r;
}

plan::model_config small(const char* type, bool moe) {
  nlohmann::json j = {{"model_type", type},       {"hidden_size", 64},
                      {"num_hidden_layers", 2},   {"num_attention_heads", 8},
                      {"num_key_value_heads", 4}, {"intermediate_size", 96},
                      {"vocab_size", 128},        {"tie_word_embeddings", false}};
  if (moe) j["num_local_experts"] = 4;
  return plan::parse_model_config(j, "fuzz config");
}

/// Resolves `src` over the presets' tensors of a small Llama and Mixtral, in TP, SP and EP.
void resolve_everywhere(plan::plan_sources src) {
  for (const auto& [type, moe] : {std::pair{"llama", false}, std::pair{"mixtral", true}}) {
    const plan::model_config c = small(type, moe);
    const plan::preset* preset = plan::find_preset(type);
    src.preset = preset;
    for (const plan::resolve_options o :
         {plan::resolve_options{.tp = 2}, plan::resolve_options{.tp = 2, .sp = true},
          plan::resolve_options{.tp = 2, .ep = 2}})
      fuzz::only_tpx_errors([&] {
        const plan::resolution r = plan::resolve(c, preset->tensors(c), src, styles(), o);
        (void)plan::to_json(r);
      });
  }
}

}  // namespace

TPX_FUZZ_TARGET(hf_plan) {
  fuzz::only_tpx_errors([&] {
    const nlohmann::json j = parse_json(fuzz::text(data, size), "fuzz plan");
    const plan::hf_plan p = plan::parse_hf_plan(j, "fuzz plan", true, styles());
    plan::plan_sources src;
    src.hf = &p;
    resolve_everywhere(src);
  });
}

TPX_FUZZ_TARGET(deepspeed) {
  fuzz::only_tpx_errors([&] {
    const nlohmann::json j = parse_json(fuzz::text(data, size), "fuzz DeepSpeed config");
    const plan::ds_config ds = plan::parse_deepspeed(j, "fuzz DeepSpeed config");
    plan::plan_sources src;
    src.deepspeed = &ds;
    resolve_everywhere(src);
  });
}

TPX_FUZZ_TARGET(config) {
  fuzz::only_tpx_errors([&] {
    const nlohmann::json j = parse_json(fuzz::text(data, size), "fuzz config.json");
    fuzz::only_tpx_errors([&] { (void)model::parse_config(j, "fuzz config.json"); });
    const plan::model_config c = plan::parse_model_config(j, "fuzz config.json");
    const plan::preset* preset = plan::find_preset(c.model_type);
    // Bounded work: a preset lists every tensor of every layer and expert.
    if (preset == nullptr || c.num_layers > 4 || c.n_experts > 16 || c.hidden_size > 4096) return;
    plan::plan_sources src;
    src.preset = preset;
    const plan::resolution r = plan::resolve(c, preset->tensors(c), src, styles(), {.tp = 2});
    (void)plan::to_json(r);
  });
}
