// Presets: the tensors each model type has (counts checked against the published checkpoints'
// tensor counts) and its default plan, which covers every linear and nothing else.

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "tpx/plan/hf.hpp"
#include "tpx/plan/presets.hpp"

using namespace tpx;

namespace {
plan::model_config config(const char* text) {
  return plan::parse_model_config(nlohmann::json::parse(text), "config.json");
}
}  // namespace

TEST_CASE("llama and qwen2 presets give the published tensor counts and shapes") {
  // Llama-3-8B: 32 layers × 9 tensors + embed, norm, lm_head = 291.
  const plan::model_config llama = config(R"({"model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256})");
  const std::vector<plan::tensor_decl> t = plan::find_preset("llama")->tensors(llama);
  CHECK(t.size() == 291);
  CHECK(t.front() == plan::tensor_decl{"model.embed_tokens.weight", {128256, 4096}});
  CHECK(t.back() == plan::tensor_decl{"lm_head.weight", {128256, 4096}});
  const auto find = [&](const std::vector<plan::tensor_decl>& v, const std::string& n) {
    for (const plan::tensor_decl& d : v)
      if (d.name == n) return d.shape;
    return std::vector<index_t>{};
  };
  CHECK(find(t, "model.layers.31.self_attn.k_proj.weight") == std::vector<index_t>{1024, 4096});
  CHECK(find(t, "model.layers.0.mlp.down_proj.weight") == std::vector<index_t>{4096, 14336});
  // Qwen2-7B: 28 layers × 12 (q/k/v biases) + 3 = 339; Qwen2-0.5B ties its embeddings: no lm_head.
  const plan::model_config qwen2 = config(R"({"model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
    "num_hidden_layers": 28, "vocab_size": 152064, "tie_word_embeddings": false})");
  const std::vector<plan::tensor_decl> q = plan::find_preset("qwen2")->tensors(qwen2);
  CHECK(q.size() == 339);
  CHECK(find(q, "model.layers.0.self_attn.v_proj.bias") == std::vector<index_t>{512});
  const plan::model_config small = config(R"({"model_type": "qwen2", "hidden_size": 896,
    "intermediate_size": 4864, "num_attention_heads": 14, "num_key_value_heads": 2,
    "num_hidden_layers": 24, "vocab_size": 151936, "tie_word_embeddings": true})");
  CHECK(plan::find_preset("qwen2")->tensors(small).size() == 24 * 12 + 2);
  // Qwen3: per-head q/k norms of head_dim.
  const plan::model_config qwen3 = config(R"({"model_type": "qwen3", "hidden_size": 4096,
    "intermediate_size": 12288, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 128, "num_hidden_layers": 36, "vocab_size": 151936})");
  const std::vector<plan::tensor_decl> q3 = plan::find_preset("qwen3")->tensors(qwen3);
  CHECK(q3.size() == 36 * 11 + 3);
  CHECK(find(q3, "model.layers.5.self_attn.q_norm.weight") == std::vector<index_t>{128});
  CHECK(plan::find_preset("gpt2") == nullptr);
}

TEST_CASE("gemma2 ties its embeddings by default; phi3's fused tensors carry their blocks") {
  // gemma-2-9b: 42 layers × 11 (four norms) + embed + norm, no lm_head (tied by default).
  const plan::model_config gemma = config(R"({"model_type": "gemma2", "hidden_size": 3584,
    "intermediate_size": 14336, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 256, "num_hidden_layers": 42, "vocab_size": 256000})");
  const std::vector<plan::tensor_decl> g = plan::find_preset("gemma2")->tensors(gemma);
  CHECK(g.size() == 42 * 11 + 2);
  CHECK(g.back().name == "model.norm.weight");
  // Phi-3-mini: 32 layers × 6 + 3 = 195; qkv_proj is q | k | v in heads of 96.
  const plan::model_config phi = config(R"({"model_type": "phi3", "hidden_size": 3072,
    "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 32,
    "num_hidden_layers": 32, "vocab_size": 32064, "tie_word_embeddings": false})");
  const std::vector<plan::tensor_decl> p = plan::find_preset("phi3")->tensors(phi);
  CHECK(p.size() == 195);
  const plan::tensor_decl& qkv = p[2];
  CHECK(qkv.name == "model.layers.0.self_attn.qkv_proj.weight");
  CHECK(qkv.shape == std::vector<index_t>{9216, 3072});
  REQUIRE(qkv.blocks.size() == 3);
  CHECK(qkv.blocks[1].size == 3072);
  CHECK(qkv.blocks[1].unit == 96);
  CHECK(p[5].name == "model.layers.0.mlp.gate_up_proj.weight");
  CHECK(p[5].blocks.size() == 2);
}

TEST_CASE("each preset's plan covers every linear of its tensors and every rule is used") {
  const plan::registry styles = plan::registry::builtin();
  const plan::model_config c = config(R"({"hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 3,
    "vocab_size": 100})");
  for (const plan::preset& p : plan::presets()) {
    CAPTURE(p.model_type);
    const plan::hf_plan hp = plan::parse_hf_plan(p.plan, p.model_type, true, styles);
    std::vector<std::string> keys;
    for (const plan::rule& r : hp.rules) keys.push_back(r.key);
    const plan::matcher m(keys);
    std::set<std::size_t> used;
    for (const plan::tensor_decl& t : p.tensors(c)) {
      CAPTURE(t.name);
      const plan::match r = m.best(t.name);
      CHECK(r.tied_with.empty());
      const bool linear = t.name.find("_proj.") != std::string::npos || t.name == "lm_head.weight";
      const bool qk_norm = t.name.find("_norm.weight") != std::string::npos &&
                           t.name.find("self_attn") != std::string::npos;
      CHECK(r.rule.has_value() == (linear || qk_norm));
      if (r.rule) used.insert(*r.rule);
    }
    // Every rule is used, but lm_head's when the embeddings are tied (there is no lm_head).
    const bool tied = p.tie_word_embeddings;
    CHECK(used.size() + (tied ? 1 : 0) == hp.rules.size());
  }
}
