// Multi-head latent attention (layer::mla_attention) against transformers 5.25's own
// DeepseekV3Attention in float64 (tests/layer/fixtures/mla_reference.json, written by
// make_mla_reference.py): y, dx and every parameter's gradient, on every rank's shard, at every
// tp the heads allow — including tp 1, the unsharded layer — for a q LoRA rank with interleaved
// RoPE, biases and v_head_dim < qk_head_dim, and a full-rank q_proj with rotate_half RoPE and
// v_head_dim > qk_head_dim. And the collectives it moves, its latent cache, its refusals, and the
// plan's placement of its tensors.

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/mla_attention.hpp"
#include "tpx/plan/resolve.hpp"
#include "tpx/shard/split.hpp"

using namespace tpx;

namespace {

/// One case of the fixture: its dims and tensors (as dense [rows × cols]; a vector is a column).
struct mla_case {
  nlohmann::json config;
  std::map<std::string, test::dense> t;

  const test::dense& at(const std::string& name) const {
    const auto it = t.find(name);
    REQUIRE_MESSAGE(it != t.end(), "the fixture has no tensor ", name);
    return it->second;
  }
  bool has(const std::string& name) const { return t.count(name) != 0; }
  matrix_view<const double> matrix(const std::string& name) const {
    const test::dense& d = at(name);
    return make_matrix<const double>(d.v.data(), d.rows, d.cols);
  }
  std::span<const double> vec(const std::string& name) const {
    if (!has(name)) return {};
    return std::span<const double>(at(name).v);
  }
};

std::vector<mla_case> fixture() {
  const char* dir = std::getenv("TPX_LAYER_FIXTURES");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_LAYER_FIXTURES is not set: run this test through meson");
  std::ifstream in(std::filesystem::path(dir) / "mla_reference.json");
  REQUIRE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  CHECK(doc.at("transformers") == "5.25.0");
  std::vector<mla_case> cases;
  for (const nlohmann::json& c : doc.at("cases")) {
    mla_case m{c.at("config"), {}};
    for (const auto& [name, t] : c.at("tensors").items()) {
      const std::vector<index_t> shape = t.at("shape").get<std::vector<index_t>>();
      test::dense d(shape.at(0), shape.size() == 2 ? shape[1] : 1);
      d.v = t.at("data").get<std::vector<double>>();
      m.t.emplace(name, std::move(d));
    }
    cases.push_back(std::move(m));
  }
  return cases;
}

layer::mla_options options_of(const mla_case& m) {
  const nlohmann::json& c = m.config;
  return {.hidden = c.at("hidden_size"),
          .n_heads = c.at("num_attention_heads"),
          .q_lora_rank = c.at("q_lora_rank").is_null() ? 0 : c.at("q_lora_rank").get<index_t>(),
          .kv_lora_rank = c.at("kv_lora_rank"),
          .qk_nope_head_dim = c.at("qk_nope_head_dim"),
          .qk_rope_head_dim = c.at("qk_rope_head_dim"),
          .v_head_dim = c.at("v_head_dim"),
          .rope_interleave = c.at("rope_interleave"),
          .rope_theta = c.at("rope_theta")};
}

layer::mla_weights<double> weights_of(const mla_case& m) {
  layer::mla_weights<double> w;
  if (m.has("q_proj.weight")) {
    w.q_proj = m.matrix("q_proj.weight");
  } else {
    w.q_a_proj = m.matrix("q_a_proj.weight");
    w.q_a_bias = m.vec("q_a_proj.bias");
    w.q_a_norm = m.vec("q_a_layernorm.weight");
    w.q_b_proj = m.matrix("q_b_proj.weight");
  }
  w.kv_a_proj = m.matrix("kv_a_proj_with_mqa.weight");
  w.kv_a_bias = m.vec("kv_a_proj_with_mqa.bias");
  w.kv_a_norm = m.vec("kv_a_layernorm.weight");
  w.kv_b_proj = m.matrix("kv_b_proj.weight");
  w.o_proj = m.matrix("o_proj.weight");
  w.o_bias = m.vec("o_proj.bias");
  return w;
}

template <class V>
std::span<const double> span_of(const V& v) {
  return {v.data(), static_cast<std::size_t>(v.size())};
}

/// kv_a_proj_with_mqa's weight and bias elements and kv_a_layernorm's.
index_t latent_params(const layer::mla_options& o, std::size_t bias) {
  return (o.kv_lora_rank + o.qk_rope_head_dim) * o.hidden + static_cast<index_t>(bias) +
         o.kv_lora_rank;
}

/// Rank `rank`'s rows of T tokens in block mode `Mode`: all of them, or its balanced block.
template <layer::block_mode Mode>
shard::interval rows_of(index_t tokens, int tp, int rank) {
  if constexpr (Mode == layer::block_mode::sequence)
    return shard::split(tokens, tp, rank, shard::split_kind::balanced);
  else
    return {0, tokens};
}

/// y, dx and every gradient of the layer in block mode `Mode` at `tp` against the fixture's
/// (to 1e-12), and the collectives each rank moved.
template <layer::block_mode Mode>
void check_reference(const mla_case& m, int tp) {
  host::gemm_engine engine;
  const layer::mla_options o = options_of(m);
  const layer::mla_weights<double> w = weights_of(m);
  const test::dense &x = m.at("x"), &g = m.at("g");
  const index_t n = x.rows, hidden = o.hidden;
  const bool lora = o.q_lora_rank > 0;
  const std::string q_name = lora ? "q_b_proj" : "q_proj";
  test::worst_error err(tp);
  std::vector<comm::stats> stats(static_cast<std::size_t>(tp));
  host::run(tp, [&](host::communicator& c) {
    const int r = c.rank();
    layer::mla_attention<host::backend, double, Mode> a(engine, c, w, o);
    const shard::interval mine = rows_of<Mode>(n, tp, r);
    std::vector<double> y(static_cast<std::size_t>(mine.size() * hidden)), dx(y.size());
    const auto xv =
        make_matrix<const double>(x.v.data() + mine.begin * hidden, mine.size(), hidden);
    c.reset_statistics();
    a.forward(xv, make_matrix(y.data(), mine.size(), hidden), n);
    a.backward(xv, make_matrix<const double>(g.v.data() + mine.begin * hidden, mine.size(), hidden),
               make_matrix(dx.data(), mine.size(), hidden), n);
    stats[static_cast<std::size_t>(r)] = c.statistics();
    err.note(r, test::relative_error<double>(y, m.at("y"), mine, {0, hidden}));
    err.note(r, test::relative_error<double>(dx, m.at("dx"), mine, {0, hidden}));
    // Each rank's rows of the head-split projections, columns of o_proj, and the whole of the
    // replicated ones.
    const shard::interval qr = a.q_proj().slice(), kvr = a.kv_b_proj().slice(),
                          oc = a.o_proj().slice();
    const auto in_of = [&](const std::string& t) { return m.at(t).cols; };
    err.note(r, test::relative_error<double>(span_of(a.q_proj().weight_grad()),
                                             m.at("grad." + q_name + ".weight"), {qr.begin, qr.end},
                                             {0, in_of(q_name + ".weight")}));
    err.note(r, test::relative_error<double>(span_of(a.kv_b_proj().weight_grad()),
                                             m.at("grad.kv_b_proj.weight"), {kvr.begin, kvr.end},
                                             {0, o.kv_lora_rank}));
    err.note(r, test::relative_error<double>(span_of(a.o_proj().weight_grad()),
                                             m.at("grad.o_proj.weight"), {0, hidden},
                                             {oc.begin, oc.end}));
    const index_t latent = o.kv_lora_rank + o.qk_rope_head_dim;
    err.note(r, test::relative_error<double>(span_of(a.kv_a_proj().weight_grad()),
                                             m.at("grad.kv_a_proj_with_mqa.weight"), {0, latent},
                                             {0, hidden}));
    err.note(r, test::relative_error<double>(a.kv_a_norm_grad(), m.at("grad.kv_a_layernorm.weight"),
                                             {0, o.kv_lora_rank}, {0, 1}));
    if (lora) {
      err.note(r, test::relative_error<double>(span_of(a.q_a_proj()->weight_grad()),
                                               m.at("grad.q_a_proj.weight"), {0, o.q_lora_rank},
                                               {0, hidden}));
      err.note(r, test::relative_error<double>(a.q_a_norm_grad(), m.at("grad.q_a_layernorm.weight"),
                                               {0, o.q_lora_rank}, {0, 1}));
      err.note(r,
               test::relative_error<double>(a.q_a_proj()->bias_grad(), m.at("grad.q_a_proj.bias"),
                                            {0, o.q_lora_rank}, {0, 1}));
      err.note(r, test::relative_error<double>(a.kv_a_proj().bias_grad(),
                                               m.at("grad.kv_a_proj_with_mqa.bias"), {0, latent},
                                               {0, 1}));
      err.note(r, test::relative_error<double>(a.o_proj().bias_grad(), m.at("grad.o_proj.bias"),
                                               {0, hidden}, {0, 1}));
    }
  });
  CHECK(err.max() < 1e-12);
  if (tp == 1) return;
  const index_t q_in = lora ? o.q_lora_rank : hidden, latents = q_in + o.kv_lora_rank;
  const std::int64_t act = 8 * n * (hidden + latents + o.qk_rope_head_dim);
  for (const comm::stats& s : stats) {
    if constexpr (Mode == layer::block_mode::tensor) {
      // Forward: o_proj's all-reduce of [T, hidden]. Backward: q_b / q_proj's dX ([T, q_lora]
      // or [T, hidden]), kv_b's dX ([T, kv_lora]) and the shared k_rope's gradient ([T, rope]).
      CHECK(s[comm::kind::all_reduce] == comm::counter{4, act});
      CHECK(s.total_bytes() == act);
    } else {
      // Each becomes an all-gather and a reduce-scatter of the same tensor: forward gathers the
      // q and kv latents and k_rope and reduce-scatters y; backward gathers dy and
      // reduce-scatters the three gradients. The replicated parameters' gradients (the rank's
      // tokens' share) are all-reduced: q_a_proj (+ bias) and its norm, kv_a_proj (+ bias) and
      // its norm.
      CHECK(s[comm::kind::all_gather] == comm::counter{4, act});
      CHECK(s[comm::kind::reduce_scatter] == comm::counter{4, act});
      const index_t kv_a = latent_params(o, w.kv_a_bias.size()),
                    q_a = lora ? o.q_lora_rank * (hidden + 1) +
                                     static_cast<index_t>(w.q_a_bias.size())
                               : 0;
      CHECK(s[comm::kind::all_reduce] ==
            comm::counter{(lora ? 2 + !w.q_a_bias.empty() : 0) + 2 + !w.kv_a_bias.empty(),
                          8 * (kv_a + q_a)});
      CHECK(s.total_bytes() == 2 * act + 8 * (kv_a + q_a));
    }
  }
}

}  // namespace

