// Whole causal LMs from their checkpoints, against the two oracles: transformers' own float64
// logits and greedy continuation of the tiny models it wrote — hf-tiny (shared fixtures: Llama
// 6/3 heads, Mixtral 4/2 heads with 6 experts) and hf-ref (tests/model/make_reference.py: Qwen2
// with q/k/v biases and tied embeddings, Phi-3 with fused qkv_proj and gate_up_proj, Mistral, a
// Llama with llama3 RoPE, every bias and one KV head, Qwen3 with per-head q/k norms, and a
// Qwen3-MoE with a dense layer between two MoE layers, and sliding windows of 3: a Mistral's on
// every layer and a Qwen2's on its second; a Qwen2-MoE with its gated shared expert; two
// DeepSeek-V3s with MLA, grouped sigmoid routing and shared experts, DeepSeek-V2s with softmax
// routing (grouped and greedy), and YaRN
// RoPE on one of them and on a Llama) — at every tp their heads allow, in TP and TP+SP, with expert
// parallelism; and the model at tp = 1, whose gradients are checked by central differences of its
// loss, so the sharded gradients can be compared with them. Each rank reads exactly its shard's
// bytes, and those placements are the ones plan::resolve gives the checkpoint's tensors.

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>

#include "../harness.hpp"
#include "model_harness.hpp"
#include "tpx/io/writer.hpp"
#include "tpx/model/generate.hpp"
#include "tpx/model/plan.hpp"
#include "tpx/model/synthetic.hpp"
#include "tpx/shard/gqa.hpp"

using namespace tpx;
namespace fs = std::filesystem;

namespace {

struct fixture {
  const char* name;      // under tests/model/fixtures
  std::vector<int> tps;  // every tp the heads allow, up to 8
  bool moe = false;      // 6 experts: ep 2 and 3 divide them
  fs::path dir() const { return test::model_fixture(name); }
};
const fixture llama{"hf-tiny/llama", {1, 2, 3, 4, 5, 6}};      // 6 query / 3 KV heads
const fixture mixtral{"hf-tiny/mixtral", {1, 2, 3, 4}, true};  // 4 query / 2 KV heads, 6 experts
// The any-tp GQA placement (shard::gqa): at tp 3 a 4 / 2 model's query heads go 2 | 1 | 1, so
// KV head 0 sits on rank 0 alone and KV head 1 on ranks 1 and 2; at tp 4 and 5 a 6 / 3 model's
// ranks whose query heads straddle a group hold two KV heads, each shared with a neighbour.
const std::vector<fixture> all_models{llama,
                                      mixtral,
                                      {"hf-ref/qwen2", {1, 2, 3, 4}},
                                      {"hf-ref/phi3", {1, 2, 3, 4}},
                                      {"hf-ref/mistral", {1, 2, 3, 4}},
                                      {"hf-ref/llama3", {1, 2, 3, 4}},  // 4 query / 1 KV head
                                      {"hf-ref/qwen3", {1, 2, 3, 4}},
                                      {"hf-ref/qwen3_moe", {1, 2, 3, 4}, true},
                                      // sliding windows of 3 (every layer; Qwen2's second)
                                      {"hf-ref/mistral_window", {1, 2, 3, 4}},
                                      {"hf-ref/qwen2_window", {1, 2, 3, 4}},
                                      // a shared expert gated by σ(x · g), a dense layer between
                                      {"hf-ref/qwen2_moe", {1, 2, 3, 4}, true},
                                      // MLA, dense first layer, grouped sigmoid routing, shared
                                      // experts (q LoRA; full-rank q with biases)
                                      {"hf-ref/deepseek_v3", {1, 2, 3, 4}, true},
                                      {"hf-ref/deepseek_v3_q_full", {1, 2, 3, 4}, true},
                                      // YaRN RoPE: MLA's softmax mscale; a GQA model's cos / sin
                                      {"hf-ref/deepseek_v3_yarn", {1, 2, 3, 4}, true},
                                      // softmax routing: groups scored by their best, greedy;
                                      // RoPE on interleaved pairs, no selection bias
                                      {"hf-ref/deepseek_v2", {1, 2, 3, 4}, true},
                                      {"hf-ref/deepseek_v2_lite", {1, 2, 3, 4}, true},
                                      {"hf-ref/llama_yarn", {1, 2, 3, 4}}};

bool ep_applies(const fixture& f, int ep) {
  return ep == 1 || (f.moe && 6 % ep == 0);
}

struct prompt {
  std::vector<std::int64_t> ids, greedy;
};
prompt read_prompt(const fs::path& dir) {
  std::ifstream in(dir / "prompt.json");
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(text.str());
  return {j.at("ids").get<std::vector<std::int64_t>>(),
          j.at("greedy").get<std::vector<std::int64_t>>()};
}

std::vector<double> reference_logits(const fs::path& dir) {
  return io::checkpoint(dir / "reference.safetensors").read<double>("logits");
}

/// The next token of each position; the last one ignored.
std::vector<std::int64_t> shifted(const std::vector<std::int64_t>& ids) {
  std::vector<std::int64_t> t(ids.begin() + 1, ids.end());
  t.push_back(-100);
  return t;
}

/// Writes `to` (a safetensors file) from the checkpoint `from` as float32, after `edit(name,
/// values)` has seen each tensor; a tensor for which it returns false is left out.
void rewrite_checkpoint(const fs::path& from, const fs::path& to,
                        const std::function<bool(const std::string&, std::vector<float>&)>& edit) {
  const io::checkpoint ck(from);
  std::vector<std::vector<float>> data;
  std::vector<io::tensor_bytes> tensors;
  for (const std::string& n : ck.names()) data.push_back(ck.read<float>(n));
  std::size_t k = 0;
  for (const std::string& n : ck.names()) {
    std::vector<float>& v = data[k++];
    if (edit(n, v)) tensors.push_back(io::as_tensor_bytes<float>(n, ck.info(n).shape, v));
  }
  io::save_safetensors(to, tensors);
}

/// A copy of hf-tiny's Llama (checkpoint, prompt) read as a Mistral with sliding window `window`
/// on every layer: the same tensors.
void windowed_llama(const fs::path& to, const nlohmann::json& window) {
  const fs::path src = test::model_fixture("hf-tiny/llama");
  std::ifstream in(src / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["model_type"] = "mistral";
  j["sliding_window"] = window;
  std::ofstream(to / "config.json") << j.dump();
  for (const char* f : {"model.safetensors", "prompt.json"})
    fs::copy_file(src / f, to / f, fs::copy_options::overwrite_existing);
}

/// A copy of `from` whose checkpoint tensor `name` has `delta` added at flat index `at`.
void perturbed_copy(const fs::path& from, const fs::path& to, const std::string& name, index_t at,
                    double delta) {
  fs::copy_file(from / "config.json", to / "config.json", fs::copy_options::overwrite_existing);
  rewrite_checkpoint(from, to / "model.safetensors",
                     [&](const std::string& n, std::vector<float>& v) {
                       if (n == name) v[static_cast<std::size_t>(at)] += static_cast<float>(delta);
                       return true;
                     });
}

}  // namespace

TEST_CASE(
    "transformers' models give its float64 logits at every tp, TP, TP+SP and EP, in one forward "
    "and through cached decode steps") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const prompt p = read_prompt(dir);
    const std::vector<double> want = reference_logits(dir);
    for (const int tp : f.tps)
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (!ep_applies(f, ep)) continue;
          CAPTURE(f.name);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const test::model_run r =
              test::run_model(dir, p.ids, {}, {.tp = tp, .sp = sp, .ep = ep, .backward = false});
          CHECK(r.ranks_agree);
          CHECK(test::relative(r.logits, want) <= 1e-12);
          const test::model_run f32 = test::run_model<float>(
              dir, p.ids, {}, {.tp = tp, .sp = sp, .ep = ep, .backward = false});
          CHECK(test::relative(f32.logits, want) <= 1e-5);
          // A prefill of 3 or 5 tokens (longer than the windowed fixtures' window of 3: the
          // cache evicts within the prefill), then one token per step.
          for (const index_t prefill : {3, 5}) {
            CAPTURE(prefill);
            const test::model_run steps = test::run_model(
                dir, p.ids, {},
                {.tp = tp, .sp = sp, .ep = ep, .backward = false, .prefill = prefill});
            CHECK(steps.ranks_agree);
            CHECK(test::relative(steps.logits, r.logits) <= 1e-12);
            CHECK(test::relative(steps.logits, want) <= 1e-12);
          }
        }
  }
}

