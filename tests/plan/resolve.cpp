// Plan resolution: shards that tile their tensors, heads kept with their KV heads, the priority
// of the sources and the fallback past rules that cannot place a tensor, the EP and SP overlays,
// the report, and the communication figures against their analytic values.

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "../error_of.hpp"
#include "tpx/plan/resolve.hpp"
#include "tpx/shard/units.hpp"

using namespace tpx;

namespace {

plan::model_config config(const std::string& text) {
  return plan::parse_model_config(nlohmann::json::parse(text), "config.json");
}

const plan::model_config& llama() {
  static const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 512,
    "intermediate_size": 1376, "num_attention_heads": 16, "num_key_value_heads": 4,
    "num_hidden_layers": 3, "vocab_size": 1003, "tie_word_embeddings": false})");
  return c;
}

const plan::model_config& mixtral() {
  static const plan::model_config c = config(R"({"model_type": "mixtral", "hidden_size": 256,
    "intermediate_size": 448, "num_attention_heads": 8, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 1000})");
  return c;
}

plan::resolution resolve_preset(const plan::model_config& c, plan::resolve_options o,
                                const plan::hf_plan* hf = nullptr,
                                const plan::ds_config* ds = nullptr) {
  const plan::preset* p = plan::find_preset(c.model_type);
  REQUIRE(p != nullptr);
  plan::plan_sources src;
  src.preset = p;
  src.hf = hf;
  src.deepspeed = ds;
  return plan::resolve(c, p->tensors(c), src, plan::registry::builtin(), o);
}

const plan::resolved_tensor& tensor(const plan::resolution& r, const std::string& name) {
  for (const plan::resolved_tensor& t : r.tensors)
    if (t.tensor.name == name) return t;
  FAIL("no tensor ", name);
  return r.tensors.front();
}

bool contains(const std::vector<std::string>& v, const std::string& part) {
  for (const std::string& s : v)
    if (s.find(part) != std::string::npos) return true;
  return false;
}

plan::hf_plan hf(const char* text, bool causal_lm = true) {
  return plan::parse_hf_plan(nlohmann::json::parse(text), "plan.json", causal_lm,
                             plan::registry::builtin());
}

}  // namespace

TEST_CASE("every shard tiles its tensor; query heads sit with their KV heads") {
  for (const int tp : {1, 2, 3, 4, 5, 6, 7, 8, 16}) {  // any tp up to the 16 query heads
    CAPTURE(tp);
    const plan::resolution r = resolve_preset(llama(), {.tp = tp});
    CHECK(r.decided_by == "preset llama");
    std::vector<index_t> bytes(static_cast<std::size_t>(tp), 0);
    for (const plan::resolved_tensor& t : r.tensors) {
      CAPTURE(t.tensor.name);
      const shard::placement& p = t.placement;
      for (int rank = 0; rank < tp; ++rank) bytes[static_cast<std::size_t>(rank)] += t.bytes(rank);
      if (p.is_replicated()) {
        CHECK(t.bytes(0) == shard::element_count(t.tensor.shape) * 2);
        continue;
      }
      CHECK(p.partition.covers());
      // Only KV heads are ever held twice, and only when tp exceeds their count.
      const bool kv = t.tensor.name.find("k_proj") != std::string::npos ||
                      t.tensor.name.find("v_proj") != std::string::npos;
      CHECK(p.partition.overlaps() == (kv && tp > 4));
      if (!p.partition.overlaps()) {
        index_t held = 0;
        for (int rank = 0; rank < tp; ++rank) held += shard::element_count(t.rank_shape(rank));
        CHECK(held == shard::element_count(t.tensor.shape));
      }
    }
    CHECK(bytes == r.param_bytes);
    // q rows of rank r are its query heads, k rows the KV heads they use (head_dim 32).
    const shard::gqa g{16, 4, 32};
    const plan::resolved_tensor& q = tensor(r, "model.layers.1.self_attn.q_proj.weight");
    const plan::resolved_tensor& k = tensor(r, "model.layers.1.self_attn.k_proj.weight");
    const plan::resolved_tensor& o = tensor(r, "model.layers.1.self_attn.o_proj.weight");
    for (int rank = 0; rank < tp; ++rank) {
      CAPTURE(rank);
      const shard::interval qh = g.q_heads(tp, rank), kh = g.kv_heads(tp, rank);
      CHECK(q.placement.of(rank).dims[0].parts ==
            std::vector<shard::interval>{{qh.begin * 32, qh.end * 32}});
      CHECK(k.placement.of(rank).dims[0].parts ==
            std::vector<shard::interval>{{kh.begin * 32, kh.end * 32}});
      CHECK(o.placement.dim == 1);
      CHECK(o.placement.of(rank).dims[1] == q.placement.of(rank).dims[0]);
    }
    CHECK(contains(r.report.warnings, "KV heads replicated") == (tp > 4));
    if (tp == 6)  // query heads 3 | 3 | 3 | 3 | 2 | 2 over groups of 4
      CHECK(contains(r.report.warnings, "KV heads by rank: 0 | 0-1 | 1-2 | 2 | 3 | 3"));
    CHECK(contains(r.report.warnings, "does not divide over tp 3") == (tp == 3));
    CHECK(r.report.unused_rules.empty());
    CHECK(r.report.unsupported.empty());
    // Unmatched: two norms per layer, the final norm (the embedding has transformers' prepended
    // embedding_rowwise).
    CHECK(r.report.unmatched.size() == 2 * 3 + 1);
  }
}

TEST_CASE("uneven splits are balanced and reported with their sizes") {
  const plan::resolution r = resolve_preset(llama(), {.tp = 3});
  // intermediate 1376 over 3: 459, 459, 458; vocabulary 1003: 335, 334, 334.
  CHECK(tensor(r, "model.layers.0.mlp.up_proj.weight").rank_shape(2) ==
        std::vector<index_t>{458, 512});
  CHECK(tensor(r, "lm_head.weight").rank_shape(0) == std::vector<index_t>{335, 512});
  CHECK(contains(r.report.warnings,
                 "model.layers.*.mlp.up_proj.weight dim 0 (1376) does not divide over tp 3: "
                 "split 459, 459, 458 (3 tensors)"));
  CHECK(contains(r.report.warnings,
                 "lm_head.weight dim 0 (1003) does not divide over tp 3: split "
                 "335, 334, 334"));
  // Four KV heads over tp 3: 2, 1, 1 heads, so q splits 8, 4, 4 heads.
  CHECK(tensor(r, "model.layers.2.self_attn.q_proj.weight").rank_shape(0) ==
        std::vector<index_t>{256, 512});
}