TEST_CASE("MLA attention equals transformers' DeepseekV3Attention in float64 at every tp") {
  const std::vector<mla_case> cases = fixture();
  REQUIRE(cases.size() == 2);
  for (const mla_case& m : cases) {
    const std::string name = m.config.at("name");
    CAPTURE(name);
    for (int tp = 1; tp <= options_of(m).n_heads; ++tp) {
      CAPTURE(tp);
      check_reference<layer::block_mode::tensor>(m, tp);
    }
  }
}

TEST_CASE("MLA attention under sequence parallelism equals transformers' on every rank's tokens") {
  // The rank's balanced block of the tokens (uneven: the fixture's T over tp 1–5), the latents
  // gathered rather than x.
  const std::vector<mla_case> cases = fixture();
  for (const mla_case& m : cases) {
    const std::string name = m.config.at("name");
    CAPTURE(name);
    CAPTURE(m.at("x").rows);
    for (int tp = 1; tp <= options_of(m).n_heads; ++tp) {
      CAPTURE(tp);
      check_reference<layer::block_mode::sequence>(m, tp);
    }
  }
}

TEST_CASE("MLA attention refuses a tp above its heads and weights of the wrong shape, saying so") {
  const std::vector<mla_case> cases = fixture();
  const mla_case& m = cases.at(1);  // 5 heads, a full-rank q_proj
  const layer::mla_options o = options_of(m);
  host::gemm_engine engine;
  CHECK(test::error_of(6,
                       [&](host::communicator& c) {
                         layer::mla_attention<host::backend, double> a(engine, c, weights_of(m), o);
                       }) ==
        "self_attn: 5 heads cannot be split over tp = 6; MLA is split in whole heads, so tp "
        "must be between 1 and n_heads = 5");
  layer::mla_weights<double> w = weights_of(m);
  w.kv_a_norm = w.kv_a_norm.first(3);
  CHECK(test::error_of(2, [&](host::communicator& c) {
          layer::mla_attention<host::backend, double> a(engine, c, w, o);
        }) == "self_attn.kv_a_layernorm: the norm weight has 3 elements, not 8");
  layer::mla_options odd = o;
  odd.qk_rope_head_dim = 5;
  CHECK(test::error_of(1, [&](host::communicator& c) {
          layer::mla_attention<host::backend, double> a(engine, c, weights_of(m), odd);
        }).find("an even qk_rope_head_dim ≥ 2") != std::string::npos);
}

