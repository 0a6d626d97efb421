// Presets: the tensors each model type has (counts checked against the published checkpoints'
// tensor counts) and its default plan, which covers every linear and nothing else.

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tpx/plan/hf.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/resolve.hpp"

using namespace tpx;

namespace {
plan::model_config config(const char* text) {
  return plan::parse_model_config(nlohmann::json::parse(text), "config.json");
}

/// The tensor named `name` in `v`; fails the test if there is none.
plan::tensor_decl find(const std::vector<plan::tensor_decl>& v, const std::string& name) {
  for (const plan::tensor_decl& d : v)
    if (d.name == name) return d;
  FAIL("no tensor ", name);
  return {};
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
  CHECK(find(t, "model.layers.31.self_attn.k_proj.weight").shape ==
        std::vector<index_t>{1024, 4096});
  CHECK(find(t, "model.layers.0.mlp.down_proj.weight").shape == std::vector<index_t>{4096, 14336});
  // Qwen2-7B: 28 layers × 12 (q/k/v biases) + 3 = 339; Qwen2-0.5B ties its embeddings: no lm_head.
  const plan::model_config qwen2 = config(R"({"model_type": "qwen2", "hidden_size": 3584,
    "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
    "num_hidden_layers": 28, "vocab_size": 152064, "tie_word_embeddings": false})");
  const std::vector<plan::tensor_decl> q = plan::find_preset("qwen2")->tensors(qwen2);
  CHECK(q.size() == 339);
  CHECK(find(q, "model.layers.0.self_attn.v_proj.bias").shape == std::vector<index_t>{512});
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
  CHECK(find(q3, "model.layers.5.self_attn.q_norm.weight").shape == std::vector<index_t>{128});
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

TEST_CASE("mixture-of-experts presets lay experts out as their hub checkpoints do") {
  // Mixtral-8x7B: 32 layers × (2 norms + 4 attention + router + 8 × 3 experts) + 3 = 995.
  const plan::model_config mixtral = config(R"({"model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000})");
  const std::vector<plan::tensor_decl> m = plan::find_preset("mixtral")->tensors(mixtral);
  CHECK(m.size() == 995);
  CHECK(find(m, "model.layers.31.block_sparse_moe.experts.7.w2.weight").shape ==
        std::vector<index_t>{4096, 14336});
  CHECK(find(m, "model.layers.0.block_sparse_moe.gate.weight").shape ==
        std::vector<index_t>{8, 4096});
  // Qwen3-30B-A3B: 48 layers × (2 norms + 4 attention + 2 q/k norms + router + 128 × 3) + 3.
  const plan::model_config qwen = config(R"({"model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "num_hidden_layers": 48, "num_experts": 128,
    "num_experts_per_tok": 8, "vocab_size": 151936})");
  const std::vector<plan::tensor_decl> q = plan::find_preset("qwen3_moe")->tensors(qwen);
  CHECK(q.size() == 48 * (9 + 128 * 3) + 3);
  CHECK(find(q, "model.layers.3.mlp.experts.127.down_proj.weight").shape ==
        std::vector<index_t>{2048, 768});
  // DeepSeek-V3: 3 dense layers, then 58 MoE layers with 256 experts and one shared expert.
  const plan::model_config ds = config(R"({"model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_attention_heads": 128,
    "num_key_value_heads": 128, "num_hidden_layers": 61, "n_routed_experts": 256,
    "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "vocab_size": 129280})");
  const std::vector<plan::tensor_decl> d = plan::find_preset("deepseek_v3")->tensors(ds);
  CHECK(d.size() == 3 * 12 + 58 * (9 + 2 + 256 * 3 + 3) + 3);
  CHECK(find(d, "model.layers.2.mlp.down_proj.weight").shape == std::vector<index_t>{7168, 18432});
  const plan::tensor_decl qb = find(d, "model.layers.3.self_attn.q_b_proj.weight");
  CHECK(qb.shape == std::vector<index_t>{128 * 192, 1536});
  REQUIRE(qb.blocks.size() == 1);
  CHECK(qb.blocks[0].unit == 192);  // whole heads of qk_nope + qk_rope
  CHECK(find(d, "model.layers.3.self_attn.kv_a_proj_with_mqa.weight").shape ==
        std::vector<index_t>{576, 7168});
  CHECK(find(d, "model.layers.60.mlp.shared_experts.down_proj.weight").shape ==
        std::vector<index_t>{7168, 2048});
  // gpt-oss-20b (bf16 layout): fused experts stored [E, in, out], gate/up interleaved in pairs.
  const plan::model_config oss = config(R"({"model_type": "gpt_oss", "hidden_size": 2880,
    "intermediate_size": 2880, "num_attention_heads": 64, "num_key_value_heads": 8,
    "head_dim": 64, "num_hidden_layers": 24, "num_local_experts": 32, "experts_per_token": 4,
    "vocab_size": 201088})");
  const std::vector<plan::tensor_decl> g = plan::find_preset("gpt_oss")->tensors(oss);
  CHECK(g.size() == 24 * 17 + 3);
  const plan::tensor_decl gu = find(g, "model.layers.0.mlp.experts.gate_up_proj");
  CHECK(gu.shape == std::vector<index_t>{32, 2880, 5760});
  CHECK(gu.in_out);
  REQUIRE(gu.blocks.size() == 1);
  CHECK(gu.blocks[0].unit == 2);
  CHECK(find(g, "model.layers.0.self_attn.sinks").shape == std::vector<index_t>{64});
  CHECK(oss.experts_per_token == 4);
}