TEST_CASE("a dim that divides over tp but splits unevenly in whole heads says so") {
  // 6 query heads of 8 (48 rows) and 3 KV heads over tp 2: KV heads 2 and 1, so q splits 32, 16
  // although 48 divides by 2.
  const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 48,
    "intermediate_size": 64, "num_attention_heads": 6, "num_key_value_heads": 3,
    "num_hidden_layers": 1, "vocab_size": 97})");
  const plan::resolution r = resolve_preset(c, {.tp = 2});
  CHECK(tensor(r, "model.layers.0.self_attn.q_proj.weight").rank_shape(1) ==
        std::vector<index_t>{16, 48});
  CHECK(contains(r.report.warnings,
                 "model.layers.*.self_attn.q_proj.weight dim 0 (48) divides over tp 2 but is "
                 "split 32, 16: its whole heads or blocks do not"));
  CHECK(!contains(r.report.warnings, "q_proj.weight dim 0 (48) does not divide"));
}

TEST_CASE("communication per token per layer follows the styles") {
  const double h = 512, bytes = 2;
  // TP: one all-reduce of [hidden] after o_proj and after down_proj in forward; one of dx after
  // the q|k|v group and after the gate|up group in backward.
  const plan::resolution tp = resolve_preset(llama(), {.tp = 4});
  CHECK(tp.comm_forward == doctest::Approx(2 * h * bytes));
  CHECK(tp.comm_backward == doctest::Approx(2 * h * bytes));
  // SP: all-gather before each colwise group, reduce-scatter after each rowwise — the same total
  // twice over in each direction.
  const plan::resolution sp = resolve_preset(llama(), {.tp = 4, .sp = true});
  CHECK(sp.comm_forward == doctest::Approx(4 * h * bytes));
  CHECK(sp.comm_backward == doctest::Approx(4 * h * bytes));
  // Mixtral: attention as above; the experts module all-reduces its output once, and in
  // backward dx and the top-k weights (k = 2).
  const double mh = 256;
  const plan::resolution m = resolve_preset(mixtral(), {.tp = 2});
  CHECK(m.comm_forward == doctest::Approx(2 * mh * bytes));
  CHECK(m.comm_backward == doctest::Approx((2 * mh + 2) * bytes));
  // Under SP the experts gather [x | ids | weights] (2 + 2k per token) and reduce-scatter y.
  const plan::resolution msp = resolve_preset(mixtral(), {.tp = 2, .sp = true});
  CHECK(msp.comm_forward == doctest::Approx((4 * mh + 2 * 2) * bytes));
  CHECK(msp.comm_backward == doctest::Approx((4 * mh + 2) * bytes));
  // Each linear adds what its style's description says: a split input (rowwise_split_input)
  // all-gathers dx [intermediate] in backward, a gathered output (colwise_gather_output)
  // all-gathers y [out] in forward. Under SP, tpx has no sequence-parallel form of either: their
  // traffic is counted as without SP, and the report says so.
  const plan::hf_plan split = hf(R"({"base_model_tp_plan": {
    "layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
    "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
    "layers.*.mlp.gate_proj": "colwise_gather_output", "layers.*.mlp.up_proj": "colwise",
    "layers.*.mlp.down_proj": "rowwise_split_input"}})");
  const double inter = 1376;
  const plan::resolution s1 = resolve_preset(llama(), {.tp = 4}, &split);
  CHECK(s1.comm_forward == doctest::Approx((2 * h + inter) * bytes));
  CHECK(s1.comm_backward == doctest::Approx((2 * h + inter) * bytes));
  const plan::resolution s2 = resolve_preset(llama(), {.tp = 4, .sp = true}, &split);
  CHECK(contains(s2.report.warnings,
                 "style 'rowwise_split_input' has no sequence-parallel form in tpx; its "
                 "communication is counted as without SP"));
  CHECK(contains(s2.report.warnings,
                 "model.layers.*.mlp.gate_proj.weight: style "
                 "'colwise_gather_output' has no sequence-parallel form"));
  // gpt_oss-like float32 config: the element size follows the config's dtype.
  const plan::model_config f32 = config(R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 4, "num_hidden_layers": 1,
    "vocab_size": 10, "torch_dtype": "float32"})");
  const plan::resolution r32 = resolve_preset(f32, {.tp = 2});
  CHECK(r32.comm_forward == doctest::Approx(2 * 64 * 4));
  CHECK(tensor(r32, "model.norm.weight").bytes(1) == 64 * 4);
}

TEST_CASE("a DeepSpeed partition_config decides over the HF plan, which decides over the preset") {
  // HF plan: lm_head colwise (sharded logits) where the preset gathers them; no MLP keys.
  const plan::hf_plan plan = hf(R"({"base_model_tp_plan": {
      "layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "colwise",
      "layers.*.self_attn.v_proj": "colwise", "layers.*.self_attn.o_proj": "rowwise",
      "layers.*.mlp.nothing": "colwise"},
    "lm_tp_plan": {"lm_head": "colwise"}})");
  const plan::resolution r = resolve_preset(llama(), {.tp = 2}, &plan);
  CHECK(r.decided_by == "plan");
  CHECK(tensor(r, "lm_head.weight").style == "colwise");
  // The HF plan is silent on the MLP: replicated and reported, the preset is not consulted.
  CHECK(tensor(r, "model.layers.0.mlp.up_proj.weight").placement.is_replicated());
  CHECK(contains(r.report.unmatched, "model.layers.0.mlp.up_proj.weight"));
  CHECK(r.report.unused_rules ==
        std::vector<std::string>{"plan base_model_tp_plan: model.layers.*.mlp.nothing → colwise"});

  // DeepSpeed: first matching spec wins; unmatched stay replicated without use_default_specs.
  const auto ds_json = [](bool defaults) {
    return nlohmann::json::parse(fmt::format(R"({{"tensor_parallel": {{"partition_config": {{
      "use_default_specs": {}, "layer_specs": [
        {{"patterns": [".*\\.o_proj\\.weight$"], "partition_type": "row"}},
        {{"patterns": [".*_proj\\.weight$"], "partition_type": "skip"}},
        {{"patterns": [".*\\.q_proj\\.weight$"], "partition_type": "column"}}]}}}}}})",
                                             defaults ? "true" : "false"));
  };
  const plan::ds_config strict = plan::parse_deepspeed(ds_json(false), "ds.json");
  const plan::resolution d = resolve_preset(llama(), {.tp = 2}, &plan, &strict);
  CHECK(d.decided_by == "DeepSpeed partition_config");
  CHECK(tensor(d, "model.layers.0.self_attn.o_proj.weight").placement.dim == 1);
  CHECK(tensor(d, "model.layers.0.self_attn.o_proj.weight").source ==
        "partition_config.layer_specs[0]");
  CHECK(tensor(d, "model.layers.0.self_attn.q_proj.weight").placement.is_replicated());  // skip
  CHECK(tensor(d, "lm_head.weight").placement.is_replicated());
  CHECK(contains(d.report.unmatched, "lm_head.weight"));
  CHECK(
      d.report.unused_rules ==
      std::vector<std::string>{"partition_config.layer_specs[2] (patterns .*\\.q_proj\\.weight$)"});
  // With use_default_specs a tensor no spec matches goes on to the HF plan.
  const plan::ds_config merged = plan::parse_deepspeed(ds_json(true), "ds.json");
  const plan::resolution dm = resolve_preset(llama(), {.tp = 2}, &plan, &merged);
  CHECK(tensor(dm, "lm_head.weight").style == "colwise");
  CHECK(tensor(dm, "lm_head.weight").source == "plan lm_tp_plan: lm_head");

  // No plan and no preset: the name heuristics decide.
  const std::vector<plan::tensor_decl> t = plan::find_preset("llama")->tensors(llama());
  const plan::resolution h = plan::resolve(llama(), t, {}, plan::registry::builtin(), {.tp = 2});
  CHECK(h.decided_by == "name heuristics");
  CHECK(tensor(h, "model.layers.0.mlp.down_proj.weight").style == "rowwise");
  CHECK(tensor(h, "model.layers.0.mlp.gate_proj.weight").style == "colwise");
  CHECK(tensor(h, "lm_head.weight").placement.is_replicated());
}

