// Mixture of experts against the fp64 oracle: router, softmax and sigmoid top-k routing, SwiGLU
// experts and a shared expert, in the four ways of splitting them (TP inside experts, the same
// under SP, expert parallel by all-to-all-v, expert parallel masked), for tp/ep ∈ {1, 2, 3, 4, 8}
// with intermediate sizes tp does not divide and experts that get no token; forward, dx, and
// every parameter gradient. The oracle's own gradients are checked against finite differences.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../block_harness.hpp"
#include "../experts_harness.hpp"
#include "../linear_harness.hpp"
#include "grads.hpp"
#include "tpx/layer/moe.hpp"

using namespace tpx;

namespace {

constexpr int group_sizes[] = {1, 2, 3, 4, 8};

struct moe_case {
  index_t tokens = 7, experts = 8, hidden = 6, inter = 5, shared_inter = 0;
  test::moe_routing routing;
  std::uint64_t seed = 100;
  bool gated = false;  // the shared expert scaled by σ(x · g) (Qwen2-MoE)
};

test::moe_weights make_weights(const moe_case& k) {
  test::moe_weights w = test::random_moe(k.experts, k.hidden, k.inter, k.shared_inter, k.seed);
  if (k.gated) w.shared_gate = test::random_dense(1, k.hidden, k.seed + 9);
  return w;
}

const moe_case cases[] = {
    {.tokens = 7, .experts = 8, .hidden = 6, .inter = 5, .routing = {.top_k = 2}},
    {.tokens = 5,
     .experts = 6,
     .hidden = 5,
     .inter = 4,
     .shared_inter = 3,
     .routing = {.top_k = 3,
                 .sigmoid = true,
                 .scale = 2.5,
                 .selection_bias = {0.1, -0.2, 0.05, 0.3, -0.1, 0.0}},
     .seed = 200},
    {.tokens = 2,  // most experts get no token
     .experts = 8,
     .hidden = 4,
     .inter = 3,
     .shared_inter = 2,
     .routing = {.top_k = 1, .renormalize = false},
     .seed = 300},
    {.tokens = 0, .experts = 4, .hidden = 3, .inter = 2, .routing = {.top_k = 2}, .seed = 400},
    {.tokens = 9,  // a gated shared expert wider than the group at tp 8
     .experts = 8,
     .hidden = 5,
     .inter = 3,
     .shared_inter = 6,
     .routing = {.top_k = 2, .renormalize = false},
     .seed = 500,
     .gated = true},
};

/// Every rank's worst relative error over y, dx and every parameter gradient it holds, for
/// weights `w` routed by `routing` on input x with output gradient dy, against `ref`.
template <class Style, class T>
double check_moe(int tp, const test::moe_weights& w, const ops::routing_options& routing,
                 const test::dense& x, const test::dense& dy, const test::moe_result& ref) {
  const moe_case k{.tokens = x.rows,
                   .experts = w.router.rows,
                   .hidden = x.cols,
                   .inter = w.inter,
                   .shared_inter = w.shared_inter,
                   .routing = {.top_k = routing.top_k}};
  const std::vector<T> gate_up = test::stacked<T>(w.gate_up), down = test::stacked<T>(w.down);
  const std::vector<T> router = test::whole<T>(w.router), sgu = test::whole<T>(w.shared_gate_up),
                       sdn = test::whole<T>(w.shared_down);
  const layer::experts_options options{.name = "mlp.experts",
                                       .n_experts = k.experts,
                                       .hidden = k.hidden,
                                       .inter = k.inter,
                                       .top_k = k.routing.top_k,
                                       .shared_inter = k.shared_inter};
  constexpr bool split_tokens = std::is_same_v<typename Style::input, style::layout::shard<0>>;
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  std::vector<double> errors(static_cast<std::size_t>(tp), 0.0);
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& c) {
    layer::moe<Style, host::backend, T> layer(
        engine, c, make_matrix(router.data(), k.experts, k.hidden), routing,
        tensor_view<const T, 3>(gate_up.data(), {{k.experts, 2 * k.inter, k.hidden}}),
        tensor_view<const T, 3>(down.data(), {{k.experts, k.hidden, k.inter}}),
        make_matrix(sgu.data(), 2 * k.shared_inter, k.hidden),
        make_matrix(sdn.data(), k.hidden, k.shared_inter), options);
    const std::vector<T> gate = test::whole<T>(w.shared_gate);
    if (w.shared_gate.rows > 0)
      layer.experts_layer().set_shared_gate(make_matrix(gate.data(), 1, k.hidden));
    const shard::interval mine =
        split_tokens ? rows.of(c.rank()).parts[0] : shard::interval{0, k.tokens};
    const shard::pieces all{{{0, k.hidden}}};
    const std::vector<T> xl = test::detail::take<T>(x, mine, all);
    const std::vector<T> dyl = test::detail::take<T>(dy, mine, all);
    std::vector<T> yl(xl.size()), dxl(xl.size());
    test::detail::poison(yl);
    test::detail::poison(dxl);
    const auto xv = make_matrix(xl.data(), mine.size(), k.hidden);
    layer.forward(xv, make_matrix(yl.data(), mine.size(), k.hidden), k.tokens);
    layer.backward(xv, make_matrix(dyl.data(), mine.size(), k.hidden),
                   make_matrix(dxl.data(), mine.size(), k.hidden), k.tokens);

    using L = typename Style::output;
    const auto y = test::detail::gather_full<L>(c, yl, k.tokens, k.hidden, rows);
    const auto dx = test::detail::gather_full<L>(c, dxl, k.tokens, k.hidden, rows);
    double& worst = errors[static_cast<std::size_t>(c.rank())];
    worst = std::max(worst, test::relative_error<T>(y, ref.y, {0, k.tokens}, {0, k.hidden}));
    worst = std::max(worst, test::relative_error<T>(dx, ref.dx, {0, k.tokens}, {0, k.hidden}));
    worst = std::max(worst, test::moe_grad_error(layer, ref, k.inter, k.shared_inter));
  });
  return *std::max_element(errors.begin(), errors.end());
}

