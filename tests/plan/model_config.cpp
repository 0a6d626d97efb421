// config.json dims: the names each model family uses, defaults, text_config, and bad values.

#include <doctest/doctest.h>

#include <functional>
#include <string>

#include "../error_of.hpp"
#include "tpx/plan/model_config.hpp"

using namespace tpx;

namespace {
plan::model_config parse(const char* text) {
  return plan::parse_model_config(nlohmann::json::parse(text), "config.json");
}
std::string error_of(const char* text) {
  return test::error_of([&] { parse(text); });
}
}  // namespace

TEST_CASE("a Llama config gives dense dims, GQA heads and the default head dim") {
  const plan::model_config c = parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256, "tie_word_embeddings": false})");
  CHECK(c.model_type == "llama");
  CHECK(c.head_dim == 128);
  CHECK(c.n_kv_heads == 8);
  CHECK_FALSE(c.is_moe());
  CHECK(c.causal_lm());
  CHECK(c.tie_word_embeddings == false);
}

TEST_CASE("expert counts and sizes come from each family's own key") {
  const plan::model_config mixtral = parse(R"({"model_type": "mixtral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 32000, "num_local_experts": 8})");
  CHECK(mixtral.n_experts == 8);
  CHECK(mixtral.moe_intermediate_size == 14336);  // experts use intermediate_size
  CHECK_FALSE(mixtral.tie_word_embeddings.has_value());
  const plan::model_config qwen = parse(R"({"model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "moe_intermediate_size": 768, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "num_hidden_layers": 48, "vocab_size": 151936,
    "num_experts": 128})");
  CHECK(qwen.n_experts == 128);
  CHECK(qwen.moe_intermediate_size == 768);
  CHECK(qwen.head_dim == 128);  // given, not hidden / heads
  const plan::model_config ds = parse(R"({"model_type": "deepseek_v3", "hidden_size": 7168,
    "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_attention_heads": 128,
    "num_key_value_heads": 128, "num_hidden_layers": 61, "vocab_size": 129280,
    "n_routed_experts": 256, "architectures": ["DeepseekV3ForCausalLM"]})");
  CHECK(ds.n_experts == 256);
}

TEST_CASE("multimodal configs use text_config; MHA models default KV heads to heads") {
  const plan::model_config c = parse(R"({"model_type": "gemma3", "tie_word_embeddings": true,
    "architectures": ["Gemma3ForConditionalGeneration"],
    "text_config": {"hidden_size": 2560, "num_attention_heads": 8, "num_hidden_layers": 34,
                    "vocab_size": 262208, "intermediate_size": 10240, "head_dim": 256}})");
  CHECK(c.hidden_size == 2560);
  CHECK(c.n_kv_heads == 8);
  CHECK(c.tie_word_embeddings == true);
  CHECK(c.causal_lm());
  CHECK_FALSE(parse(R"({"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
    "vocab_size": 10, "architectures": ["BertModel"]})")
                  .causal_lm());
}

TEST_CASE("bad config values are sentences naming the key") {
  CHECK(error_of(R"({"num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 4})")
            .find("config.json: \"hidden_size\" is missing") != std::string::npos);
  CHECK(error_of(R"({"hidden_size": -8, "num_attention_heads": 2, "num_hidden_layers": 1,
                     "vocab_size": 4})")
            .find("\"hidden_size\" must be a non-negative whole number, got -8") !=
        std::string::npos);
  // No head_dim: hidden // heads, rounded down as transformers derives it (GLM-4-MoE: 4096 / 96).
  CHECK(parse(R"({"hidden_size": 4096, "num_attention_heads": 96, "num_key_value_heads": 8,
                  "num_hidden_layers": 1, "vocab_size": 4})")
            .head_dim == 42);
  CHECK(error_of(R"({"hidden_size": 2, "num_attention_heads": 3, "num_hidden_layers": 1,
                     "vocab_size": 4})")
            .find("no \"head_dim\", and hidden_size 2 over num_attention_heads 3 gives no head") !=
        std::string::npos);
  CHECK(error_of(R"({"hidden_size": 12, "num_attention_heads": 6, "num_key_value_heads": 4,
                     "num_hidden_layers": 1, "vocab_size": 4})")
            .find("num_attention_heads 6 is not a multiple of num_key_value_heads 4") !=
        std::string::npos);
  CHECK(error_of(R"({"hidden_size": 12, "num_attention_heads": 6, "num_hidden_layers": 1,
                     "vocab_size": 4, "tie_word_embeddings": "yes"})")
            .find("\"tie_word_embeddings\" must be true or false") != std::string::npos);
  CHECK(error_of("[]").find("config.json must be a JSON object") != std::string::npos);
}