TEST_CASE("a rule that cannot place its tensor falls back to the next source, and is reported") {
  // packed_colwise on gate_proj (1376 rows: two halves) is fine; on the norm (a 1-d weight) a
  // packed split of 512 is fine too; embedding_rowwise on a norm cannot place a vector.
  const plan::model_config odd = config(R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 99, "num_attention_heads": 4, "num_hidden_layers": 1,
    "vocab_size": 10})");
  const plan::hf_plan plan = hf(R"({"base_model_tp_plan": {
      "layers.*.mlp.gate_proj": "packed_colwise",
      "layers.*.input_layernorm": "embedding_rowwise",
      "layers.*.mlp.up_proj": "colwise"}})");
  const plan::resolution r = resolve_preset(odd, {.tp = 2}, &plan);
  // 99 rows are not two equal halves: the preset's colwise places gate_proj instead.
  const plan::resolved_tensor& gate = tensor(r, "model.layers.0.mlp.gate_proj.weight");
  CHECK(gate.style == "colwise");
  CHECK(gate.source == "preset llama base_model_tp_plan: model.layers.*.mlp.gate_proj");
  CHECK(gate.rank_shape(0) == std::vector<index_t>{50, 64});
  CHECK(contains(r.report.unsupported,
                 "model.layers.*.mlp.gate_proj.weight: style 'packed_colwise' (plan "
                 "base_model_tp_plan: model.layers.*.mlp.gate_proj) cannot place a tensor of shape "
                 "[99, 64]: a packed style needs a fused dim of two equal blocks (gate | up), but "
                 "dim 0 has odd size 99"));
  // The norm: the preset has no rule for it, so after the fallback nothing places it.
  const plan::resolved_tensor& norm = tensor(r, "model.layers.0.input_layernorm.weight");
  CHECK(norm.placement.is_replicated());
  CHECK(norm.source == "replicated: no source could place it");
  CHECK(contains(r.report.unsupported, "an embedding table is a matrix, not 1-d"));
  CHECK_FALSE(contains(r.report.unmatched, "input_layernorm"));
}

TEST_CASE("ambiguous keys, tied embeddings") {
  // The same key from two sections: a tie, reported once for every layer's tensor.
  const plan::hf_plan plan = hf(R"({"base_model_tp_plan": {"layers.*.mlp.up_proj": "colwise"},
    "lm_tp_plan": {"model.layers.*.mlp.up_proj": "rowwise"}})");
  const plan::resolution r = resolve_preset(llama(), {.tp = 2}, &plan);
  CHECK(contains(r.report.warnings,
                 "keys 'model.layers.*.mlp.up_proj' and "
                 "'model.layers.*.mlp.up_proj' match "
                 "model.layers.*.mlp.up_proj.weight equally"));

  // Tied: no lm_head tensor; its colwise rule splits the vocabulary, so the embedding becomes
  // vocab-parallel and the table is counted once.
  const plan::model_config tied = config(R"({"model_type": "qwen2", "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 1, "vocab_size": 1001, "tie_word_embeddings": true})");
  const plan::resolution t = resolve_preset(tied, {.tp = 2});
  const plan::resolved_tensor& e = tensor(t, "model.embed_tokens.weight");
  CHECK(e.style == "embedding_rowwise");
  CHECK(e.rank_shape(0) == std::vector<index_t>{501, 64});
  CHECK(e.rank_shape(1) == std::vector<index_t>{500, 64});
  CHECK_FALSE(contains(t.report.unmatched, "embed_tokens"));
  CHECK(t.report.unused_rules.empty());
  CHECK(contains(t.report.warnings, "tied embeddings: lm_head has no tensor of its own"));
  // Gemma2 ties by default (config silent): the same.
  const plan::model_config gemma = config(R"({"model_type": "gemma2", "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "num_hidden_layers": 1, "vocab_size": 1000})");
  CHECK(tensor(resolve_preset(gemma, {.tp = 4}), "model.embed_tokens.weight").placement.dim == 0);
}