TEST_CASE("each preset's plan places every parameter but norms and the embedding") {
  // Through plan resolution, as tpx-plan and tpx-run use the presets: the MoE rules name
  // transformers' fused in-memory experts, matched through the checkpoint's per-expert names.
  const plan::registry styles = plan::registry::builtin();
  const plan::model_config c = config(R"({"hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 3,
    "num_local_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
    "n_shared_experts": 1, "first_k_dense_replace": 1, "q_lora_rank": 24, "kv_lora_rank": 16,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8, "vocab_size": 100})");
  const plan::model_config dense = config(R"({"hidden_size": 64, "intermediate_size": 96,
    "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 3,
    "vocab_size": 100})");
  for (const plan::preset& p : plan::presets()) {
    CAPTURE(p.model_type);
    const bool moe = p.model_type.find("moe") != std::string::npos || p.model_type == "mixtral" ||
                     p.model_type.starts_with("deepseek") || p.model_type == "gpt_oss";
    plan::model_config cfg = moe ? c : dense;
    cfg.model_type = p.model_type;
    const plan::hf_plan hp = plan::parse_hf_plan(p.plan(cfg), p.model_type, true, styles);
    CHECK(hp.of(plan::plan_kind::ep).empty() == !moe);
    for (const auto& [ep, sp] : {std::pair{1, false}, std::pair{1, true}, std::pair{2, false}}) {
      if (ep > 1 && !moe) continue;
      CAPTURE(ep);
      CAPTURE(sp);
      const plan::resolution r =
          plan::resolve(cfg, p.tensors(cfg), {.preset = &p, .heuristics = false}, styles,
                        {.tp = 2, .sp = sp, .ep = ep});
      for (const plan::resolved_tensor& t : r.tensors) {
        CAPTURE(t.tensor.name);
        const bool norm = t.tensor.name.find("norm") != std::string::npos &&
                          t.tensor.name.find("q_norm") == std::string::npos &&
                          t.tensor.name.find("k_norm") == std::string::npos;
        const bool routed = t.tensor.name.find("experts.") != std::string::npos &&
                            t.tensor.name.find("shared") == std::string::npos;
        // The decoder's norms (not MLA's low-rank ones) run on sequence shards under SP.
        const bool decoder_norm = norm && t.tensor.name.find("_a_layernorm") == std::string::npos;
        if (norm && sp && decoder_norm) {
          CHECK(t.style == "sequence_parallel");
          CHECK(t.source.starts_with("preset " + p.model_type + " base_model_sp_plan"));
        } else if (norm) {
          CHECK(t.source == "no rule");
        } else if (t.tensor.name == "model.embed_tokens.weight") {
          CHECK(t.source.starts_with("transformers' effective plan"));
        } else {
          const char* section = t.tensor.name == "lm_head.weight" ? "lm_tp_plan"
                                : ep > 1 && routed                ? "base_model_ep_plan"
                                                                  : "base_model_tp_plan";
          CHECK(t.source.starts_with("preset " + p.model_type + " " + section));
        }
      }
      // Every rule is used: the experts module's covers its tensors, and lm_head's places the
      // tied embedding when the checkpoint has no lm_head.
      CHECK(r.report.unused_rules.empty());
      CHECK(r.report.unsupported.empty());
    }
  }
}