TEST_CASE("an omitted key takes the default of transformers' config class for the model type") {
  // DeepSeek-V3 with only its dims: multi-head latent attention, shared expert and dense layers
  // come from DeepseekV3Config's defaults (transformers 5.24).
  const plan::model_config ds = parse(R"({"model_type": "deepseek_v3", "hidden_size": 64,
    "num_hidden_layers": 5, "vocab_size": 100})");
  CHECK(ds.is_mla());
  CHECK(ds.kv_lora_rank == 512);
  CHECK(ds.q_lora_rank == 1536);
  CHECK(ds.qk_nope_head_dim == 128);
  CHECK(ds.qk_rope_head_dim == 64);
  CHECK(ds.v_head_dim == 128);
  CHECK(ds.head_dim == 64);  // DeepseekV3Config sets head_dim = qk_rope_head_dim
  CHECK(ds.n_heads == 128);
  CHECK(ds.n_kv_heads == 128);
  CHECK(ds.n_experts == 256);
  CHECK(ds.n_shared_experts == 1);
  CHECK(ds.first_k_dense_replace == 3);
  CHECK(ds.dense_layer(2));
  CHECK_FALSE(ds.dense_layer(3));
  // A key given as null is derived, not defaulted: no q LoRA (DeepSeek-V2-Lite's q_proj).
  const plan::model_config lite = parse(R"({"model_type": "deepseek_v3", "hidden_size": 64,
    "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 1,
    "vocab_size": 100, "q_lora_rank": null})");
  CHECK(lite.q_lora_rank == 0);
  CHECK(lite.kv_lora_rank == 512);
  // Defaulted, derived and null: qwen3 defaults head_dim to 128 and KV heads to 32; mistral
  // derives head_dim; llama derives KV heads from the heads; null head_dim is derived.
  const plan::model_config qwen3 = parse(R"({"model_type": "qwen3", "hidden_size": 64,
    "num_attention_heads": 32, "num_hidden_layers": 1, "vocab_size": 100})");
  CHECK(qwen3.head_dim == 128);
  CHECK(qwen3.n_kv_heads == 32);
  const plan::model_config mistral = parse(R"({"model_type": "mistral", "hidden_size": 64,
    "num_attention_heads": 8, "num_hidden_layers": 1, "vocab_size": 100})");
  CHECK(mistral.head_dim == 8);
  CHECK(mistral.n_kv_heads == 8);
  CHECK(mistral.intermediate_size == 14336);
  const plan::model_config llama = parse(R"({"model_type": "llama", "num_attention_heads": 4,
    "num_hidden_layers": 1})");
  CHECK(llama.hidden_size == 4096);
  CHECK(llama.vocab_size == 32000);
  CHECK(llama.n_kv_heads == 4);
  CHECK(llama.head_dim == 1024);
  CHECK(
      parse(
          R"({"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
    "num_hidden_layers": 1, "vocab_size": 100, "head_dim": null})")
          .head_dim == 16);
  // Qwen3-MoE: 128 experts, top-8, expert size 768 unless given.
  const plan::model_config moe = parse(R"({"model_type": "qwen3_moe", "hidden_size": 64,
    "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100})");
  CHECK(moe.n_experts == 128);
  CHECK(moe.experts_per_token == 8);
  CHECK(moe.moe_intermediate_size == 768);
  CHECK(moe.n_kv_heads == 4);
  // A type without a table still needs its dims.
  CHECK(error_of(R"({"model_type": "olmo2", "num_attention_heads": 4, "num_hidden_layers": 1,
    "vocab_size": 100})")
            .find("\"hidden_size\" is missing") != std::string::npos);
}