TEST_CASE("expert parallelism overlays experts and router only; attention stays TP") {
  for (const int ep : {2, 4, 8}) {
    CAPTURE(ep);
    const plan::resolution r = resolve_preset(mixtral(), {.tp = ep, .ep = ep});
    const plan::resolved_tensor& q = tensor(r, "model.layers.1.self_attn.q_proj.weight");
    CHECK(q.style == "colwise");
    CHECK(q.rank_shape(0)[0] == 8 * 32 / ep);
    // transformers 5.24's EP plan has no router entry: the TP plan's replicate holds.
    const plan::resolved_tensor& router = tensor(r, "model.layers.1.block_sparse_moe.gate.weight");
    CHECK(router.style == "replicate");
    CHECK(router.placement.is_replicated());
    // Expert x lives whole on rank x / (8 / ep), nowhere else.
    for (int x = 0; x < 8; ++x) {
      const plan::resolved_tensor& w =
          tensor(r, fmt::format("model.layers.1.block_sparse_moe.experts.{}.w2.weight", x));
      CHECK(w.style == "grouped_gemm");
      for (int rank = 0; rank < ep; ++rank)
        CHECK(w.bytes(rank) == (rank == x / (8 / ep) ? 256 * 448 * 2 : 0));
    }
    CHECK(r.report.unused_rules.empty());
    // Ranks hold equal parameter bytes: every rank owns 8 / ep whole experts.
    CHECK(std::adjacent_find(r.param_bytes.begin(), r.param_bytes.end(), std::not_equal_to<>()) ==
          r.param_bytes.end());
  }
  // E % ep ≠ 0, ep ≠ tp, and EP for a model with no EP plan are errors with a sentence.
  const plan::model_config six = config(R"({"model_type": "mixtral", "hidden_size": 64,
    "intermediate_size": 32, "num_attention_heads": 8, "num_key_value_heads": 2,
    "num_hidden_layers": 1, "num_local_experts": 6, "num_experts_per_tok": 2,
    "vocab_size": 100})");
  // Experts that do not divide: the plan places everything else and reports the experts as
  // unplaceable; the resolution is not usable.
  const plan::resolution uneven = resolve_preset(six, {.tp = 4, .ep = 4});
  CHECK_FALSE(uneven.usable());
  REQUIRE(uneven.report.unplaceable.size() == 2);  // gate_up and down, one line for all layers
  CHECK(uneven.report.unplaceable[0].find("6 experts cannot be split over ep = 4 ranks") !=
        std::string::npos);
  CHECK(tensor(uneven, "model.layers.0.self_attn.q_proj.weight").rank_shape(0)[0] == 16);
  CHECK_FALSE(
      tensor(uneven, "model.layers.0.block_sparse_moe.experts.5.w2.weight").unplaceable.empty());
  CHECK(test::error_of([&] { uneven.expect_usable(); })
            .find(": 6 experts cannot be split over ep = 4 ranks; expert "
                  "parallelism needs n_experts % ep == 0 (6 % 4 = 2) (and ") != std::string::npos);
  CHECK(test::error_of([] {
          resolve_preset(mixtral(), {.tp = 4, .ep = 2});
        }).find("ep must be 1 or equal to tp") != std::string::npos);
  CHECK(test::error_of([] {
          resolve_preset(llama(), {.tp = 2, .ep = 2});
        }).find("needs an EP plan") != std::string::npos);
  // Fused [E, …] experts split on dim 0, E / ep per rank.
  const plan::model_config oss = config(R"({"model_type": "gpt_oss", "hidden_size": 64,
    "intermediate_size": 48, "num_attention_heads": 8, "num_key_value_heads": 2,
    "head_dim": 8, "num_hidden_layers": 1, "num_local_experts": 4, "experts_per_token": 2,
    "vocab_size": 100})");
  const plan::resolution g = resolve_preset(oss, {.tp = 4, .ep = 4});
  CHECK(tensor(g, "model.layers.0.mlp.experts.gate_up_proj").rank_shape(3) ==
        std::vector<index_t>{1, 64, 96});
  CHECK(test::error_of([&] {
          resolve_preset(oss, {.tp = 8, .ep = 8}).expect_usable();
        }).find("experts.gate_up_proj: 4 experts cannot be split over ep = 8 ranks") !=
        std::string::npos);
}

TEST_CASE("experts stored [E, in, out] split on the right dims; sinks follow the query heads") {
  const plan::model_config oss = config(R"({"model_type": "gpt_oss", "hidden_size": 64,
    "intermediate_size": 48, "num_attention_heads": 8, "num_key_value_heads": 2,
    "head_dim": 8, "num_hidden_layers": 1, "num_local_experts": 4, "experts_per_token": 2,
    "vocab_size": 100})");
  for (const int tp : {2, 4, 8}) {
    CAPTURE(tp);
    const plan::resolution r = resolve_preset(oss, {.tp = tp});
    const plan::resolved_tensor& gu = tensor(r, "model.layers.0.mlp.experts.gate_up_proj");
    CHECK(gu.placement.dim == 2);  // [E, H, 2I]: the out dim is last
    // Gate and up are interleaved: every piece holds whole pairs.
    for (int rank = 0; rank < tp; ++rank) {
      const shard::selection held = gu.placement.of(rank);
      for (const shard::interval& i : held.dims[2].parts)
        CHECK((i.begin % 2 == 0 && i.end % 2 == 0));
    }
    const plan::resolved_tensor& gb = tensor(r, "model.layers.0.mlp.experts.gate_up_proj_bias");
    CHECK(gb.placement.dim == 1);
    for (int rank = 0; rank < tp; ++rank)
      CHECK(gb.placement.of(rank).dims[1] == gu.placement.of(rank).dims[2]);
    CHECK(tensor(r, "model.layers.0.mlp.experts.down_proj").placement.dim == 1);  // [E, I, H]
    CHECK(tensor(r, "model.layers.0.mlp.experts.down_proj_bias").placement.is_replicated());
    CHECK(tensor(r, "model.layers.0.self_attn.o_proj.bias").placement.is_replicated());
    const plan::resolved_tensor& sinks = tensor(r, "model.layers.0.self_attn.sinks");
    const plan::resolved_tensor& q = tensor(r, "model.layers.0.self_attn.q_proj.weight");
    for (int rank = 0; rank < tp; ++rank) {
      const shard::interval rows = q.placement.of(rank).dims[0].parts.at(0);
      CHECK(sinks.placement.of(rank).dims[0].parts ==
            std::vector<shard::interval>{{rows.begin / 8, rows.end / 8}});
    }
  }
}

TEST_CASE("bad options and splits no placement can serve are errors with a sentence") {
  CHECK(test::error_of([] { resolve_preset(llama(), {.tp = 0}); }) ==
        "tp must be at least 1, got 0");
  // 16 query heads over tp 17: attention splits in whole query heads. Every other tensor is still
  // planned; the attention tensors are reported unplaceable, and the resolution is not usable.
  const plan::resolution r = resolve_preset(llama(), {.tp = 17});
  CHECK_FALSE(r.usable());
  CHECK(r.report.unplaceable.size() == 4);  // q, k, v, o: one line each for every layer
  CHECK(r.report.unplaceable[0].find("model.layers.*.self_attn.q_proj.weight: style 'colwise' "
                                     "(preset llama base_model_tp_plan: ") == 0);
  CHECK(r.report.unplaceable[0].find("n_heads = 16 query heads cannot be split over tp = 17; "
                                     "attention is split in whole query heads") !=
        std::string::npos);
  CHECK(r.report.unplaceable[0].ends_with("(3 tensors)"));
  CHECK(tensor(r, "model.layers.2.mlp.gate_proj.weight").rank_shape(5)[0] == 1376 / 17 + 1);
  CHECK(tensor(r, "model.layers.2.self_attn.k_proj.weight").placement.is_replicated());
  const std::string heads = test::error_of([&] { r.expect_usable(); });
  CHECK(heads.find("model.layers.0.self_attn.q_proj.weight: n_heads = 16 query heads cannot be "
                   "split over tp = 17") == 0);
  CHECK(heads.find("(and 11 more tensors the plan cannot place at tp 17)") != std::string::npos);
}