TEST_CASE("a cache holds only the rank's KV heads; overflow and backward are refused") {
  const fs::path dir = llama.dir();  // 6 query / 3 KV heads of dim 4 (hidden 24), 2 layers
  const model::config c = model::read_config(dir);
  const io::checkpoint ck(dir);
  const index_t d = c.dims.head_dim, layers = c.dims.num_layers;
  for (const int tp : {1, 2, 3, 6}) {
    CAPTURE(tp);
    host::run(tp, [&](host::communicator& comm) {
      host::gemm_engine engine;
      model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(engine, comm, c, ck);
      auto kv = lm.make_cache(2, 5);
      // 2 · layers · kv_r · head_dim · capacity · sequences · sizeof(double)
      const index_t kv_r =
          shard::gqa{c.dims.n_heads, c.dims.n_kv_heads, d}.kv_heads(tp, comm.rank()).size();
      CHECK(kv.bytes() == 2 * layers * kv_r * d * 5 * 2 * 8);
      const std::vector<std::int64_t> ids{1, 2, 3, 4};
      lm.forward_cached(ids, kv, 1);
      CHECK(kv.length(1) == 4);
      CHECK(kv.length(0) == 0);
      const std::vector<std::int64_t> two{5, 6};
      CHECK(test::error_of([&] { lm.forward_cached(two, kv, 1); })
                .find("sequence 1 holds 4 tokens and 2 more would pass the cache's capacity of 5 "
                      "tokens per sequence") != std::string::npos);
      CHECK(test::error_of([&] {
              lm.loss(ids);
              lm.backward();
            }).find("forward_cached (inference) keeps nothing for backward") != std::string::npos);
      CHECK(test::error_of([&] { lm.forward_cached(two, kv, 2); }) ==
            "kv_cache: sequence 2 is outside the cache's 2");
    });
  }
  // Under a sliding window of 3 the cache holds the last 3 positions of each sequence only.
  const fs::path wd = test::model_fixture("hf-ref/mistral_window");
  const model::config wc = model::read_config(wd);
  const io::checkpoint wck(wd);
  host::run(2, [&](host::communicator& comm) {
    host::gemm_engine engine;
    model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(engine, comm, wc, wck);
    const auto kv = lm.make_cache(2, 10);
    const index_t kv_r = wc.dims.n_kv_heads / 2;
    CHECK(kv.bytes() == 2 * wc.dims.num_layers * kv_r * wc.dims.head_dim * 3 * 2 * 8);
  });
}

TEST_CASE("a batch of prompts of different lengths gives each prompt's tokens alone") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const model::config c = model::read_config(dir);
    const io::checkpoint ck(dir);
    // Prompts of 1, 5 and 11 tokens (ids below every fixture's vocabulary).
    const std::vector<std::vector<std::int64_t>> prompts{
        {7}, {5, 1, 33, 8, 60}, {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46}};
    for (const int tp : f.tps)
      for (const bool sp : {false, true}) {
        CAPTURE(f.name);
        CAPTURE(tp);
        CAPTURE(sp);
        const auto body = [&]<layer::block_mode Mode>(host::communicator& comm,
                                                      const model::generation_options& o) {
          host::gemm_engine engine;
          model::causal_lm<Mode, host::backend, double> lm(engine, comm, c, ck);
          std::vector<std::vector<std::int64_t>> alone;
          for (const auto& p : prompts) alone.push_back(model::generate(lm, {p}, o).at(0));
          return std::pair{model::generate(lm, prompts, o), alone};
        };
        for (const model::generation_options& o :
             {model::generation_options{.max_new_tokens = 6},
              model::generation_options{.max_new_tokens = 5,
              .sample = {.temperature = 0.8, .top_k = 20, .top_p = 0.9, .seed = 11}}}) {
          std::vector<std::pair<std::vector<std::vector<std::int64_t>>,
                                std::vector<std::vector<std::int64_t>>>>
              got(static_cast<std::size_t>(tp));
          host::run(tp, [&](host::communicator& comm) {
            got[static_cast<std::size_t>(comm.rank())] =
                sp ? body.template operator()<layer::block_mode::sequence>(comm, o)
                   : body.template operator()<layer::block_mode::tensor>(comm, o);
          });
          const auto& [batch, alone] = got[0];
          CHECK(batch.size() == 3);
          for (const auto& b : batch) CHECK(static_cast<index_t>(b.size()) == o.max_new_tokens);
          if (o.sample.temperature == 0) CHECK(batch == alone);  // greedy: a batch changes nothing
          // Sampling: the first prompt's stream is the same alone and in a batch.
          CHECK(batch[0] == alone[0]);
          for (const auto& g : got) CHECK(g == got[0]);  // every rank chose the same tokens
        }
      }
  }
}

