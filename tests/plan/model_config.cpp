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
  CHECK(
      error_of(R"({"hidden_size": 10, "num_attention_heads": 3, "num_hidden_layers": 1,
                     "vocab_size": 4})")
          .find("no \"head_dim\", and hidden_size 10 is not a multiple of num_attention_heads 3") !=
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