TEST_CASE("the fixture's real plans resolve against the presets' tensors, in every vocabulary") {
  const char* dir = std::getenv("TPX_PLAN_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_PLAN_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::filesystem::path(dir) / "hf_plans_sample.json");
  REQUIRE(in.good());
  const nlohmann::json fixture = nlohmann::json::parse(in);
  const plan::registry styles = plan::registry::builtin();
  int resolved = 0;
  for (const char* vocabulary : {"current_vocabulary", "older_vocabulary", "dtensor_vocabulary"})
    for (const auto& [type, plan_json] : fixture.at(vocabulary).items()) {
      CAPTURE(vocabulary);
      CAPTURE(type);
      const plan::model_config c = config(fmt::format(R"({{"model_type": "{}", "hidden_size": 64,
        "intermediate_size": 96, "num_attention_heads": 8, "num_key_value_heads": 4,
        "num_hidden_layers": 2, "num_local_experts": 4, "num_experts": 4,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "vocab_size": 100}})",
                                                      type));
      const plan::hf_plan hp = plan::parse_hf_plan(plan_json, type, true, styles);
      for (const bool sp : {false, true}) {
        CAPTURE(sp);
        const plan::resolution r = resolve_preset(c, {.tp = 2, .sp = sp}, &hp);
        CHECK(r.decided_by == "plan");
        CHECK(r.report.unsupported.empty());
        // Every rule matches — the keys of transformers' in-memory experts (fused, and under
        // `mlp` where Mixtral's checkpoints say `block_sparse_moe`) cover the per-expert tensors
        // they are made of — but qwen3_moe's dense-MLP keys, for layers listed in
        // mlp_only_layers (none here).
        for (const std::string& u : r.report.unused_rules) {
          CAPTURE(u);
          CHECK(type == "qwen3_moe");
          CHECK((u.find("mlp.gate_proj") != std::string::npos ||
                 u.find("mlp.up_proj") != std::string::npos ||
                 u.find("mlp.down_proj") != std::string::npos));
        }
        CHECK_FALSE(contains(r.report.warnings, "in-memory experts"));
        ++resolved;
      }
    }
  CHECK(resolved == 2 * 8);
  // The DTensor llama SP plan moves what tpx's SP preset moves: all-gather + reduce-scatter of
  // [hidden] around attention and around the MLP, each way.
  const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 8, "num_key_value_heads": 4,
    "num_hidden_layers": 2, "vocab_size": 100})");
  const plan::hf_plan dt =
      plan::parse_hf_plan(fixture.at("dtensor_vocabulary").at("llama"), "llama", true, styles);
  const plan::resolution with_sp = resolve_preset(c, {.tp = 2, .sp = true}, &dt);
  CHECK(with_sp.comm_forward == doctest::Approx(4 * 64 * 2));
  CHECK(with_sp.comm_backward == doctest::Approx(4 * 64 * 2));
  CHECK(tensor(with_sp, "lm_head.weight").style == "colwise_loss_parallel");
  CHECK(tensor(with_sp, "model.layers.1.self_attn.o_proj.weight").style ==
        "rowwise_reduce_scatter");
}

TEST_CASE("a DeepSpeed spec with unequal sub-parameters splits each in whole heads") {
  // Fused q|k|v of 8 query and 4 KV heads of 8: [64 + 32 + 32, 64].
  const plan::model_config c = config(R"({"model_type": "phi3", "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 8, "num_key_value_heads": 4,
    "num_hidden_layers": 1, "vocab_size": 100})");
  const plan::ds_config ds = plan::parse_deepspeed(nlohmann::json::parse(R"({"tensor_parallel": {
    "partition_config": {"layer_specs": [
      {"patterns": [".*\\.qkv_proj\\.weight$"], "partition_type": "column",
       "shape": [[64, 32, 32], -1], "partition_dim": 0},
      {"patterns": [".*\\.gate_up_proj\\.weight$"], "partition_type": "column",
       "shape": [2, -1]}]}}})"),
                                                   "ds.json");
  const plan::resolution r = resolve_preset(c, {.tp = 3}, nullptr, &ds);
  const plan::resolved_tensor& qkv = tensor(r, "model.layers.0.self_attn.qkv_proj.weight");
  CHECK(qkv.source == "partition_config.layer_specs[0]");
  // q: 8 heads → 3, 3, 2; k and v: 4 heads → 2, 1, 1; each block on its own, in heads of 8.
  CHECK(qkv.placement.of(0).dims[0].parts ==
        std::vector<shard::interval>{{0, 24}, {64, 80}, {96, 112}});
  CHECK(qkv.placement.of(2).dims[0].parts ==
        std::vector<shard::interval>{{48, 64}, {88, 96}, {120, 128}});
  // gate | up, 96 rows each, split 32 per rank in each half.
  const plan::resolved_tensor& gu = tensor(r, "model.layers.0.mlp.gate_up_proj.weight");
  CHECK(gu.placement.of(1).dims[0].parts == std::vector<shard::interval>{{32, 64}, {128, 160}});
  CHECK(r.report.unused_rules.empty());
}

