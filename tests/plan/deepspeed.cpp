// DeepSpeed AutoTP partition_config: parsing, first-match-wins regex specs anchored at the start
// of the name, model-type filters, fused weights with equal and unequal sub-parameters, and every
// bad input as a sentence.

#include <doctest/doctest.h>

#include <functional>
#include <string>

#include "../error_of.hpp"
#include "tpx/plan/deepspeed.hpp"

using namespace tpx;
using test::error_of;
using ds_type = plan::ds_spec::type;

namespace {

plan::ds_config parse(const char* text) {
  return plan::parse_deepspeed(nlohmann::json::parse(text), "ds.json");
}

const char* const config = R"({
  "train_batch_size": 8,
  "tensor_parallel": {
    "autotp_size": 4,
    "preset_model": "llama",
    "partition_config": {
      "use_default_specs": true,
      "layer_specs": [
        {"patterns": [".*\\.o_proj\\.weight$", ".*\\.down_proj\\.weight$"], "partition_type": "row"},
        {"patterns": [".*\\.qkv_proj\\.weight$"], "partition_type": "column",
         "shape": [[16, 4, 4], -1], "partition_dim": 0},
        {"patterns": [".*\\.gate_up_proj\\.weight$"], "partition_type": "column",
         "shape": [2, -1], "model_types": ["llama"]},
        {"patterns": [".*\\.gate_up_proj\\.weight$"], "partition_type": "skip"},
        {"patterns": ["lm_head"], "partition_type": "column"},
        {"patterns": [".*"], "partition_type": "skip"}
      ]}}})";

}  // namespace

TEST_CASE("a DeepSpeed tensor_parallel section parses with every field") {
  const plan::ds_config c = parse(config);
  CHECK(c.autotp_size == 4);
  CHECK(c.preset_model == "llama");
  CHECK(c.use_default_specs);
  REQUIRE(c.specs.size() == 6);
  CHECK(c.specs[0].partition == ds_type::row);
  CHECK(c.specs[0].partition_dim == 1);
  CHECK(c.specs[1].partition_dim == 0);
  CHECK(c.specs[1].shape[0].sub_sizes == std::vector<index_t>{16, 4, 4});
  CHECK(c.specs[2].shape[0].count);
  CHECK(c.specs[2].model_types == std::vector<std::string>{"llama"});
  // The section alone parses too.
  CHECK(parse(R"({"autotp_size": 2})").autotp_size == 2);
}

TEST_CASE("the first matching spec wins; patterns match from the start of the name") {
  const plan::ds_config c = parse(config);
  const auto spec_of = [&](const char* name, const char* model) {
    const plan::ds_spec* s = c.first_match(name, model);
    return s ? static_cast<int>(s->index) : -1;
  };
  CHECK(spec_of("model.layers.0.self_attn.o_proj.weight", "llama") == 0);
  CHECK(spec_of("model.layers.7.mlp.down_proj.weight", "llama") == 0);   // second pattern
  CHECK(spec_of("model.layers.0.self_attn.o_proj.bias", "llama") == 5);  // $ anchors the end
  CHECK(spec_of("model.layers.0.self_attn.qkv_proj.weight", "llama") == 1);
  CHECK(spec_of("model.layers.0.mlp.gate_up_proj.weight", "llama") == 2);
  CHECK(spec_of("model.layers.0.mlp.gate_up_proj.weight", "phi3") == 3);  // model_types filter
  CHECK(spec_of("lm_head.weight", "llama") == 4);
  CHECK(spec_of("model.lm_head.weight", "llama") == 5);  // "lm_head" must match at the start
  CHECK(parse(R"({"partition_config": {"layer_specs": [
                  {"patterns": ["x"], "partition_type": "row"}]}})")
            .first_match("y.x", "llama") == nullptr);
}