TEST_CASE("sampling: greedy at temperature 0, top-k 1 is greedy, a seed repeats, EOS ends") {
  const std::vector<double> logits{0.5, 2.0, 2.0, -1.0, 1.5};
  model::uniform_stream u(3);
  CHECK(model::choose<double>(logits, {}, u) == 1);  // ties go to the lower id
  CHECK(model::choose<double>(logits, {.temperature = 1.0, .top_k = 1}, u) == 1);
  // top_p small enough keeps only the most likely id.
  CHECK(model::choose<double>(logits, {.temperature = 1.0, .top_p = 0.01}, u) == 1);
  // Draws follow softmax(logits / temperature): over many draws, each id's share is close to
  // its probability.
  std::vector<int> counts(logits.size());
  model::uniform_stream s(42);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i)
    ++counts[static_cast<std::size_t>(model::choose<double>(logits, {.temperature = 2.0}, s))];
  double z = 0;
  for (const double l : logits) z += std::exp(l / 2.0);
  for (std::size_t i = 0; i < logits.size(); ++i)
    CHECK(std::abs(counts[i] / double(draws) - std::exp(logits[i] / 2.0) / z) < 0.015);
  // The same seed gives the same draws.
  model::uniform_stream a(9), b(9);
  for (int i = 0; i < 10; ++i) CHECK(a.next() == b.next());
  CHECK(test::error_of([] { model::expect_valid({.temperature = -1}); }) ==
        "sampling: temperature must be a finite number ≥ 0 (0: greedy), got -1");
  CHECK(test::error_of([] { model::expect_valid({.top_p = 0}); }) ==
        "sampling: top_p must be in (0, 1], got 0");

  // EOS: with the fixture's greedy continuation, make its third token the end of sequence.
  const fs::path dir = llama.dir();
  const prompt p = read_prompt(dir);
  const model::config c = model::read_config(dir);
  const io::checkpoint ck(dir);
  host::run(1, [&](host::communicator& comm) {
    host::gemm_engine engine;
    model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(engine, comm, c, ck);
    const auto got = model::generate(lm, {p.ids, {4}}, {.max_new_tokens = 6, .eos = {p.greedy[2]}});
    CHECK(got[0] == std::vector<std::int64_t>(p.greedy.begin(), p.greedy.begin() + 3));
    CHECK(test::error_of([&] {
            model::generate(lm, {p.ids, {}}, {.max_new_tokens = 2});
          }) == "generate: prompt 1 is empty");
    CHECK(test::error_of([&] {
            model::generate(lm, {{5, 97}}, {.max_new_tokens = 2});
          }) == "generate: token 1 of prompt 0 has id 97, outside the vocabulary [0, 97)");
  });
}

TEST_CASE("sliding-window attention: each query sees the last `window` positions") {
  // hf-tiny's Llama checkpoint read as a Mistral with a sliding window (the same tensors).
  const fs::path src = llama.dir();
  const prompt p = read_prompt(src);  // 7 tokens
  const auto windowed = [](const test::temp_dir& d, const nlohmann::json& window) {
    windowed_llama(d.path, window);
  };
  const test::model_run full = test::run_model(src, p.ids, {}, {.tp = 1, .backward = false});
  const index_t vocab = 97;
  // A window as long as the prompt changes nothing.
  const test::temp_dir wide;
  windowed(wide, 7);
  CHECK(test::relative(test::run_model(wide.path, p.ids, {}, {.tp = 1, .backward = false}).logits,
                       full.logits) <= 1e-15);
  // A window of 1: every token attends to itself alone, so position t's logits are those of
  // token t alone at position 0.
  const test::temp_dir one;
  windowed(one, 1);
  const test::model_run self = test::run_model(one.path, p.ids, {}, {.tp = 1, .backward = false});
  for (std::size_t t = 0; t < p.ids.size(); ++t) {
    CAPTURE(t);
    const test::model_run alone =
        test::run_model(src, std::span(&p.ids[t], 1), {}, {.tp = 1, .backward = false});
    const std::vector<double> row(
        self.logits.begin() + static_cast<std::ptrdiff_t>(t * vocab),
        self.logits.begin() + static_cast<std::ptrdiff_t>((t + 1) * vocab));
    CHECK(test::relative(row, alone.logits) <= 1e-12);
  }
  // A window of 3: the first three positions are unchanged, the later ones are not. Cached
  // decode steps, every tp, TP and TP+SP, give the same logits as the whole sequence; so do the
  // gradients' shards (backward runs the same mask). (hf-ref/mistral_window and qwen2_window
  // check windows against transformers.)
  const test::temp_dir three;
  windowed(three, 3);
  const test::model_run w3 = test::run_model(three.path, p.ids, {}, {.tp = 1, .backward = false});
  const auto first = [&](const std::vector<double>& v, std::size_t rows) {
    return std::vector<double>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rows * vocab));
  };
  CHECK(test::relative(first(w3.logits, 3), first(full.logits, 3)) <= 1e-15);
  CHECK(test::relative(w3.logits, full.logits) > 1e-6);
  const std::vector<std::int64_t> targets = shifted(p.ids);
  const test::model_run base = test::run_model(three.path, p.ids, targets, {.tp = 1});
  for (const int tp : llama.tps)
    for (const bool sp : {false, true}) {
      CAPTURE(tp);
      CAPTURE(sp);
      const test::model_run steps = test::run_model(
          three.path, p.ids, {}, {.tp = tp, .sp = sp, .backward = false, .prefill = 2});
      CHECK(test::relative(steps.logits, w3.logits) <= 1e-12);
      const test::model_run r = test::run_model(three.path, p.ids, targets, {.tp = tp, .sp = sp});
      for (const auto& [name, g] : base.grads) {
        CAPTURE(name);
        CHECK(test::relative(r.grads.at(name), g) <= 1e-12);
      }
    }
}

TEST_CASE("greedy continuations are transformers' at every tp") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const prompt p = read_prompt(dir);
    const model::config c = model::read_config(dir);
    const io::checkpoint ck(dir);
    for (const int tp : f.tps) {
      CAPTURE(f.name);
      CAPTURE(tp);
      std::vector<std::vector<std::int64_t>> got(static_cast<std::size_t>(tp));
      host::run(tp, [&](host::communicator& comm) {
        host::gemm_engine engine;
        model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(engine, comm, c, ck);
        got[static_cast<std::size_t>(comm.rank())] =
            model::generate(lm, {p.ids}, {.max_new_tokens = static_cast<index_t>(p.greedy.size())})
                .at(0);
      });
      for (const auto& g : got) CHECK(g == p.greedy);
    }
  }
}