TEST_CASE(
    "transformers 5.24's own plans place hub checkpoints' per-expert tensors as transformers "
    "does") {
  const char* dir = std::getenv("TPX_PLAN_FIXTURES");
  REQUIRE(dir != nullptr);
  std::ifstream in(std::filesystem::path(dir) / "hf_plans_sample_5_24.json");
  REQUIRE(in.good());
  const nlohmann::json fixture = nlohmann::json::parse(in);
  const plan::registry styles = plan::registry::builtin();
  // Mixtral stores block_sparse_moe.experts.N.w1 | w3 | w2, Qwen3-MoE mlp.experts.N.gate_proj | …;
  // the plans name the fused mlp.experts.gate_up_proj [E, 2I, H] and down_proj [E, H, I].
  const plan::model_config qwen = config(R"({"model_type": "qwen3_moe", "hidden_size": 64,
    "intermediate_size": 96, "moe_intermediate_size": 14, "num_attention_heads": 8,
    "num_key_value_heads": 4, "head_dim": 8, "num_hidden_layers": 2, "num_experts": 8,
    "num_experts_per_tok": 2, "vocab_size": 100})");
  struct model_case {
    const char* type;
    const plan::model_config* c;
    const char* gate;  // the checkpoint's names of expert 5's gate, up, down
    const char* up;
    const char* down;
  };
  for (const model_case& m :
       {model_case{"mixtral", &mixtral(), "model.layers.1.block_sparse_moe.experts.5.w1.weight",
                   "model.layers.1.block_sparse_moe.experts.5.w3.weight",
                   "model.layers.1.block_sparse_moe.experts.5.w2.weight"},
        model_case{"qwen3_moe", &qwen, "model.layers.1.mlp.experts.5.gate_proj.weight",
                   "model.layers.1.mlp.experts.5.up_proj.weight",
                   "model.layers.1.mlp.experts.5.down_proj.weight"}}) {
    const std::string type = m.type;
    CAPTURE(type);
    const plan::hf_plan hp = plan::parse_hf_plan(fixture.at(m.type), m.type, true, styles);
    const index_t inter = m.c->moe_intermediate_size;
    for (const int tp : {2, 4}) {
      CAPTURE(tp);
      // TP: each block of gate|up split on its own (packed_colwise), down on its input columns.
      const plan::resolution r = resolve_preset(*m.c, {.tp = tp}, &hp);
      CHECK(r.decided_by == "plan");
      CHECK(r.report.unsupported.empty());
      for (const std::string& u : r.report.unused_rules) {  // qwen3_moe's dense-MLP keys only:
        CAPTURE(u);                                         // this config has no dense layer
        CHECK(type == "qwen3_moe");
        CHECK(u.find("mlp.experts") == std::string::npos);
      }
      CHECK_FALSE(contains(r.report.warnings, "in-memory experts"));
      const shard::partition rows = shard::partition::split(inter, tp, shard::split_kind::balanced);
      for (const char* n : {m.gate, m.up}) {
        const plan::resolved_tensor& t = tensor(r, n);
        CAPTURE(n);
        CHECK(t.style == "packed_colwise");
        REQUIRE(t.placement.dim == 0);
        for (int rank = 0; rank < tp; ++rank)
          CHECK(t.placement.partition.of(rank) == rows.of(rank));
      }
      const plan::resolved_tensor& d = tensor(r, m.down);
      CHECK(d.style == "rowwise");
      REQUIRE(d.placement.dim == 1);
      for (int rank = 0; rank < tp; ++rank) CHECK(d.placement.partition.of(rank) == rows.of(rank));
      // The experts module's all-reduce counts once per layer, as the preset's does.
      const plan::resolution preset = resolve_preset(*m.c, {.tp = tp});
      CHECK(r.comm_forward == doctest::Approx(preset.comm_forward));
      CHECK(r.comm_backward == doctest::Approx(preset.comm_backward));
      // EP: expert 5 whole on rank 5 / (E / ep).
      const plan::resolution e = resolve_preset(*m.c, {.tp = tp, .ep = tp}, &hp);
      CHECK(e.report.unsupported.empty());
      for (const char* n : {m.gate, m.up, m.down}) {
        const plan::resolved_tensor& t = tensor(e, n);
        CAPTURE(n);
        CHECK(t.style == "grouped_gemm");
        const int owner = static_cast<int>(5 / (m.c->n_experts / tp));
        for (int rank = 0; rank < tp; ++rank)
          CHECK(t.placement.local_shape(rank) ==
                (rank == owner ? t.tensor.shape : std::vector<index_t>{0, t.tensor.shape[1]}));
      }
    }
  }
  // Every plan of the fixture resolves with no unknown string and no unhonoured rule, in TP, EP
  // (where it has an EP plan) and SP modes.
  for (const auto& [type, plan_json] : fixture.items()) {
    if (type == "_about" || plan::find_preset(type) == nullptr) continue;  // granite: no preset
    CAPTURE(type);
    const plan::hf_plan hp = plan::parse_hf_plan(plan_json, type, true, styles);
    const plan::model_config& c = type == "mixtral"     ? mixtral()
                                  : type == "qwen3_moe" ? qwen
                                                        : llama();
    const plan::model_config typed = [&] {
      plan::model_config x = c;
      x.model_type = type;
      return x;
    }();
    for (const bool sp : {false, true})
      for (const int ep : {1, 2}) {
        if (ep > 1 && !plan_json.contains("base_model_ep_plan")) continue;
        CAPTURE(sp);
        CAPTURE(ep);
        const plan::resolution r = resolve_preset(typed, {.tp = 2, .sp = sp, .ep = ep}, &hp);
        CHECK(r.report.unsupported.empty());
      }
  }
}

TEST_CASE("--split chunk splits uneven dims as transformers' DTensor shards do; heads stay whole") {
  const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 60,
    "intermediate_size": 106, "num_attention_heads": 6, "num_key_value_heads": 3,
    "num_hidden_layers": 1, "vocab_size": 100})");
  const auto sizes = [&](shard::split_kind k, const std::string& name) {
    return tensor(resolve_preset(c, {.tp = 3, .split = k}), name).placement.partition.sizes();
  };
  CHECK(sizes(shard::split_kind::chunk, "model.layers.0.mlp.gate_proj.weight") ==
        std::vector<index_t>{36, 36, 34});  // torch.chunk: ceil(106 / 3) = 36
  CHECK(sizes(shard::split_kind::balanced, "model.layers.0.mlp.gate_proj.weight") ==
        std::vector<index_t>{36, 35, 35});
  CHECK(sizes(shard::split_kind::chunk, "model.layers.0.mlp.down_proj.weight") ==
        std::vector<index_t>{36, 36, 34});
  CHECK(sizes(shard::split_kind::chunk, "lm_head.weight") == std::vector<index_t>{34, 34, 32});
  // Whole heads either way: 6 query heads of 10 over 3 ranks.
  CHECK(sizes(shard::split_kind::chunk, "model.layers.0.self_attn.q_proj.weight") ==
        std::vector<index_t>{20, 20, 20});
}

TEST_CASE("an HF plan without an embedding rule makes it vocab-parallel, as transformers does") {
  // transformers prepends embed_tokens: embedding_rowwise to every TP plan it applies.
  const plan::resolution r = resolve_preset(llama(), {.tp = 4});
  const plan::resolved_tensor& e = tensor(r, "model.embed_tokens.weight");
  CHECK(e.style == "embedding_rowwise");
  CHECK(e.source.find("transformers' effective plan") != std::string::npos);
  CHECK(e.placement.dim == 0);
  CHECK(e.placement.partition.sizes() == std::vector<index_t>{251, 251, 251, 250});
  CHECK_FALSE(std::count(r.report.unmatched.begin(), r.report.unmatched.end(),
                         "model.embed_tokens.weight"));
}