TEST_CASE("the reference tells RoPE's layouts apart: interleaved pairs are not rotate_half's") {
  // A check that the equality above can fail: the DeepSeek-V3 case computed with rotate_half
  // pairs is far from transformers' output.
  const std::vector<mla_case> cases = fixture();
  const mla_case& m = cases.at(0);
  layer::mla_options o = options_of(m);
  REQUIRE(o.rope_interleave);
  o.rope_interleave = false;
  const test::dense& x = m.at("x");
  host::gemm_engine engine;
  host::run(1, [&](host::communicator& c) {
    layer::mla_attention<host::backend, double> a(engine, c, weights_of(m), o);
    std::vector<double> y(x.v.size());
    a.forward(make_matrix<const double>(x.v.data(), x.rows, x.cols),
              make_matrix(y.data(), x.rows, x.cols));
    CHECK(test::relative_error<double>(y, m.at("y"), {0, x.rows}, {0, x.cols}) > 1e-3);
  });
}

TEST_CASE("MLA decode over its latent cache equals the forward of each whole prefix") {
  // Two sequences packed in three steps of uneven runs (3 + 2, 1 + 3, 2 + 0 tokens) at every tp,
  // in either block mode (under SP each rank passes its block of the step's rows): each row
  // equals the tensor-mode forward() on its whole sequence; the cache holds kv_lora + rope
  // numbers a token and no values.
  host::gemm_engine engine;
  for (const mla_case& m : fixture()) {
    const std::string name = m.config.at("name");
    CAPTURE(name);
    const layer::mla_options o = options_of(m);
    const layer::mla_weights<double> w = weights_of(m);
    const test::dense &a_in = m.at("x"), &b_in = m.at("g");  // two sequences of 6 tokens or more
    REQUIRE(a_in.rows >= 6);
    const index_t hidden = o.hidden;
    for (int tp = 1; tp <= o.n_heads; ++tp) {
      CAPTURE(tp);
      const auto run = [&]<layer::block_mode Mode>() {
        CAPTURE(Mode == layer::block_mode::sequence);
        test::worst_error err(tp);
        host::run(tp, [&](host::communicator& c) {
          layer::mla_attention<host::backend, double> whole_layer(engine, c, w, o);
          layer::mla_attention<host::backend, double, Mode> attn(engine, c, w, o);
          const auto whole = [&](const test::dense& x) {
            std::vector<double> y(x.v.size());
            whole_layer.forward(make_matrix<const double>(x.v.data(), x.rows, hidden),
                                make_matrix(y.data(), x.rows, hidden));
            test::dense d(x.rows, hidden);
            d.v = y;
            return d;
          };
          const test::dense ya = whole(a_in), yb = whole(b_in);
          layer::kv_cache<double> cache = attn.make_cache(2, 8);
          CHECK(cache.bytes() == 2 * 8 * (o.kv_lora_rank + o.qk_rope_head_dim) * 8);
          index_t at_a = 0, at_b = 0;
          for (const auto& [na, nb] : {std::pair<index_t, index_t>{3, 2}, {1, 3}, {2, 0}}) {
            std::vector<double> x;
            for (index_t t = 0; t < na; ++t)
              x.insert(x.end(), a_in.v.begin() + (at_a + t) * hidden,
                       a_in.v.begin() + (at_a + t + 1) * hidden);
            for (index_t t = 0; t < nb; ++t)
              x.insert(x.end(), b_in.v.begin() + (at_b + t) * hidden,
                       b_in.v.begin() + (at_b + t + 1) * hidden);
            const shard::interval mine = rows_of<Mode>(na + nb, tp, c.rank());
            std::vector<double> y(static_cast<std::size_t>(mine.size() * hidden));
            const std::vector<layer::segment> segs{{0, na}, {1, nb}};
            attn.forward_cached(
                make_matrix<const double>(x.data() + mine.begin * hidden, mine.size(), hidden),
                make_matrix(y.data(), mine.size(), hidden), na + nb, cache, segs);
            // Each of the rank's rows against its sequence's row.
            for (index_t p = mine.begin; p < mine.end; ++p) {
              const std::span<const double> row = std::span<const double>(y).subspan(
                  static_cast<std::size_t>((p - mine.begin) * hidden),
                  static_cast<std::size_t>(hidden));
              const index_t at = p < na ? at_a + p : at_b + p - na;
              err.note(c.rank(), test::relative_error<double>(row, p < na ? ya : yb, {at, at + 1},
                                                              {0, hidden}));
            }
            at_a += na;
            at_b += nb;
          }
          CHECK(cache.length(0) == 6);
          CHECK(cache.length(1) == 5);
          if constexpr (Mode == layer::block_mode::tensor) {
            // A cache of another layout, and a step past the capacity, are sentences.
            layer::kv_cache<double> heads(1, 4, 8);
            std::vector<double> y(static_cast<std::size_t>(hidden));
            const std::vector<layer::segment> one{{0, 1}};
            CHECK(test::error_of([&] {
                    attn.forward_cached(make_matrix<const double>(a_in.v.data(), 1, hidden),
                                        make_matrix(y.data(), 1, hidden), heads, one);
                  }).find("but this layer caches its latent") != std::string::npos);
            const std::vector<layer::segment> past{{1, 4}};
            std::vector<double> y4(static_cast<std::size_t>(4 * hidden));
            CHECK(test::error_of([&] {
                    attn.forward_cached(make_matrix<const double>(a_in.v.data(), 4, hidden),
                                        make_matrix(y4.data(), 4, hidden), cache, past);
                  }) ==
                  "self_attn: sequence 1 holds 5 tokens and 4 more would pass the cache's "
                  "capacity of 8 tokens per sequence");
          }
        });
        CHECK(err.max() < 1e-12);
      };
      run.template operator()<layer::block_mode::tensor>();
      run.template operator()<layer::block_mode::sequence>();
    }
  }
}