TEST_CASE("every rank reads exactly its shard's bytes and holds 1/tp of each split tensor") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const prompt p = read_prompt(dir);
    const std::uint64_t file_bytes = [&] {
      const io::checkpoint ck(dir);
      std::uint64_t n = 0;
      for (const std::string& t : ck.names()) n += ck.info(t).bytes();
      return n;
    }();
    for (const int tp : f.tps) {
      CAPTURE(f.name);
      CAPTURE(tp);
      const test::model_run r = test::run_model(dir, p.ids, {}, {.tp = tp, .backward = false});
      std::uint64_t total = 0;
      for (int rank = 0; rank < tp; ++rank) {
        CHECK(r.bytes_read[static_cast<std::size_t>(rank)] ==
              r.bytes_expected[static_cast<std::size_t>(rank)]);
        total += r.bytes_read[static_cast<std::size_t>(rank)];
      }
      if (tp == 1) CHECK(total == file_bytes);
      // Only norms and the router are replicated (and KV heads past n_kv): far less than tp × file.
      CHECK(total < file_bytes + file_bytes / 2);
    }
  }
}

TEST_CASE("the model's placements are the ones plan::resolve gives the checkpoint's tensors") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const model::config c = model::read_config(dir);
    const io::checkpoint ck(dir);
    const model::plan_inputs inputs(io::read_json_file(dir / "config.json", "config"),
                                    (dir / "config.json").string(), "", "");
    const std::vector<plan::tensor_decl> tensors = inputs.tensors(ck);
    for (const int tp : f.tps)
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (!ep_applies(f, ep)) continue;
          CAPTURE(f.name);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const plan::resolution res = inputs.resolve(tensors, {.tp = tp, .sp = sp, .ep = ep});
          std::map<std::string, shard::placement> planned;
          for (const plan::resolved_tensor& t : res.tensors)
            planned.emplace(t.tensor.name, t.placement);
          host::run(tp, [&](host::communicator& comm) {
            host::gemm_engine engine;
            const auto body = [&]<layer::block_mode M>() {
              model::causal_lm<M, host::backend, double> lm(engine, comm, c, ck, {.ep = ep});
              if (comm.rank() != 0) return;
              const auto held = lm.checkpoint_placements(ck);
              CHECK(held.size() == ck.names().size());
              for (const auto& [name, p] : held) {  // the embedding too: transformers' plan
                CAPTURE(name);
                const shard::placement& q = planned.at(name);
                for (int r = 0; r < tp; ++r) CHECK(p.of(r) == q.of(r));
              }
            };
            if (sp)
              body.template operator()<layer::block_mode::sequence>();
            else
              body.template operator()<layer::block_mode::tensor>();
          });
        }
  }
}

/// Checks the tp = 1 gradient of one entry of each probed checkpoint tensor against a central
/// difference of the loss (the checkpoint rewritten with the entry moved by ±h).
void check_gradients(const fs::path& dir,
                     const std::vector<std::pair<std::string, index_t>>& probes) {
  const prompt p = read_prompt(dir);
  const std::vector<std::int64_t> targets = shifted(p.ids);
  const test::model_run base = test::run_model(dir, p.ids, targets, {});
  const model::config c = model::read_config(dir);
  const io::checkpoint ck(dir);
  const model::layout lay = model::checkpoint_layout(c, ck);
  test::temp_dir plus, minus;
  for (const auto& [name, at] : probes) {
    CAPTURE(name);
    // Where the entry sits in the tensor the model holds.
    double analytic = NAN;
    lay.for_each([&](const io::assembled_tensor& t) {
      for (const io::tensor_part& part : t.parts) {
        if (part.name != name) continue;
        const std::vector<index_t>& s = ck.info(name).shape;
        std::vector<index_t> idx(t.shape.size(), 0);
        index_t rest = at;
        for (std::size_t d = s.size(); d-- > 0;) {
          idx[t.shape.size() - s.size() + d] = rest % s[d];
          rest /= s[d];
        }
        index_t flat = 0;
        for (std::size_t d = 0; d < t.shape.size(); ++d)
          flat = flat * t.shape[d] + part.origin[d] + idx[d];
        analytic = base.grads.at(t.name)[static_cast<std::size_t>(flat)];
      }
    });
    const double h = 1e-3;
    perturbed_copy(dir, plus.path, name, at, h);
    perturbed_copy(dir, minus.path, name, at, -h);
    const double lp = test::run_model(plus.path, p.ids, targets, {.backward = false}).loss;
    const double lm = test::run_model(minus.path, p.ids, targets, {.backward = false}).loss;
    // The perturbation is exact in float32 storage only to rounding; measure the step taken.
    const io::checkpoint cp(plus.path), cm(minus.path);
    const double step = static_cast<double>(cp.read<float>(name)[static_cast<std::size_t>(at)]) -
                        static_cast<double>(cm.read<float>(name)[static_cast<std::size_t>(at)]);
    const double numeric = (lp - lm) / step;
    CHECK(analytic != 0);
    CHECK(std::abs(numeric - analytic) <= 1e-7 + 1e-4 * std::abs(analytic));
  }
}