TEST_CASE("ep_dispatch_experts runs the dispatch the resolution chooses") {
  const plan::registry styles = plan::registry::builtin();
  const plan::style_spec& s = styles.at("ep_dispatch_experts");
  REQUIRE(s.dispatch == plan::dispatch::automatic);
  const auto runs = [&](plan::dispatch d, bool sp) {
    return plan::visit_style(
        plan::with_dispatch(s, d, sp), []<class S>() { return std::string(S::name); }, sp);
  };
  CHECK(runs(plan::dispatch::automatic, false) == style::moe_masked::name);
  CHECK(runs(plan::dispatch::automatic, true) == style::moe_all_to_all::name);
  CHECK(runs(plan::dispatch::all_to_all, false) == style::moe_all_to_all::name);
  CHECK(runs(plan::dispatch::all_to_all, true) == style::moe_all_to_all::name);
  CHECK(runs(plan::dispatch::all_reduce, false) == style::moe_masked::name);
  CHECK(test::error_of([&] {
          runs(plan::dispatch::all_reduce, true);
        }).find("an all_reduce dispatch needs every token on every rank") != std::string::npos);
  CHECK(plan::parse_dispatch("all_to_all", "--ep-dispatch") == plan::dispatch::all_to_all);
  CHECK(test::error_of([] {
          plan::parse_dispatch("deepep", "--ep-dispatch");
        }).find("--ep-dispatch must be auto, all_to_all or all_reduce") != std::string::npos);

  // The communication figures follow the dispatch: per token per layer, all_to_all moves
  // top-k rows of hidden, (ep − 1) / ep of them, each way in both passes; all_reduce (masked)
  // all-reduces the hidden output in forward, dx and the top-k weights in backward.
  const plan::model_config& c = mixtral();
  const int ep = 4;
  const double h = 256, k = 2, bytes = 2, rows = k * h * (ep - 1) / ep;
  const plan::resolution a2a =
      resolve_preset(c, {.tp = ep, .ep = ep, .dispatch = plan::dispatch::all_to_all});
  const plan::resolution ar =
      resolve_preset(c, {.tp = ep, .ep = ep, .dispatch = plan::dispatch::all_reduce});
  const plan::resolution automatic = resolve_preset(c, {.tp = ep, .ep = ep});
  CHECK(a2a.comm_forward - ar.comm_forward == doctest::Approx(bytes * (2 * rows - h)));
  CHECK(a2a.comm_backward - ar.comm_backward == doctest::Approx(bytes * (2 * rows - h - k)));
  CHECK(automatic.comm_forward == ar.comm_forward);  // auto without SP: masked
  // Bus bytes: without SP every forward collective here is an all-reduce, 2(tp−1)/tp of its
  // size; an all-to-all's size counts the rows leaving the rank, its bus bytes the same.
  CHECK(ar.comm_forward_bus == doctest::Approx(ar.comm_forward * 2 * (ep - 1) / ep));
  CHECK(a2a.comm_forward_bus - ar.comm_forward_bus ==
        doctest::Approx(bytes * (2 * rows - h * 2 * (ep - 1) / ep)));
  const plan::resolution sp_auto = resolve_preset(c, {.tp = ep, .sp = true, .ep = ep});
  const plan::resolution sp_a2a =
      resolve_preset(c, {.tp = ep, .sp = true, .ep = ep, .dispatch = plan::dispatch::all_to_all});
  CHECK(sp_auto.comm_forward == sp_a2a.comm_forward);  // auto under SP: all-to-all
  CHECK(sp_auto.report.unsupported.empty());
  // all_reduce under SP cannot run: the rule is reported, not silently counted.
  const plan::resolution sp_ar =
      resolve_preset(c, {.tp = ep, .sp = true, .ep = ep, .dispatch = plan::dispatch::all_reduce});
  REQUIRE(sp_ar.report.unsupported.size() == 1);
  CHECK(sp_ar.report.unsupported[0].find("every token must be on every rank for an all_reduce "
                                         "dispatch") != std::string::npos);
}

TEST_CASE("transformers 5.25's unit styles place whole heads on the unit mesh") {
  // llama(): 16 query / 4 KV heads of 32. k, v as unit_colwise and o as unit_rowwise at tp 8:
  // gcd(4, 8) = 4 groups, each KV head on 2 ranks; o's 16 heads: gcd 8, no replicas.
  const plan::hf_plan units = hf(R"({"base_model_tp_plan": {
    "layers.*.self_attn.q_proj": "colwise", "layers.*.self_attn.k_proj": "unit_colwise",
    "layers.*.self_attn.v_proj": "unit_colwise", "layers.*.self_attn.o_proj": "unit_rowwise"}})");
  const plan::registry styles = plan::registry::builtin();
  CHECK(styles.at("unit_colwise").units);
  CHECK(styles.at("unit_colwise").kind == plan::family::colwise);
  CHECK(styles.at("unit_rowwise").kind == plan::family::rowwise);
  CHECK(styles.at("unit_rowwise").policy() == "style::rowwise<> on shard::units");
  for (const int tp : {2, 4, 8, 16}) {
    CAPTURE(tp);
    const plan::resolution r = resolve_preset(llama(), {.tp = tp}, &units);
    CHECK(r.report.unsupported.empty());
    CHECK(r.report.unplaceable.empty());
    const plan::resolved_tensor& k = tensor(r, "model.layers.0.self_attn.k_proj.weight");
    CHECK(k.style == "unit_colwise");
    REQUIRE(k.placement.dim == 0);
    CHECK(k.placement.partition == shard::units{4, 32}.of(tp));
    const plan::resolved_tensor& o = tensor(r, "model.layers.2.self_attn.o_proj.weight");
    REQUIRE(o.placement.dim == 1);
    CHECK(o.placement.partition == shard::units{16, 32}.of(tp));
    // Replicated units are reported with the mesh and their cost.
    const int replicas = tp / std::gcd(4, tp);
    CHECK(contains(r.report.warnings,
                   fmt::format("units replicated: 4 units of 32 over tp {} form a ({} × {}) mesh: "
                               "each unit is held by {} ranks, +{}% of the tensor's bytes",
                               tp, std::gcd(4, tp), replicas, replicas, 100 * (replicas - 1))) ==
          (replicas > 1));
  }
  // 6 KV heads at tp 4, transformers' own example: h0h1h2 twice, h3h4h5 twice.
  const plan::model_config six = config(R"({"model_type": "llama", "hidden_size": 96,
    "intermediate_size": 64, "num_attention_heads": 12, "num_key_value_heads": 6,
    "num_hidden_layers": 1, "vocab_size": 100})");
  const plan::resolution r6 = resolve_preset(six, {.tp = 4}, &units);
  const shard::partition& v =
      tensor(r6, "model.layers.0.self_attn.v_proj.weight").placement.partition;
  CHECK(v.of(0).parts == std::vector<shard::interval>{{0, 24}});
  CHECK(v.of(1).parts == std::vector<shard::interval>{{0, 24}});
  CHECK(v.of(2).parts == std::vector<shard::interval>{{24, 48}});
  CHECK(v.of(3).parts == std::vector<shard::interval>{{24, 48}});
  // A dim that is not whole units of head_dim cannot be placed: the rule decides, and says why.
  const plan::hf_plan odd =
      hf(R"({"base_model_tp_plan": {"layers.*.mlp.up_proj": "unit_colwise"}})");
  const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 64,
    "intermediate_size": 100, "num_attention_heads": 8, "num_key_value_heads": 4,
    "num_hidden_layers": 1, "vocab_size": 100})");
  const plan::resolution bad = resolve_preset(c, {.tp = 2}, &odd);
  REQUIRE(bad.report.unplaceable.size() == 1);
  CHECK(bad.report.unplaceable[0] ==
        "model.layers.*.mlp.up_proj.weight: style 'unit_colwise' (plan base_model_tp_plan: "
        "model.layers.*.mlp.up_proj): a unit style splits dim 0 (100) in whole units of head_dim, "
        "but "
        "100 is not a multiple of head_dim 8");
}

