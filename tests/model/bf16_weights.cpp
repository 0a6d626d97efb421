// Weights held as bf16 (layer::weights_in<host::backend, bf16>, computing in float): the model
// equals the unsharded float64 model on the same (bf16) weights, and the float model that holds
// them widened, at several tp, TP, SP and EP, forward and backward; it holds the GEMM weights in
// half the bytes and saves the checkpoint back bit for bit.

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "../io/io_harness.hpp"
#include "model_harness.hpp"
#include "tpx/model/synthetic.hpp"

using namespace tpx;
namespace fs = std::filesystem;

namespace {

using bf16_host = layer::weights_in<host::backend, bf16>;

/// A tiny model of `family` (hidden 24, 12 query / 4 KV heads, 2 layers, uneven vocab and
/// intermediate splits; qwen2: q/k/v biases and a tied head; mixtral: 4 experts).
nlohmann::json tiny(const std::string& family) {
  return {{"architectures",
           {family == "mixtral" ? "MixtralForCausalLM"
            : family == "qwen2" ? "Qwen2ForCausalLM"
                                : "LlamaForCausalLM"}},
          {"model_type", family},
          {"hidden_size", 24},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 12},
          {"num_key_value_heads", 4},
          {"head_dim", 2},
          {"intermediate_size", 17},
          {"vocab_size", 41},
          {"tie_word_embeddings", family == "qwen2"},
          {"num_local_experts", 4},
          {"num_experts_per_tok", 2}};
}

}  // namespace

TEST_CASE("bf16 weights compute what float computes on the same weights, in half the bytes") {
  test::temp_dir d;
  const std::vector<std::int64_t> ids{3, 1, 4, 1, 5, 9, 2, 6, 5, 35, 8, 9, 7};
  std::vector<std::int64_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(-100);
  for (const std::string family : {"llama", "qwen2", "mixtral"}) {
    const fs::path dir = d / family;
    model::write_synthetic(dir, tiny(family), io::file_dtype::bf16, 5);
    const test::model_run exact = test::run_model<double>(dir, ids, targets, {});
    for (const int tp : {1, 2, 4})
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (ep > 1 && (family != "mixtral" || 4 % ep != 0)) continue;
          if (ep == tp && tp == 1 && family == "mixtral") continue;  // the same run as ep 1
          CAPTURE(family);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const test::run_options o{.tp = tp, .sp = sp, .ep = ep};
          const test::model_run held = test::run_model<float, bf16_host>(dir, ids, targets, o);
          const test::model_run widened = test::run_model<float>(dir, ids, targets, o);
          CHECK(held.ranks_agree);
          CHECK(test::relative(held.logits, exact.logits) <= 1e-5);
          CHECK(test::relative(held.logits, widened.logits) <= 1e-5);
          CHECK(std::abs(held.loss - exact.loss) <= 1e-5 * std::abs(exact.loss));
          REQUIRE(held.grads.size() == exact.grads.size());
          for (const auto& [name, g] : exact.grads) {
            CAPTURE(name);
            CHECK(test::relative(held.grads.at(name), g) <= 1e-4);
          }
          for (std::size_t r = 0; r < static_cast<std::size_t>(tp); ++r) {
            CAPTURE(r);
            CHECK(held.bytes_read[r] == widened.bytes_read[r]);  // the same shard of the file
            // Every GEMM weight in 2 bytes instead of 4; norms and biases (a few %) stay float.
            CHECK(held.bytes_held[r] < widened.bytes_held[r]);
            CHECK(2 * held.bytes_held[r] - widened.bytes_held[r] <= widened.bytes_held[r] / 10);
          }
        }
  }
}

TEST_CASE("a model held in bf16 and saved gives back its bf16 checkpoint bit for bit") {
  test::temp_dir d;
  for (const std::string family : {"qwen2", "mixtral"}) {
    CAPTURE(family);
    const fs::path dir = d / family, saved = d / (family + "-saved.safetensors");
    model::write_synthetic(dir, tiny(family), io::file_dtype::bf16, 9);
    const model::config c = model::read_config(dir);
    const io::checkpoint ck(dir);
    host::run(2, [&](host::communicator& comm) {
      host::gemm_engine engine;
      model::causal_lm<layer::block_mode::tensor, bf16_host, float> lm(engine, comm, c, ck,
                                                                      {.ep = family == "mixtral" ? 2 : 1});
      lm.save(saved);
    });
    const io::checkpoint back(saved);
    CHECK(back.names() == ck.names());
    for (const std::string& name : ck.names()) {
      CAPTURE(name);
      CHECK(back.info(name).dtype == io::file_dtype::bf16);
      CHECK(back.read<bf16>(name) == ck.read<bf16>(name));
    }
  }
}