TEST_CASE("gradients at tp = 1 match central differences of the loss") {
  SUBCASE("a sliding window of 3 (hf-tiny's Llama read as a Mistral)") {
    const test::temp_dir d;
    windowed_llama(d.path, 3);
    check_gradients(d.path, {{"model.layers.0.self_attn.q_proj.weight", 7},
                             {"model.layers.0.self_attn.k_proj.weight", 30},
                             {"model.layers.0.self_attn.v_proj.weight", 11},
                             {"model.embed_tokens.weight", 5 * 48 + 2}});  // hidden 48
  }
  SUBCASE("mixtral: attention, norms, router, experts, embedding, head") {
    check_gradients(mixtral.dir(), {{"model.embed_tokens.weight", 5 * 24 + 3},
                                    {"model.layers.0.self_attn.q_proj.weight", 17},
                                    {"model.layers.1.self_attn.k_proj.weight", 40},
                                    {"model.layers.0.self_attn.v_proj.weight", 99},
                                    {"model.layers.1.self_attn.o_proj.weight", 250},
                                    {"model.layers.0.input_layernorm.weight", 7},
                                    {"model.layers.1.post_attention_layernorm.weight", 11},
                                    {"model.layers.0.block_sparse_moe.gate.weight", 30},
                                    {"model.layers.1.block_sparse_moe.experts.2.w1.weight", 60},
                                    {"model.layers.0.block_sparse_moe.experts.4.w3.weight", 61},
                                    {"model.layers.1.block_sparse_moe.experts.5.w2.weight", 62},
                                    {"model.norm.weight", 2},
                                    {"lm_head.weight", 40 * 24 + 9}});
  }
  SUBCASE("qwen2: q/k/v biases, the tied embedding (lookup and head), the MLP") {
    check_gradients(test::model_fixture("hf-ref/qwen2"),
                    {{"model.layers.0.self_attn.q_proj.bias", 3},
                     {"model.layers.1.self_attn.k_proj.bias", 9},
                     {"model.layers.0.self_attn.v_proj.bias", 14},
                     {"model.embed_tokens.weight", 33 * 32 + 5},  // a prompt token's row
                     {"model.embed_tokens.weight", 90 * 32 + 1},  // a row only the head uses
                     {"model.layers.1.mlp.gate_proj.weight", 100},
                     {"model.layers.0.mlp.up_proj.weight", 101},
                     {"model.layers.1.mlp.down_proj.weight", 102}});
  }
  SUBCASE("phi3: the fused qkv_proj and gate_up_proj as stored") {
    check_gradients(test::model_fixture("hf-ref/phi3"),
                    {{"model.layers.0.self_attn.qkv_proj.weight", 5},            // q rows
                     {"model.layers.1.self_attn.qkv_proj.weight", 40 * 32 + 7},  // k rows
                     {"model.layers.0.mlp.gate_up_proj.weight", 25 * 32 + 3}});  // up rows
  }
  SUBCASE("qwen3_moe: q/k norms, experts not renormalised, the dense layer between") {
    check_gradients(test::model_fixture("hf-ref/qwen3_moe"),
                    {{"model.layers.0.self_attn.q_norm.weight", 3},
                     {"model.layers.2.self_attn.k_norm.weight", 6},
                     {"model.layers.1.mlp.gate_proj.weight", 77},
                     {"model.layers.1.mlp.down_proj.weight", 78},
                     {"model.layers.0.mlp.gate.weight", 40},
                     {"model.layers.2.mlp.experts.3.up_proj.weight", 50},
                     {"model.layers.0.mlp.experts.1.down_proj.weight", 51}});
  }
  SUBCASE("deepseek_v3: MLA with a q LoRA rank, grouped sigmoid routing, the shared expert") {
    check_gradients(test::model_fixture("hf-ref/deepseek_v3"),
                    {{"model.layers.0.self_attn.q_a_proj.weight", 33},
                     {"model.layers.1.self_attn.q_a_layernorm.weight", 5},
                     {"model.layers.2.self_attn.q_b_proj.weight", 7 * 12 + 4},  // a rope column
                     {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", 12 * 32 + 9},  // rope
                     {"model.layers.1.self_attn.kv_a_proj_with_mqa.weight", 3 * 32 + 1},
                     {"model.layers.2.self_attn.kv_a_layernorm.weight", 7},
                     {"model.layers.0.self_attn.kv_b_proj.weight", 40 * 10 + 3},  // a v row
                     {"model.layers.1.self_attn.o_proj.weight", 77},
                     {"model.layers.0.mlp.gate_proj.weight", 50},
                     {"model.layers.1.mlp.gate.weight", 100},
                     {"model.layers.2.mlp.shared_experts.up_proj.weight", 60},
                     {"model.layers.1.mlp.shared_experts.down_proj.weight", 61}});
  }
  SUBCASE("qwen2_moe: the gated shared expert, q/k/v biases") {
    check_gradients(test::model_fixture("hf-ref/qwen2_moe"),
                    {{"model.layers.0.mlp.shared_expert_gate.weight", 5},
                     {"model.layers.2.mlp.shared_expert_gate.weight", 30},
                     {"model.layers.0.mlp.shared_expert.gate_proj.weight", 40},
                     {"model.layers.2.mlp.shared_expert.up_proj.weight", 41},
                     {"model.layers.0.mlp.shared_expert.down_proj.weight", 42},
                     {"model.layers.1.self_attn.k_proj.bias", 3},
                     {"model.layers.2.mlp.gate.weight", 50}});
  }
  SUBCASE("deepseek_v3: a full-rank q_proj, the latent's and o's biases") {
    check_gradients(test::model_fixture("hf-ref/deepseek_v3_q_full"),
                    {{"model.layers.0.self_attn.q_proj.weight", 45},
                     {"model.layers.1.self_attn.kv_a_proj_with_mqa.bias", 11},  // rope part
                     {"model.layers.0.self_attn.kv_a_proj_with_mqa.bias", 2},
                     {"model.layers.1.self_attn.o_proj.bias", 3}});
  }
  SUBCASE("deepseek_v2: softmax routing by groups' best, interleaved RoPE, the shared expert") {
    check_gradients(test::model_fixture("hf-ref/deepseek_v2"),
                    {{"model.layers.1.mlp.gate.weight", 70},
                     {"model.layers.2.mlp.gate.weight", 3},
                     {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", 11 * 32 + 5},  // rope
                     {"model.layers.2.self_attn.q_b_proj.weight", 9 * 12 + 2},  // a rope column
                     {"model.layers.1.mlp.experts.4.gate_proj.weight", 30},
                     {"model.layers.2.mlp.shared_experts.down_proj.weight", 8}});
  }
  SUBCASE("llama3: o and MLP biases, the replicated KV head") {
    check_gradients(test::model_fixture("hf-ref/llama3"),
                    {{"model.layers.0.self_attn.o_proj.bias", 4},
                     {"model.layers.1.mlp.down_proj.bias", 7},
                     {"model.layers.0.mlp.gate_proj.bias", 2},
                     {"model.layers.1.self_attn.k_proj.weight", 50}});
  }
}

TEST_CASE("sharded gradients of every parameter equal the unsharded model's, TP, TP+SP and EP") {
  for (const fixture& f : all_models) {
    const fs::path dir = f.dir();
    const prompt p = read_prompt(dir);
    const std::vector<std::int64_t> targets = shifted(p.ids);
    const test::model_run base = test::run_model(dir, p.ids, targets, {});
    CHECK(base.grads.size() >= 10);
    for (const auto& [name, g] : base.grads) {
      CAPTURE(name);  // every gradient is there and not all zero (DeepSeek's selection bias, a
                      // buffer transformers does not train, has none)
      const bool trained = !name.ends_with("e_score_correction_bias");
      CHECK(std::any_of(g.begin(), g.end(), [](double x) { return x != 0; }) == trained);
    }
    for (const int tp : f.tps)
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (!ep_applies(f, ep)) continue;
          if (tp == 1 && !sp) continue;
          CAPTURE(f.name);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const test::model_run r =
              test::run_model(dir, p.ids, targets, {.tp = tp, .sp = sp, .ep = ep});
          CHECK(r.ranks_agree);
          CHECK(std::abs(r.loss - base.loss) <= 1e-12 * std::abs(base.loss));
          CHECK(r.grads.size() == base.grads.size());
          for (const auto& [name, g] : base.grads) {
            CAPTURE(name);
            CHECK(test::relative(r.grads.at(name), g) <= 1e-12);
          }
        }
  }
}

TEST_CASE("bad models and inputs are refused with a sentence naming the file, tensor or key") {
  const fs::path src = llama.dir();
  const auto with_config = [&](const test::temp_dir& d,
                               const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(src / "config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    edit(j);
    std::ofstream(d / "config.json") << j.dump();
    fs::copy_file(src / "model.safetensors", d / "model.safetensors",
                  fs::copy_options::overwrite_existing);
  };
  const auto load_error = [&](const fs::path& dir, int tp, std::span<const std::int64_t> ids = {}) {
    return test::error_of(tp, [&](host::communicator& comm) {
      const model::config c = model::read_config(dir);
      const io::checkpoint ck(dir);
      host::gemm_engine engine;
      model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(engine, comm, c, ck);
      if (!ids.empty()) lm.forward(ids);
    });
  };
  SUBCASE("MLA: a tp above its heads, and groups that do not divide the experts") {
    const fs::path ds = test::model_fixture("hf-ref/deepseek_v3");  // 4 heads
    CHECK(load_error(ds, 5).find("4 heads cannot be split over tp = 5") != std::string::npos);
    test::temp_dir g;  // 6 experts in 4 groups
    nlohmann::json j = io::read_json_file(ds / "config.json", "config");
    j["n_group"] = 4;
    std::ofstream(g / "config.json") << j.dump();
    CHECK(test::error_of([&] {
            model::read_config(g.path);
          }).find("group-limited routing needs \"n_group\" to divide the 6 experts") !=
          std::string::npos);
  }
  SUBCASE("DeepSeek-V2: a topk_method it does not route by, groups without their keys") {
    const fs::path v2 = test::model_fixture("hf-ref/deepseek_v2");
    const auto config_error = [&](const std::function<void(nlohmann::json&)>& edit) {
      test::temp_dir t;
      nlohmann::json j = io::read_json_file(v2 / "config.json", "config");
      edit(j);
      std::ofstream(t / "config.json") << j.dump();
      return test::error_of([&] { model::read_config(t.path); });
    };
    CHECK(config_error([](nlohmann::json& j) { j["topk_method"] = "noaux_tc"; })
              .find("\"topk_method\" is 'noaux_tc'; a deepseek_v2 router chooses by \"greedy\" "
                    "or \"group_limited_greedy\"") != std::string::npos);
    CHECK(config_error([](nlohmann::json& j) { j.erase("topk_group"); })
              .find("group_limited_greedy needs \"n_group\" and \"topk_group\"") !=
          std::string::npos);
    CHECK(config_error([](nlohmann::json& j) { j["topk_method"] = "greedy"; }) == "no error");
  }
  SUBCASE("tp the heads cannot serve") {  // 6 query heads
    CHECK(load_error(src, 7).find("cannot be split over tp = 7") != std::string::npos);
  }
  SUBCASE("ids outside the vocabulary") {
    const std::vector<std::int64_t> ids{1, 97};
    CHECK(load_error(src, 1, ids).find("id 97, outside the vocabulary [0, 97)") !=
          std::string::npos);
  }
  SUBCASE("a synthetic model of a family write_synthetic does not write") {
    test::temp_dir g;
    const nlohmann::json j =
        io::read_json_file(test::model_fixture("hf-ref/deepseek_v3") / "config.json", "config");
    CHECK(test::error_of([&] { model::write_synthetic(g / "m", j); })
              .find("model_type 'deepseek_v3' has multi-head latent attention, which it does not "
                    "write yet") != std::string::npos);
    CHECK(!fs::exists(g / "m" / "model.safetensors"));
  }
  SUBCASE("a missing directory") {
    CHECK(test::error_of([] {
            model::read_config("/nonexistent/model");
          }).find("/nonexistent/model") != std::string::npos);
  }
  test::temp_dir d;
  SUBCASE("a rope type tpx does not implement") {
    with_config(d, [](nlohmann::json& j) { j["rope_parameters"]["rope_type"] = "longrope"; });
    CHECK(load_error(d.path, 1).find("rope_type 'longrope'") != std::string::npos);
  }
  SUBCASE("YaRN without its factor") {
    with_config(d, [](nlohmann::json& j) { j["rope_parameters"]["rope_type"] = "yarn"; });
    CHECK(load_error(d.path, 1).find("of rope type 'yarn' needs the number \"factor\"") !=
          std::string::npos);
  }
  SUBCASE("an activation other than SiLU") {
    with_config(d, [](nlohmann::json& j) { j["hidden_act"] = "gelu"; });
    CHECK(load_error(d.path, 1).find("\"hidden_act\" is 'gelu'") != std::string::npos);
  }
  SUBCASE("an unknown model type") {
    with_config(d, [](nlohmann::json& j) { j["model_type"] = "gpt2"; });
    CHECK(load_error(d.path, 1).find("model_type 'gpt2'") != std::string::npos);
  }
  SUBCASE(
      "a config that omits a dim: the config class's default, which the checkpoint contradicts") {
    // LlamaConfig's hidden_size is 4096 when config.json omits it, as transformers reads it.
    with_config(d, [](nlohmann::json& j) { j.erase("hidden_size"); });
    CHECK(
        load_error(d.path, 1).find("tensor 'model.embed_tokens.weight' has shape [97, 48] but the "
                                   "model needs [97, 4096]") != std::string::npos);
  }
  SUBCASE("a layer type tpx does not implement") {
    with_config(d, [](nlohmann::json& j) {
      j["model_type"] = "qwen2";
      j["layer_types"] = {"sliding_attention", "chunked_attention"};
    });
    CHECK(load_error(d.path, 1).find("\"layer_types\" holds \"chunked_attention\"; tpx "
                                     "implements") != std::string::npos);
  }
  SUBCASE("a tensor of the wrong shape") {
    with_config(d, [](nlohmann::json& j) { j["intermediate_size"] = 31; });
    CHECK(load_error(d.path, 1).find("model.layers.0.mlp.gate_proj.weight") != std::string::npos);
  }
  SUBCASE("a tensor missing from the checkpoint") {
    with_config(d, [](nlohmann::json& j) { j["tie_word_embeddings"] = false; });
    rewrite_checkpoint(src, d / "model.safetensors", [](const std::string& n, std::vector<float>&) {
      return n != "model.layers.1.self_attn.v_proj.weight";
    });
    CHECK(load_error(d.path, 1).find("no tensor 'model.layers.1.self_attn.v_proj.weight'") !=
          std::string::npos);
  }
}

TEST_CASE("llama3 and linear RoPE frequencies follow their rope parameters") {
  nlohmann::json j = {{"model_type", "llama"},    {"hidden_size", 64}, {"num_hidden_layers", 1},
                      {"num_attention_heads", 2}, {"vocab_size", 10},  {"intermediate_size", 8}};
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const model::config c = model::parse_config(j, "config.json");
  const std::vector<double> base = ops::default_inv_freq(500000.0, 32);
  REQUIRE(c.inv_freq.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) {
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (wavelen < 8192.0 / 4) CHECK(c.inv_freq[i] == base[i]);  // high frequencies kept
    if (wavelen > 8192.0) CHECK(c.inv_freq[i] == doctest::Approx(base[i] / 8));  // low: scaled
    if (wavelen >= 8192.0 / 4 && wavelen <= 8192.0) {                            // between: blended
      CHECK(c.inv_freq[i] < base[i]);
      CHECK(c.inv_freq[i] > base[i] / 8);
    }
  }
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  const model::config l = model::parse_config(j, "config.json");
  CHECK(l.inv_freq[3] == doctest::Approx(ops::default_inv_freq(10000.0, 32)[3] / 4));
  j.erase("rope_parameters");  // the older spelling: rope_theta + rope_scaling
  j["rope_theta"] = 1000.0;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const model::config o = model::parse_config(j, "config.json");
  CHECK(o.inv_freq[1] == doctest::Approx(ops::default_inv_freq(1000.0, 32)[1] / 2));
  CHECK(o.rms_norm_eps == 1e-6);  // LlamaConfig's default
}

TEST_CASE("a sharded model saved as loaded gives back its checkpoint") {
  test::temp_dir d;
  SUBCASE("tpx-written checkpoints come back bit for bit, at any tp, SP and EP") {
    for (const bool moe : {false, true}) {
      const nlohmann::json cfg = {
          {"architectures", {moe ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
          {"model_type", moe ? "mixtral" : "llama"},
          {"hidden_size", 24},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 4},
          {"head_dim", 4},
          {"intermediate_size", 13},
          {"vocab_size", 53},
          {"num_local_experts", 6},
          {"num_experts_per_tok", 2}};
      model::write_synthetic(d / "m", cfg, io::file_dtype::bf16, 7);
      const std::string original = test::read_file(d / "m" / "model.safetensors");
      const model::config c = model::read_config(d / "m");
      const io::checkpoint ck(d / "m");
      for (const int tp : {1, 3, 4}) {
        CAPTURE(moe);
        CAPTURE(tp);
        const int ep = moe && tp == 3 ? 3 : 1;
        host::run(tp, [&](host::communicator& comm) {
          host::gemm_engine engine;
          model::causal_lm<layer::block_mode::sequence, host::backend, float> lm(engine, comm, c,
                                                                                 ck, {.ep = ep});
          lm.save(d / "saved.safetensors");
        });
        CHECK(test::read_file(d / "saved.safetensors") == original);
      }
    }
  }
  SUBCASE("a transformers checkpoint's every tensor comes back byte for byte") {
    // DeepSeek-V3 (MLA, the selection bias, shared experts) and Qwen2-MoE (the gated shared
    // expert): every tensor a layer holds is one save writes back.
    for (const fixture& f :
         {mixtral, fixture{"hf-ref/phi3", {}}, fixture{"hf-ref/qwen2", {}},
          fixture{"hf-ref/deepseek_v3", {}, true}, fixture{"hf-ref/qwen2_moe", {}, true}}) {
      CAPTURE(f.name);
      const model::config c = model::read_config(f.dir());
      const io::checkpoint ck(f.dir());
      host::run(2, [&](host::communicator& comm) {
        host::gemm_engine engine;
        model::causal_lm<layer::block_mode::tensor, host::backend, double> lm(
            engine, comm, c, ck, {.ep = f.moe ? 2 : 1});
        lm.save(d / "saved.safetensors");
      });
      const io::checkpoint back(d / "saved.safetensors");
      CHECK(back.names() == ck.names());
      for (const std::string& n : ck.names()) {
        CAPTURE(n);
        CHECK(back.info(n).shape == ck.info(n).shape);
        CHECK(back.info(n).dtype == ck.info(n).dtype);
        CHECK(back.read<std::byte>(n) == ck.read<std::byte>(n));
      }
    }
  }
}

namespace {

/// A small config of `family` with uneven dims: 24 query / 8 KV heads (tp 3 splits KV heads
/// 3/3/2), intermediate 13, vocab 53; 8 experts for mixtral.
nlohmann::json synthetic_config(const std::string& family, index_t layers) {
  nlohmann::json c = {{"architectures",
                       {family == "mixtral"   ? "MixtralForCausalLM"
                        : family == "qwen2"   ? "Qwen2ForCausalLM"
                        : family == "mistral" ? "MistralForCausalLM"
                                              : "LlamaForCausalLM"}},
                      {"model_type", family},
                      {"hidden_size", 20},
                      {"num_hidden_layers", layers},
                      {"num_attention_heads", 24},
                      {"num_key_value_heads", 8},
                      {"head_dim", 2},
                      {"intermediate_size", 13},
                      {"vocab_size", 53},
                      {"num_local_experts", 8},
                      {"num_experts_per_tok", 2}};
  return c;
}

}  // namespace

TEST_CASE(
    "law: plan::resolve places every tensor of every family where its layer holds it, at tp 1-8") {
  test::temp_dir d;
  for (const std::string family : {"llama", "mistral", "qwen2", "mixtral"}) {
    model::write_synthetic(d / family, synthetic_config(family, 2), io::file_dtype::bf16, 3);
    const fs::path dir = d / family;
    const model::plan_inputs inputs(io::read_json_file(dir / "config.json", "config"),
                                    (dir / "config.json").string(), "", "");
    const model::config c = model::read_config(dir);
    const io::checkpoint ck(dir);
    const std::vector<std::int64_t> ids{3, 1, 4, 1, 5, 9, 2, 6, 5};
    const test::model_run base = test::run_model(dir, ids, {}, {.backward = false});
    for (const int tp : {1, 2, 3, 4, 8})
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (ep > 1 && (family != "mixtral" || 8 % ep != 0)) continue;
          CAPTURE(family);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const plan::resolution r =
              inputs.resolve(inputs.tensors(ck), {.tp = tp, .sp = sp, .ep = ep});
          host::run(tp, [&](host::communicator& comm) {
            host::gemm_engine engine;
            const auto body = [&]<layer::block_mode M>() {
              model::causal_lm<M, host::backend, double> lm(engine, comm, c, ck, {.ep = ep});
              if (comm.rank() == 0)
                CHECK(test::error_of([&] {
                        model::expect_matches(r, lm.checkpoint_placements(ck));
                      }) == "no error");
            };
            if (sp)
              body.template operator()<layer::block_mode::sequence>();
            else
              body.template operator()<layer::block_mode::tensor>();
          });
          const test::model_run run =
              test::run_model(dir, ids, {}, {.tp = tp, .sp = sp, .ep = ep, .backward = false});
          CHECK(test::relative(run.logits, base.logits) <= 1e-12);
          for (int rank = 0; rank < tp; ++rank)
            CHECK(run.bytes_read[static_cast<std::size_t>(rank)] ==
                  run.bytes_expected[static_cast<std::size_t>(rank)]);
        }
  }
}

/// Rank 0's bytes moved by the forward and the backward of the model in `dir` on `tokens`
/// tokens (ids and targets below 53).
std::pair<double, double> counted_bytes(const fs::path& dir, int tp, bool sp, int ep,
                                        index_t tokens) {
  const model::config c = model::read_config(dir);
  const io::checkpoint ck(dir);
  std::vector<std::int64_t> ids, targets;
  for (index_t t = 0; t < tokens; ++t) {
    ids.push_back((7 * t + 3) % 53);
    targets.push_back((5 * t + 1) % 53);
  }
  std::pair<double, double> bytes;  // forward, backward; rank 0
  host::run(tp, [&](host::communicator& comm) {
    host::gemm_engine engine;
    const auto body = [&]<layer::block_mode M>() {
      model::causal_lm<M, host::backend, double> lm(engine, comm, c, ck, {.ep = ep});
      comm.reset_statistics();
      lm.forward(ids);
      const double fwd = static_cast<double>(comm.statistics().total_bytes());
      lm.loss(targets);
      comm.reset_statistics();
      lm.backward();
      if (comm.rank() == 0) bytes = {fwd, static_cast<double>(comm.statistics().total_bytes())};
    };
    if (sp)
      body.template operator()<layer::block_mode::sequence>();
    else
      body.template operator()<layer::block_mode::tensor>();
  });
  return bytes;
}

TEST_CASE("law: the plan's bytes per token per layer are what the built layers move") {
  // Per token per layer = the growth of a rank's counted bytes with tokens (which leaves out the
  // once-per-step gradient all-reduces) between a 1- and a 2-layer model (which leaves out the
  // embedding, head and loss), in the plan's units (elements of the config's dtype).
  test::temp_dir d;
  for (const std::string family : {"llama", "mixtral"})
    for (const index_t layers : {1, 2})
      model::write_synthetic(d / fmt::format("{}{}", family, layers),
                             synthetic_config(family, layers), io::file_dtype::bf16, 5);
  const index_t t1 = 24, t2 = 48;
  const auto counted = counted_bytes;
  for (const std::string family : {"llama", "mixtral"})
    for (const int tp : {2, 4})
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (ep > 1 && (family != "mixtral" || sp))
            continue;  // EP + SP: all-to-all-v, routing-dependent
          CAPTURE(family);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const fs::path one = d / (family + "1"), two = d / (family + "2");
          const auto a1 = counted(one, tp, sp, ep, t1), a2 = counted(one, tp, sp, ep, t2),
                     b1 = counted(two, tp, sp, ep, t1), b2 = counted(two, tp, sp, ep, t2);
          const double per = static_cast<double>(sizeof(double)) * static_cast<double>(t2 - t1);
          const double fwd = ((b2.first - b1.first) - (a2.first - a1.first)) / per,
                       bwd = ((b2.second - b1.second) - (a2.second - a1.second)) / per;
          const model::plan_inputs inputs(io::read_json_file(two / "config.json", "config"),
                                          (two / "config.json").string(), "", "");
          const plan::resolution r =
              inputs.resolve(inputs.tensors(io::checkpoint(two)), {.tp = tp, .sp = sp, .ep = ep});
          const double unit = static_cast<double>(inputs.config().element_bytes());
          CHECK(fwd == doctest::Approx(r.comm_forward / unit));
          CHECK(bwd == doctest::Approx(r.comm_backward / unit));
        }
}

TEST_CASE("law: a DeepSeek-V3 or Qwen2-MoE layer moves the bytes the plan gives it") {
  // The third layer of each (MoE; MLA for DeepSeek) by difference: the counted growth with tokens
  // of the three-layer model less that of its first two layers, against 3 × the plan's per-layer
  // figure of three layers less 2 × that of two.
  test::temp_dir d;
  for (const char* name : {"hf-ref/deepseek_v3", "hf-ref/qwen2_moe"}) {
    const fs::path three = test::model_fixture(name), two = d / (std::string(name).substr(7));
    fs::create_directories(two);
    nlohmann::json j = io::read_json_file(three / "config.json", "config");
    j["num_hidden_layers"] = 2;
    if (j.contains("layer_types")) j["layer_types"].erase(2);
    std::ofstream(two / "config.json") << j.dump();
    rewrite_checkpoint(three / "model.safetensors", two / "model.safetensors",
                       [](const std::string& n, std::vector<float>&) {
                         return n.find("layers.2.") == std::string::npos;
                       });
    const index_t t1 = 24, t2 = 48;
    for (const int tp : {2, 3})
      for (const bool sp : {false, true})
        for (const int ep : {1, tp}) {
          if (sp && ep > 1) continue;  // EP + SP: routing-dependent all-to-all
          CAPTURE(name);
          CAPTURE(tp);
          CAPTURE(sp);
          CAPTURE(ep);
          const auto a1 = counted_bytes(two, tp, sp, ep, t1),
                     a2 = counted_bytes(two, tp, sp, ep, t2),
                     b1 = counted_bytes(three, tp, sp, ep, t1),
                     b2 = counted_bytes(three, tp, sp, ep, t2);
          const double per = static_cast<double>(sizeof(double)) * static_cast<double>(t2 - t1);
          const double fwd = ((b2.first - b1.first) - (a2.first - a1.first)) / per,
                       bwd = ((b2.second - b1.second) - (a2.second - a1.second)) / per;
          const auto planned = [&](const fs::path& dir, index_t layers) {
            const model::plan_inputs inputs(io::read_json_file(dir / "config.json", "config"),
                                            (dir / "config.json").string(), "", "");
            const plan::resolution r =
                inputs.resolve(inputs.tensors(io::checkpoint(dir)), {.tp = tp, .sp = sp, .ep = ep});
            const double unit = static_cast<double>(inputs.config().element_bytes()),
                         n = static_cast<double>(layers);
            return std::pair{n * r.comm_forward / unit, n * r.comm_backward / unit};
          };
          const auto p3 = planned(three, 3), p2 = planned(two, 2);
          CHECK(fwd == doctest::Approx(p3.first - p2.first));
          CHECK(bwd == doctest::Approx(p3.second - p2.second));
        }
  }
}