TEST_CASE("specs place tensors: row, column, skip, equal and unequal sub-parameters") {
  const plan::ds_config c = parse(config);
  const auto kind = shard::split_kind::balanced;
  // row: the in dim, one interval per rank.
  const shard::placement o = c.specs[0].placement("o_proj.weight", {6, 10}, 4, kind);
  CHECK(o.dim == 1);
  CHECK(o.partition.sizes() == std::vector<index_t>{3, 3, 2, 2});
  // Unequal sub-parameters q | k | v in whole heads of 2: each block split on its own.
  const shard::placement qkv = c.specs[1].placement("qkv_proj.weight", {24, 6}, 2, kind, 2);
  CHECK(qkv.dim == 0);
  CHECK(qkv.of(0).dims[0].parts == std::vector<shard::interval>{{0, 8}, {16, 18}, {20, 22}});
  CHECK(qkv.of(1).dims[0].parts == std::vector<shard::interval>{{8, 16}, {18, 20}, {22, 24}});
  // Two equal sub-parameters (gate | up), uneven over 3 ranks: nothing dropped.
  const shard::placement gu = c.specs[2].placement("gate_up_proj.weight", {14, 6}, 3, kind);
  CHECK(gu.partition.sizes() == std::vector<index_t>{6, 4, 4});
  CHECK(gu.partition.covers());
  CHECK_FALSE(gu.partition.overlaps());
  CHECK(c.specs[3].placement("x", {14, 6}, 3, kind).is_replicated());

  CHECK(error_of([&] {
          c.specs[1].placement("qkv_proj.weight", {20, 6}, 2, kind);
        })
            .find("qkv_proj.weight dim 0: layer spec 1 gives sub-parameters adding up to 24, but "
                  "the dim has 20") != std::string::npos);
  CHECK(error_of([&] {
          c.specs[2].placement("gate_up_proj.weight", {15, 6}, 2, kind);
        }).find("splits it into 2 equal sub-parameters, but 15 is not a multiple of 2") !=
        std::string::npos);
  CHECK(error_of([&] {
          c.specs[0].placement("norm.weight", {6}, 2, kind);
        }).find("norm.weight: layer spec 0 splits dim 1 but the tensor has shape [6]") !=
        std::string::npos);
}

TEST_CASE("bad DeepSpeed configs are sentences naming the spec and the rule") {
  const auto bad = [](const char* specs) {
    return error_of([&] {
      parse(fmt::format(R"({{"tensor_parallel": {{"partition_config": {{"layer_specs": {}}}}}}})",
                        specs)
                .c_str());
    });
  };
  CHECK(bad(R"([{"patterns": ["(unclosed"], "partition_type": "row"}])")
            .find("layer_specs[0]: pattern \"(unclosed\" is not a valid regular expression") !=
        std::string::npos);
  CHECK(bad(R"([{"patterns": [".*"], "partition_type": "diagonal"}])")
            .find("partition_type \"diagonal\" is not \"row\", \"column\" or \"skip\"") !=
        std::string::npos);
  CHECK(bad(R"([{"patterns": [], "partition_type": "row"}])")
            .find("\"patterns\" must be a non-empty array") != std::string::npos);
  CHECK(bad(R"([{"patterns": [".*"], "partition_type": "row", "shape": [0, -1]}])")
            .find("shape[0] is 0") != std::string::npos);
  CHECK(bad(R"([{"patterns": [".*"], "partition_type": "column", "shape": [-1, [2, 2]]}])")
            .find("shape[1] lists sub-parameters, but the split dim is 0") != std::string::npos);
  CHECK(bad(R"([{"patterns": [".*"], "partition_type": "row", "partition_dim": -1}])")
            .find("partition_dim must be a dim index") != std::string::npos);
  CHECK(bad(R"({"x": 1})").find("layer_specs must be an array") != std::string::npos);
  CHECK(error_of([] {
          parse(R"({"tensor_parallel": {"autotp_size": 0}})");
        }).find("autotp_size must be a whole number ≥ 1, got 0") != std::string::npos);
}

TEST_CASE("patterns are Python's, matched without backtracking, and std::regex's hangs are gone") {
  const auto spec_with = [](const std::string& pattern) {
    return fmt::format(
        R"({{"tensor_parallel": {{"partition_config": {{"layer_specs": [{{"patterns": [{}],
        "partition_type": "row"}}]}}}}}})",
        nlohmann::json(pattern).dump());
  };
  const auto error = [&](const std::string& pattern) {
    return error_of([&] { parse(spec_with(pattern).c_str()); });
  };
  // Nested repetitions backtracked without bound in std::regex; the automaton takes them (the
  // verdicts are Python's: tests/plan/pattern.cpp).
  for (const char* nested : {"(.*)*x$", "(a+)+b", "((ab)*c)+", "(x*){2,}", ".*a.*b.*c.*d.*e"}) {
    CAPTURE(nested);
    CHECK(error(nested) == "no error");
  }
  // Python 3.11 reads ".*+" as possessive (std::regex as "(.*)+", 10 s to match, found by
  // tools/fuzz); tpx refuses it with a sentence.
  CHECK(error(R"(.*+\.o_proj\.weight$)")
            .find("ds.json: layer_specs[0]: pattern \".*+\\.o_proj\\.weight$\" uses a possessive "
                  "quantifier") == 0);
  CHECK(error("**x").find("nothing to repeat at position 0") != std::string::npos);
  const plan::ds_config ds = parse(spec_with("(.*)*\\.o_proj\\.weight$").c_str());
  CHECK(ds.specs[0].matches("model.layers.0.self_attn.o_proj.weight", "llama"));
  // A 38 KB tensor name made std::regex overflow the stack.
  const std::string huge = std::string(38'000, 'a') + ".o_proj.weight";
  CHECK(ds.specs[0].matches(huge, "llama"));
  CHECK_FALSE(ds.specs[0].matches(huge + "x", "llama"));
}