TEST_CASE("plan resolution places MLA's tensors as the layer holds them, at every tp") {
  // The deepseek_v3 preset's plan (transformers 5.25's MLA rules) resolved against the fixture's
  // dims: q_b_proj / q_proj and kv_b_proj split on rows, o_proj on columns, in the layer's whole
  // heads on every rank; the latent projections replicated.
  host::gemm_engine engine;
  for (const mla_case& m : fixture()) {
    const std::string name = m.config.at("name");
    CAPTURE(name);
    const layer::mla_options o = options_of(m);
    nlohmann::json cfg = {{"model_type", "deepseek_v3"},
                          {"hidden_size", o.hidden},
                          {"num_attention_heads", o.n_heads},
                          {"num_key_value_heads", o.n_heads},
                          {"num_hidden_layers", 1},
                          {"first_k_dense_replace", 1},
                          {"intermediate_size", 16},
                          {"kv_lora_rank", o.kv_lora_rank},
                          {"qk_nope_head_dim", o.qk_nope_head_dim},
                          {"qk_rope_head_dim", o.qk_rope_head_dim},
                          {"v_head_dim", o.v_head_dim},
                          {"vocab_size", 50}};
    cfg["q_lora_rank"] = o.q_lora_rank > 0 ? nlohmann::json(o.q_lora_rank) : nlohmann::json();
    const plan::model_config c = plan::parse_model_config(cfg, "config.json");
    const plan::preset* p = plan::find_preset("deepseek_v3");
    REQUIRE(p != nullptr);
    plan::plan_sources src;
    src.preset = p;
    const std::string attn = "model.layers.0.self_attn.";
    const std::string q = o.q_lora_rank > 0 ? "q_b_proj" : "q_proj";
    for (int tp = 1; tp <= o.n_heads; ++tp) {
      CAPTURE(tp);
      const plan::resolution r =
          plan::resolve(c, p->tensors(c), src, plan::registry::builtin(), {.tp = tp});
      REQUIRE(r.usable());
      const auto placed = [&](const std::string& t) -> const shard::placement& {
        for (const plan::resolved_tensor& x : r.tensors)
          if (x.tensor.name == attn + t + ".weight") return x.placement;
        FAIL("no tensor ", t);
        return r.tensors.front().placement;
      };
      CHECK(placed("kv_a_proj_with_mqa").is_replicated());
      host::run(tp, [&](host::communicator& comm) {
        layer::mla_attention<host::backend, double> a(engine, comm, weights_of(m), o);
        CHECK(placed(q).partition == a.q_proj().partition());
        CHECK(placed("kv_b_proj").partition == a.kv_b_proj().partition());
        CHECK(placed("o_proj").partition == a.o_proj().partition());
        CHECK(placed(q).dim == 0);
        CHECK(placed("o_proj").dim == 1);
      });
    }
  }
}