/// The same against the fp64 oracle, on case `k`'s random weights and tokens.
template <class Style, class T>
double check_moe(int tp, const moe_case& k) {
  const test::moe_weights w = make_weights(k);
  const test::dense x = test::random_dense(k.tokens, k.hidden, k.seed + 3);
  const test::dense dy = test::random_dense(k.tokens, k.hidden, k.seed + 4);
  return check_moe<Style, T>(tp, w, test::routing_of(k.routing, k.experts), x, dy,
                             test::moe(x, w, k.routing, dy));
}

}  // namespace

TEST_CASE("the MoE oracle's gradients match finite differences of Σ y ⊙ dy") {
  for (const moe_case& base : {cases[0], cases[1], cases[4]}) {
    moe_case k = base;
    k.tokens = 3;
    test::moe_weights w = make_weights(k);
    test::dense x = test::random_dense(k.tokens, k.hidden, k.seed + 3);
    const test::dense dy = test::random_dense(k.tokens, k.hidden, k.seed + 4);
    const test::moe_result g = test::moe(x, w, k.routing, dy);
    const auto numeric = [&](double& v) {
      return test::central_difference(
          v, [&] { return test::dot(test::moe(x, w, k.routing, dy).y, dy); });
    };
    for (std::size_t i = 0; i < x.v.size(); i += 2)
      CHECK(numeric(x.v[i]) == doctest::Approx(g.dx.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.router.v.size(); i += 3)
      CHECK(numeric(w.router.v[i]) == doctest::Approx(g.drouter.v[i]).epsilon(1e-6));
    for (std::size_t e = 0; e < w.gate_up.size(); ++e) {
      CHECK(numeric(w.gate_up[e].v[1]) == doctest::Approx(g.dgate_up[e].v[1]).epsilon(1e-6));
      CHECK(numeric(w.gate_up[e].v.back()) ==
            doctest::Approx(g.dgate_up[e].v.back()).epsilon(1e-6));
      CHECK(numeric(w.down[e].v[2]) == doctest::Approx(g.ddown[e].v[2]).epsilon(1e-6));
    }
    for (std::size_t i = 0; i < w.shared_gate_up.v.size(); i += 2)
      CHECK(numeric(w.shared_gate_up.v[i]) ==
            doctest::Approx(g.dshared_gate_up.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.shared_down.v.size(); ++i)
      CHECK(numeric(w.shared_down.v[i]) == doctest::Approx(g.dshared_down.v[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < w.shared_gate.v.size(); ++i)
      CHECK(numeric(w.shared_gate.v[i]) == doctest::Approx(g.dshared_gate.v[i]).epsilon(1e-6));
  }
}

TEST_CASE_TEMPLATE("MoE layers reproduce the oracle's output and every gradient", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  for (const moe_case& k : cases)
    for (const int tp : group_sizes) {
      if (S::expert_parallel && k.experts % tp != 0) continue;
      CAPTURE(tp);
      CAPTURE(k.tokens);
      CAPTURE(k.experts);
      CAPTURE(k.routing.top_k);
      CHECK(check_moe<S, double>(tp, k) < 1e-12);
      CHECK(check_moe<S, float>(tp, k) < 1e-4);
    }
}

namespace {
std::string moe_error(
    int tp, index_t experts, index_t top_k,
    const std::function<void(layer::experts<style::moe_masked, host::backend, double>&)>& use =
        {}) {
  const index_t h = 2, i = 2;
  const std::vector<double> gu(static_cast<std::size_t>(experts * 2 * i * h), 0.1),
      dn(static_cast<std::size_t>(experts * h * i), 0.1);
  host::gemm_engine engine;
  return test::error_of(tp, [&](host::communicator& c) {
    layer::experts<style::moe_masked, host::backend, double> ex(
        engine, c, tensor_view<const double, 3>(gu.data(), {{experts, 2 * i, h}}),
        tensor_view<const double, 3>(dn.data(), {{experts, h, i}}), {}, {},
        {.n_experts = experts, .hidden = h, .inter = i, .top_k = top_k});
    if (use) use(ex);
  });
}
}  // namespace

TEST_CASE("bad MoE input is an error with a sentence") {
  CHECK(moe_error(4, 6, 2) ==
        "experts.gate_up_proj: 6 experts cannot be split over ep = 4 ranks; expert parallelism "
        "needs "
        "n_experts % ep == 0 (6 % 4 = 2)");
  CHECK(moe_error(2, 4, 5) == "experts: top_k = 5 must be between 1 and the number of experts, 4");
  CHECK(moe_error(2, 4, 2, [](auto& ex) {
          const std::vector<double> x(3 * 2, 1.0), w(3 * 2, 0.5);
          const std::vector<std::int64_t> ids{0, 1, 2, 3, 1, 4};
          std::vector<double> y(x.size());
          ex.forward(make_matrix(x.data(), 3, 2), make_matrix(ids.data(), 3, 2),
                     make_matrix(w.data(), 3, 2), make_matrix(y.data(), 3, 2));
        }) == "experts: token 2 routes its choice 1 to expert 4, outside the 4 experts [0, 4)");
  ops::routing_options bad{.n_experts = 4, .top_k = 5};
  CHECK(test::error_of([&] { bad.check(); }) ==
        "router: top_k = 5 must be between 1 and the number of experts, 4");
}

TEST_CASE_TEMPLATE("the experts alone, for given routing, reproduce the oracle in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  for (const test::experts_case& k : test::experts_cases())
    for (const int tp : group_sizes) {
      if (S::expert_parallel && k.experts % tp != 0) continue;  // ep must divide E
      CAPTURE(tp);
      CAPTURE(k.tokens);
      CHECK(test::check_experts<S, double>(tp, k) < 1e-12);
      CHECK(test::check_experts<S, float>(tp, k) < 1e-5);
    }
}

namespace {

/// A MoE block transformers 5.25 ran in float64 (tests/layer/fixtures/, written by
/// make_deepseek_moe_reference.py and make_qwen2_moe_reference.py): its weights, tokens, routing
/// and results.
struct hf_moe {
  test::moe_weights w;
  ops::routing_options routing;
  test::dense x, g;
  test::moe_result ref;
};

/// The tensors of one fixture file, by transformers' parameter names.
class hf_moe_file {
 public:
  explicit hf_moe_file(const char* file) {
    const char* dir = std::getenv("TPX_LAYER_FIXTURES");
    REQUIRE_MESSAGE(dir != nullptr, "TPX_LAYER_FIXTURES is not set: run this test through meson");
    std::ifstream in(std::filesystem::path(dir) / file);
    REQUIRE(in.good());
    doc_ = nlohmann::json::parse(in);
    CHECK(doc_.at("transformers") == "5.25.0");
  }
  const nlohmann::json& config() const { return doc_.at("config"); }
  std::vector<double> data(const std::string& name) const {
    return doc_.at("tensors").at(name).at("data").get<std::vector<double>>();
  }
  test::dense matrix(const std::string& name) const {
    const std::vector<index_t> shape = this->shape(name);
    test::dense d(shape.at(0), shape.size() > 1 ? shape.at(1) : 1);
    d.v = data(name);
    return d;
  }
  /// A stacked [E, rows, cols] tensor as one dense per expert.
  std::vector<test::dense> experts(const std::string& name) const {
    const std::vector<index_t> s = shape(name);
    const std::vector<double> all = data(name);
    std::vector<test::dense> out;
    for (index_t e = 0; e < s.at(0); ++e) {
      test::dense d(s[1], s[2]);
      const auto from = all.begin() + e * s[1] * s[2];
      d.v.assign(from, from + s[1] * s[2]);
      out.push_back(std::move(d));
    }
    return out;
  }
  /// A shared expert's gate and up projections stacked as one [2·I_s, H] (gate rows, then up).
  test::dense stacked(const std::string& prefix) const {
    test::dense gate = matrix(prefix + "gate_proj.weight"), up = matrix(prefix + "up_proj.weight");
    test::dense d(gate.rows + up.rows, gate.cols);
    d.v = gate.v;
    d.v.insert(d.v.end(), up.v.begin(), up.v.end());
    return d;
  }
  /// The block's weights, input, output and gradients; its shared expert's under `shared`
  /// ("shared_experts." or "shared_expert.").
  hf_moe block(const std::string& shared) const {
    hf_moe m;
    m.w.router = matrix("gate.weight");
    m.w.gate_up = experts("experts.gate_up_proj");
    m.w.down = experts("experts.down_proj");
    m.w.shared_gate_up = stacked(shared);
    m.w.shared_down = matrix(shared + "down_proj.weight");
    m.w.inter = config().at("moe_intermediate_size");
    m.w.shared_inter = m.w.shared_down.cols;
    m.x = matrix("x");
    m.g = matrix("g");
    m.ref.y = matrix("y");
    m.ref.dx = matrix("dx");
    m.ref.drouter = matrix("grad.gate.weight");
    m.ref.dgate_up = experts("grad.experts.gate_up_proj");
    m.ref.ddown = experts("grad.experts.down_proj");
    m.ref.dshared_gate_up = stacked("grad." + shared);
    m.ref.dshared_down = matrix("grad." + shared + "down_proj.weight");
    return m;
  }

 private:
  std::vector<index_t> shape(const std::string& name) const {
    return doc_.at("tensors").at(name).at("shape").get<std::vector<index_t>>();
  }
  nlohmann::json doc_;
};

/// DeepseekV3MoE: sigmoid scores with a selection bias, group-limited top-k, shared experts.
hf_moe load_deepseek_moe() {
  const hf_moe_file f("deepseek_moe_reference.json");
  const nlohmann::json& c = f.config();
  hf_moe m = f.block("shared_experts.");
  CHECK(m.w.shared_inter == m.w.inter * c.at("n_shared_experts").get<index_t>());
  m.routing = {.n_experts = c.at("n_routed_experts"),
               .top_k = c.at("num_experts_per_tok"),
               .score = ops::scoring::sigmoid,
               .renormalize = c.at("norm_topk_prob"),
               .scale = c.at("routed_scaling_factor"),
               .selection_bias = f.data("gate.e_score_correction_bias"),
               .n_group = c.at("n_group"),
               .topk_group = c.at("topk_group")};
  return m;
}

/// Qwen2MoeSparseMoeBlock: softmax top-k and a shared expert gated by σ(x · g).
hf_moe load_qwen2_moe() {
  const hf_moe_file f("qwen2_moe_reference.json");
  const nlohmann::json& c = f.config();
  hf_moe m = f.block("shared_expert.");
  CHECK(m.w.shared_inter == c.at("shared_expert_intermediate_size").get<index_t>());
  m.w.shared_gate = f.matrix("shared_expert_gate.weight");
  m.ref.dshared_gate = f.matrix("grad.shared_expert_gate.weight");
  m.routing = {.n_experts = c.at("num_experts"),
               .top_k = c.at("num_experts_per_tok"),
               .renormalize = c.at("norm_topk_prob")};
  return m;
}

}  // namespace

TEST_CASE_TEMPLATE("DeepSeek-V3's MoE block equals transformers' DeepseekV3MoE in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  // Sigmoid scores, a selection bias, group-limited top-k (4 groups, 2 kept), renormalised and
  // scaled weights, two shared experts' worth of shared MLP: y, dx and every gradient on every
  // rank, at each group size the 8 experts allow (TP: every one).
  const hf_moe m = load_deepseek_moe();
  for (const int tp : group_sizes) {
    if (S::expert_parallel && m.routing.n_experts % tp != 0) continue;
    CAPTURE(tp);
    CHECK(check_moe<S, double>(tp, m.w, m.routing, m.x, m.g, m.ref) < 1e-12);
  }
}

TEST_CASE_TEMPLATE("Qwen2-MoE's block equals transformers' Qwen2MoeSparseMoeBlock in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  // Softmax top-3 of 8 renormalised, and a shared expert (I = 7, wider than the group at tp 4,
  // empty on some ranks at tp 8) scaled per token by σ(x · shared_expert_gate): y, dx and every
  // gradient — the gate's too — on every rank.
  const hf_moe m = load_qwen2_moe();
  CHECK(m.w.shared_gate.rows == 1);
  for (const int tp : group_sizes) {
    if (S::expert_parallel && m.routing.n_experts % tp != 0) continue;
    CAPTURE(tp);
    CHECK(check_moe<S, double>(tp, m.w, m.routing, m.x, m.g, m.ref) < 1e-12);
  }
}