TEST_CASE("unit_rowwise's all-reduce spans the unit axis: its bus bytes are the axis's") {
  // 4 heads of 32 at tp 8: q, k, v and o on a (4 × 2) unit mesh, so o's forward all-reduce runs
  // over 4 ranks — 2 · 3 / 4 of its size on the links, not 2 · 7 / 8. Nothing else in the layers
  // communicates in forward (the MLP has no rule here).
  const plan::hf_plan units = hf(R"({"base_model_tp_plan": {
    "layers.*.self_attn.q_proj": "unit_colwise", "layers.*.self_attn.k_proj": "unit_colwise",
    "layers.*.self_attn.v_proj": "unit_colwise", "layers.*.self_attn.o_proj": "unit_rowwise"}})");
  const plan::model_config c = config(R"({"model_type": "llama", "hidden_size": 128,
    "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 100})");
  const plan::resolution r = resolve_preset(c, {.tp = 8}, &units);
  CHECK(r.usable());
  CHECK(r.comm_forward == doctest::Approx(128 * 2));  // [hidden] in bf16 a token
  CHECK(r.comm_forward_bus == doctest::Approx(r.comm_forward * 2 * 3 / 4));
  // The colwise side's dx all-reduce in backward spans the whole group.
  CHECK(r.comm_backward_bus == doctest::Approx(r.comm_backward * 2 * 7 / 8));
}

TEST_CASE("transformers 5.25: an empty TP plan runs the EP plan alone across the TP ranks") {
  const plan::hf_plan ep_only = hf(R"({"base_model_tp_plan": {}, "base_model_ep_plan": {
    "layers.*.mlp.experts": "ep_dispatch_experts",
    "layers.*.mlp.experts.gate_up_proj": "grouped_gemm",
    "layers.*.mlp.experts.down_proj": "grouped_gemm"}})");
  const plan::resolution r = resolve_preset(mixtral(), {.tp = 4}, &ep_only);
  CHECK(r.options.ep == 4);
  CHECK(contains(r.report.warnings,
                 "has EP rules and an empty base_model_tp_plan: as transformers 5.25 "
                 "reads tp_plan = {}, its EP plan runs alone across the 4 TP ranks (ep = 4)"));
  for (int x = 0; x < 8; ++x) {
    const plan::resolved_tensor& w =
        tensor(r, fmt::format("model.layers.1.block_sparse_moe.experts.{}.w1.weight", x));
    CHECK(w.style == "grouped_gemm");
    for (int rank = 0; rank < 4; ++rank) CHECK((w.bytes(rank) > 0) == (rank == x / 2));
  }
  CHECK(tensor(r, "model.layers.0.self_attn.q_proj.weight").placement.is_replicated());
  // Without the empty section (a plan that has no TP plan), or with TP rules, nothing changes.
  CHECK(resolve_preset(mixtral(), {.tp = 4}).options.ep == 1);
  const plan::hf_plan no_tp = hf(R"({"base_model_ep_plan": {
    "layers.*.mlp.experts.gate_up_proj": "grouped_gemm"}})");
  CHECK_FALSE(no_tp.tp_disabled);
  CHECK(resolve_preset(mixtral(), {.tp = 4}, &no_tp).options.ep == 1);
}

TEST_CASE(
    "transformers 5.25's vocabulary: deprecations noted, removals and its fused kernel said") {
  // moe_tp_experts (tpx keeps expert TP) is noted where a plan uses it.
  const plan::resolution r = resolve_preset(mixtral(), {.tp = 2});
  CHECK(contains(r.report.warnings,
                 "transformers 5.25 deprecates expert tensor parallelism "
                 "(moe_tp_experts, removal in 5.28"));
  CHECK_FALSE(contains(resolve_preset(llama(), {.tp = 2}).report.warnings, "deprecates"));
  CHECK(plan::transformers_registers("unit_colwise"));
  CHECK_FALSE(plan::transformers_registers("unit_colwise", plan::hf_release::v5_24));
  CHECK(plan::transformers_registers("moe_identity_expert", plan::hf_release::v5_24));
  CHECK_FALSE(plan::transformers_registers("moe_identity_expert"));
  CHECK(plan::registry::builtin().at("moe_identity_expert").kind == plan::family::identity_expert);
  CHECK(test::error_of([] {
          plan::transformers_plan(
              nlohmann::json::parse(R"({"layers.*.mlp.shared": "moe_identity_expert"})"), "p.json");
        }) ==
        "p.json: plan: key 'layers.*.mlp.shared' has style 'moe_identity_expert', which "
        "transformers 5.25 does not register (5.24 did; 5.25 removed it); a plan it loads "
        "uses only its own strings");
  CHECK(test::error_of([] { plan::parse_dispatch("deepgemm_megamoe", "--ep-dispatch"); }) ==
        "--ep-dispatch deepgemm_megamoe is transformers' DeepGEMM Mega MoE kernel, which tpx does "
        "not have; the dispatch it fuses is all_to_all: use all_to_all (or auto)");
}
