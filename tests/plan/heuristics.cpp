// Name heuristics for plan-less models: the row-parallel suffixes of each family, colwise for
// the other linears of a block, and everything else left replicated.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tpx/plan/heuristics.hpp"

using namespace tpx;

namespace {
std::string style_of(const char* name, std::vector<index_t> shape = {8, 8}) {
  const std::optional<std::string> s = plan::heuristic_style(name, shape);
  return s ? *s : "replicated";
}
}  // namespace

TEST_CASE("llama-style blocks: o_proj and down_proj rowwise, the other linears colwise") {
  CHECK(style_of("model.layers.0.self_attn.q_proj.weight") == "colwise");
  CHECK(style_of("model.layers.0.self_attn.k_proj.weight") == "colwise");
  CHECK(style_of("model.layers.11.self_attn.o_proj.weight") == "rowwise");
  CHECK(style_of("model.layers.0.mlp.gate_proj.weight") == "colwise");
  CHECK(style_of("model.layers.0.mlp.down_proj.weight") == "rowwise");
  CHECK(style_of("model.layers.0.self_attn.q_proj.bias", {8}) == "colwise");  // follows weight
  CHECK(style_of("model.layers.0.self_attn.o_proj.bias", {8}) == "rowwise");
}

TEST_CASE("other families' row-parallel names") {
  CHECK(style_of("gpt_neox.layers.0.attention.query_key_value.weight") == "colwise");
  CHECK(style_of("gpt_neox.layers.0.attention.dense.weight") == "rowwise");
  CHECK(style_of("gpt_neox.layers.0.mlp.dense_h_to_4h.weight") == "colwise");
  CHECK(style_of("transformer.encoder.layers.3.mlp.dense_4h_to_h.weight") == "rowwise");
  CHECK(style_of("transformer.h.0.self_attention.dense.weight") == "rowwise");  // Falcon
  CHECK(style_of("model.layers.0.self_attn.dense.weight") == "rowwise");        // Phi
  CHECK(style_of("model.layers.0.block_sparse_moe.experts.3.w2.weight") == "rowwise");
  CHECK(style_of("model.layers.0.block_sparse_moe.experts.3.w1.weight") == "colwise");
  CHECK(style_of("model.layers.0.attn.out_proj.weight") == "rowwise");
  // A suffix must be whole components: "sw2" and "dense" alone are not row-parallel.
  CHECK(style_of("model.layers.0.mlp.sw2.weight") == "colwise");
  CHECK(style_of("model.layers.0.mlp.dense.weight") == "colwise");
}

TEST_CASE("embeddings, lm_head, norms, non-matrices and params outside blocks stay replicated") {
  CHECK(style_of("model.embed_tokens.weight") == "replicated");
  CHECK(style_of("lm_head.weight") == "replicated");
  CHECK(style_of("model.norm.weight", {8}) == "replicated");
  CHECK(style_of("model.layers.0.input_layernorm.weight", {8}) == "replicated");
  CHECK(style_of("transformer.h.0.ln_1.weight", {8}) == "replicated");
  CHECK(style_of("model.layers.0.self_attn.q_norm.weight", {8}) == "replicated");
  CHECK(style_of("model.layers.0.mlp.experts.gate_up_proj", {4, 16, 8}) == "replicated");
  CHECK(style_of("model.layers.0.mlp.experts.down_proj.weight", {4, 8, 8}) == "replicated");
  CHECK(style_of("model.layers.0.self_attn.rotary_emb.inv_freq", {8}) == "replicated");
  CHECK(style_of("model.layers.0.embed_positions.weight") == "replicated");
}
