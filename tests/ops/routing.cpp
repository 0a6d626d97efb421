// DeepSeek-V3's routing (ops::route with sigmoid scores, a selection bias and group-limited
// top-k) against transformers 5.25's own DeepseekV3TopkRouter
// (tests/ops/fixtures/deepseek_routing.json, written by make_routing_reference.py with the
// router's float32 casts read as float64): the same experts for every token, and their weights to
// 1e-12.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../error_of.hpp"
#include "tpx/ops/routing.hpp"

using namespace tpx;

TEST_CASE("group-limited sigmoid routing chooses transformers' DeepSeek-V3 experts") {
  const char* dir = std::getenv("TPX_OPS_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_OPS_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::filesystem::path(dir) / "deepseek_routing.json");
  REQUIRE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  CHECK(doc.at("transformers") == "5.25.0");
  int tokens_checked = 0, outside_best = 0;
  for (const nlohmann::json& c : doc.at("cases")) {
    const nlohmann::json& cfg = c.at("config");
    const std::string name = cfg.at("name");
    CAPTURE(name);
    const index_t e = cfg.at("n_routed_experts"), k = cfg.at("num_experts_per_tok");
    const std::vector<std::vector<double>> rows = c.at("logits");
    const index_t n = static_cast<index_t>(rows.size());
    std::vector<double> logits;
    for (const std::vector<double>& r : rows) logits.insert(logits.end(), r.begin(), r.end());
    const ops::routing_options o{.n_experts = e,
                                 .top_k = k,
                                 .score = ops::scoring::sigmoid,
                                 .renormalize = cfg.at("norm_topk_prob"),
                                 .scale = cfg.at("routed_scaling_factor"),
                                 .selection_bias = c.at("bias").get<std::vector<double>>(),
                                 .n_group = cfg.at("n_group"),
                                 .topk_group = cfg.at("topk_group")};
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n * k));
    std::vector<double> w(ids.size());
    ops::route(make_matrix<const double>(logits.data(), n, e), o, make_matrix(ids.data(), n, k),
               make_matrix(w.data(), n, k));
    const std::vector<std::vector<std::int64_t>> want_ids = c.at("ids");
    const std::vector<std::vector<double>> want_w = c.at("weights");
    for (index_t t = 0; t < n; ++t) {
      CAPTURE(t);
      // transformers' top-k is unsorted: compare as sets, each weight by its expert.
      for (index_t j = 0; j < k; ++j) {
        const std::int64_t id = want_ids[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)];
        const auto at = std::find(ids.begin() + t * k, ids.begin() + (t + 1) * k, id);
        REQUIRE(at != ids.begin() + (t + 1) * k);
        CHECK(w[static_cast<std::size_t>(at - ids.begin())] ==
              doctest::Approx(want_w[static_cast<std::size_t>(t)][static_cast<std::size_t>(j)])
                  .epsilon(1e-12));
      }
      // Whether the group limit changed this token's choice: some chosen expert is not among the
      // k best of all experts.
      std::vector<double> score(static_cast<std::size_t>(e));
      for (index_t x = 0; x < e; ++x)
        score[static_cast<std::size_t>(x)] =
            1 / (1 + std::exp(-logits[static_cast<std::size_t>(t * e + x)])) +
            o.selection_bias[static_cast<std::size_t>(x)];
      std::vector<double> sorted = score;
      std::sort(sorted.rbegin(), sorted.rend());
      for (index_t j = 0; j < k; ++j)
        if (score[static_cast<std::size_t>(ids[static_cast<std::size_t>(t * k + j)])] <
            sorted[static_cast<std::size_t>(k - 1)]) {
          ++outside_best;
          break;
        }
      ++tokens_checked;
    }
  }
  CHECK(tokens_checked == 64);
  CHECK(outside_best > 0);  // the fixture exercises the group limit
}

TEST_CASE("group-limited routing refuses groups that do not fit the experts, saying so") {
  const std::vector<double> logits(8, 0.5);
  std::vector<std::int64_t> ids(2);
  std::vector<double> w(2);
  const auto route = [&](index_t groups, index_t keep, index_t k) {
    return test::error_of([&] {
      ops::route(make_matrix<const double>(logits.data(), 1, 8),
                 {.n_experts = 8,
                  .top_k = k,
                  .score = ops::scoring::sigmoid,
                  .n_group = groups,
                  .topk_group = keep},
                 make_matrix(ids.data(), 1, k), make_matrix(w.data(), 1, k));
    });
  };
  CHECK(route(3, 1, 2) ==
        "router: group-limited routing needs n_group to divide the 8 experts, 1 ≤ topk_group ≤ "
        "n_group and top_k within the kept groups' experts (top_k ≤ topk_group · experts per "
        "group); got n_group = 3, topk_group = 1, top_k = 2");
  CHECK(route(4, 5, 2).find("got n_group = 4, topk_group = 5") != std::string::npos);
  CHECK(route(8, 1, 2).find("got n_group = 8, topk_group = 1, top_k = 2") != std::string::npos);
  CHECK(route(4, 1, 2) == "no error");
}

TEST_CASE("a group scores by its two best experts (DeepSeek-V3) or by its best (DeepSeek-V2)") {
  // Two groups of two, one kept, one expert chosen. Group 0's scores σ(2), σ(−3) ≈ 0.88, 0.05
  // sum to less than group 1's σ(0.5), σ(0.4) ≈ 0.62, 0.60, but its best is the larger.
  const std::vector<double> logits{2.0, -3.0, 0.5, 0.4};
  const auto chosen = [&](ops::group_scoring g) {
    std::vector<std::int64_t> ids(1);
    std::vector<double> w(1);
    ops::route(make_matrix<const double>(logits.data(), 1, 4),
               {.n_experts = 4,
                .top_k = 1,
                .score = ops::scoring::sigmoid,
                .n_group = 2,
                .topk_group = 1,
                .group_score = g},
               make_matrix(ids.data(), 1, 1), make_matrix(w.data(), 1, 1));
    return ids[0];
  };
  CHECK(chosen(ops::group_scoring::top2_sum) == 2);
  CHECK(chosen(ops::group_scoring::best) == 0);
}
