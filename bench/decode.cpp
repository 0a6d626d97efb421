// tpx-bench --decode: generation through the KV cache, weights held in f32 and in bf16.
//
// The model: a synthetic Llama-shaped checkpoint tpx writes (hidden 512, 4 layers, 8 / 4 heads of
// 64, inter 1408, vocab 8192; --quick: hidden 256, 2 layers), or the checkpoint of --model-dir
// (a real model: tools/real-model writes SmolLM2-135M-Instruct's). For each tp (1, 2, 4,
// or --tp), weight type (f32: host::backend; bf16: layer::weights_in<…, bf16>, computing in f32)
// and batch: a prefill of `prompt` tokens per sequence, then decode steps of one token per
// sequence. Reported: prefill and decode tokens per second; the parameter bytes a rank holds
// (what a decode step reads at least once) and the floor they set — those bytes ÷ the bandwidth
// one thread streams memory at (a dot product over more than the caches hold), measured in the
// same run — with step ÷ floor; the collectives' share of a step, their calls and bytes; the
// cache's bytes per token per rank against 2 · layers · kv_heads_on_rank · head_dim · 4; and
// `#wrong`, decode logits off one forward over the whole sequence by > 1e-4 relative.

#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common.hpp"
#include "timed.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/backend/host/dots.hpp"
#include "tpx/model/causal_lm.hpp"
#include "tpx/shard/gqa.hpp"

namespace tpx::bench {
namespace {

/// Bytes per second one thread streams through memory: a dot product of `bytes` of floats (more
/// than the caches hold) with themselves through the decode step's kernel (`simd::dots`, the
/// widest this CPU runs), each cache line read once; median of 5.
double read_bandwidth(index_t bytes) {
  const index_t n = bytes / 4;
  std::vector<float> a(static_cast<std::size_t>(n), 0.5f);
  std::vector<double> t;
  float s = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = clock_type::now();
    host::simd::dots<float>(
        {.x = a.data(), .ldx = n, .m = 1, .w = a.data(), .ldw = n, .n = 1, .k = n, .c = &s, .ldc = 1});
    t.push_back(since(t0));
  }
  const double want = 0.25 * static_cast<double>(n);
  expect(std::abs(s - want) <= 1e-6 * want, "read_bandwidth: the sum is {}, not {}", s, want);
  return static_cast<double>(n * 4) / median(t);
}

struct decode_shape {
  index_t prompt, steps;
};

struct decode_result {
  double prefill_s = 0, step_s = 0, comm_fraction = 0;
  std::int64_t calls = 0, bytes = 0;
  std::uint64_t held = 0;  ///< parameter bytes rank 0 holds
  index_t cache_bytes = 0;
  int wrong = 0;
};

/// Prefill then decode steps of `batch` sequences on tp thread ranks, the model's weights held
/// as `Backend` says.
template <class Backend>
decode_result decode_run(const std::filesystem::path& dir, const model::config& c, int tp,
                         index_t batch, decode_shape shape) {
  const index_t vocab = c.dims.vocab_size, prompt = shape.prompt, steps = shape.steps;
  decode_result r;
  std::vector<double> step_s, step_comm_s;
  comm::stats step_traffic;
  host::run(tp, [&](host::communicator& host_comm) {
    timed_communicator comm(host_comm);
    host::gemm_engine engine;
    const io::checkpoint ck(dir);
    model::causal_lm<layer::block_mode::tensor, Backend, float> lm(engine, comm, c, ck);
    if (comm.rank() == 0) r.held = lm.bytes_held();
    auto kv = lm.make_cache(batch, prompt + steps);
    std::vector<std::int64_t> ids;
    std::vector<layer::segment> segs;
    for (index_t b = 0; b < batch; ++b) {
      for (index_t t = 0; t < prompt; ++t) ids.push_back((b * 131 + t * 7919 + 13) % vocab);
      segs.push_back({b, prompt});
    }
    std::vector<std::int64_t> first(ids.begin(), ids.begin() + prompt);
    comm.barrier();
    auto t0 = clock_type::now();
    lm.forward_cached(ids, kv, segs);
    comm.barrier();
    if (comm.rank() == 0) r.prefill_s = since(t0);
    for (index_t s = 0; s < steps; ++s) {
      std::vector<std::int64_t> next;
      std::vector<layer::segment> one;
      for (index_t b = 0; b < batch; ++b) {
        next.push_back((b * 17 + s * 31 + 5) % vocab);
        one.push_back({b, 1});
      }
      first.push_back(next[0]);
      comm.barrier();
      comm.reset();
      t0 = clock_type::now();
      lm.forward_cached(next, kv, one);
      comm.barrier();
      if (comm.rank() == 0) {
        step_s.push_back(since(t0));
        step_comm_s.push_back(comm.seconds());
        step_traffic = comm.statistics();
      }
    }
    const std::vector<float> step = lm.gather_logits();
    const std::vector<float> last(step.begin(), step.begin() + vocab);  // sequence 0's
    // Sequence 0 through one forward over all of it: the decode step's logits must be its last
    // row's.
    lm.forward(first);
    const std::vector<float> whole = lm.gather_logits();
    if (comm.rank() != 0) return;
    double scale = 0;
    const float* row = whole.data() + (whole.size() - static_cast<std::size_t>(vocab));
    for (index_t v = 0; v < vocab; ++v) scale = std::max(scale, std::abs(double(row[v])));
    for (index_t v = 0; v < vocab; ++v)
      r.wrong += std::abs(double(row[v]) - last[static_cast<std::size_t>(v)]) > 1e-4 * scale;
    r.cache_bytes = kv.bytes();
  });
  r.step_s = median(step_s);
  double all = 0, in_comm = 0;
  for (std::size_t i = 0; i < step_s.size(); ++i) all += step_s[i], in_comm += step_comm_s[i];
  r.comm_fraction = all > 0 ? in_comm / all : 0;
  for (int k = 0; k < comm::kind_count; ++k)
    if (static_cast<comm::kind>(k) != comm::kind::barrier) {
      r.calls += step_traffic.by_kind[static_cast<std::size_t>(k)].calls;
      r.bytes += step_traffic.by_kind[static_cast<std::size_t>(k)].bytes;
    }
  return r;
}

}  // namespace

void bench_decode(const options& o, report& out) {
  const bool real = !o.model_dir.empty();
  const std::filesystem::path dir =
      real ? std::filesystem::path(o.model_dir)
           : synthetic_llama(o.quick ? 256 : 512, o.quick ? 2 : 4, o.quick ? 704 : 1408,
                             o.quick ? 2048 : 8192);
  const model::config c = model::read_config(dir);
  const index_t kv_heads = c.dims.n_kv_heads, head_dim = c.dims.head_dim,
                layers = c.dims.num_layers;
  const decode_shape shape = real ? decode_shape{o.quick ? 8 : 42, o.quick ? 8 : 64}
                                  : decode_shape{o.quick ? 8 : 16, o.quick ? 4 : 8};
  const std::vector<index_t> batches =
      real ? std::vector<index_t>{1, 8}
           : (o.quick ? std::vector<index_t>{1, 8} : std::vector<index_t>{1, 8, 32});
  const std::vector<int> tps = o.tps_given ? o.tps : std::vector<int>{1, 2, 4};
  const double bandwidth = read_bandwidth(o.quick ? index_t{64} << 20 : index_t{256} << 20);
  out.line(fmt::format(
      "#\n# generation: {} {}, hidden {}, {} layers, {} / {} heads of {}, inter {}, vocab {}; "
      "compute f32, weights f32 or bf16; prompts of {} tokens, then {} decode steps (one token "
      "per sequence each)",
      real ? "checkpoint" : "synthetic Llama", real ? dir.string() : "", c.dims.hidden_size,
      layers, c.dims.n_heads, kv_heads, head_dim, c.dims.intermediate_size, c.dims.vocab_size,
      shape.prompt, shape.steps));
  out.line(fmt::format(
      "# tok/s: prefill = batch × prompt ÷ prefill time, decode = batch ÷ median step time; "
      "held MB: parameter bytes rank 0 holds; floor ms: held ÷ {:.1f} GB/s (one thread streaming "
      "a dot product over 256 MB, this run); comm: the steps' time inside collectives (rank 0; on "
      "thread ranks it includes waiting for the slowest rank); calls, bytes/step: collectives "
      "per step; cache B/tok/rank against 2 · layers · kv_heads_on_rank · head_dim · 4; #wrong: "
      "decode logits off one forward over the whole sequence by > 1e-4 relative",
      bandwidth / 1e9));
  out.line(fmt::format("# {:>3} {:>4} {:>5} {:>11} {:>10} {:>8} {:>8} {:>8} {:>10} {:>6} {:>6} "
                       "{:>10} {:>9} {:>8} {:>6}",
                       "tp", "wts", "batch", "prefill t/s", "decode t/s", "ms/step", "held MB",
                       "floor ms", "step/floor", "comm", "calls", "bytes/step", "cache B/t",
                       "analytic", "#wrong"));
  for (const int tp : tps)
    for (const index_t batch : batches)
      for (const bool bf16_weights : {false, true}) {
        const decode_result r =
            bf16_weights
                ? decode_run<layer::weights_in<timed_backend, bf16>>(dir, c, tp, batch, shape)
                : decode_run<timed_backend>(dir, c, tp, batch, shape);
        const index_t kv_r = shard::gqa{c.dims.n_heads, kv_heads, head_dim}.kv_heads(tp, 0).size();
        const double per_token = static_cast<double>(r.cache_bytes) /
                                 static_cast<double>(batch * (shape.prompt + shape.steps)),
                     analytic = static_cast<double>(2 * layers * kv_r * head_dim * 4);
        const double prefill_tps = static_cast<double>(batch * shape.prompt) / r.prefill_s,
                     decode_tps = static_cast<double>(batch) / r.step_s,
                     floor_s = static_cast<double>(r.held) / bandwidth;
        const char* wts = bf16_weights ? "bf16" : "f32";
        out.row(
            fmt::format("  {:>3} {:>4} {:>5} {:>11.0f} {:>10.1f} {:>8.2f} {:>8.1f} {:>8.2f} "
                        "{:>10.2f} {:>5.0f}% {:>6} {:>10} {:>9.0f} {:>8.0f} {:>6}",
                        tp, wts, batch, prefill_tps, decode_tps, r.step_s * 1e3,
                        static_cast<double>(r.held) / 1e6, floor_s * 1e3, r.step_s / floor_s,
                        100 * r.comm_fraction, r.calls, r.bytes, per_token, analytic, r.wrong),
            fmt::format(
                R"({{"bench":"decode","model":"{}","tp":{},"weights":"{}","batch":{},)"
                R"("prompt":{},"steps":{},"prefill_tokens_per_s":{},"decode_tokens_per_s":{},)"
                R"("step_s":{},"held_bytes":{},"read_bandwidth":{},"floor_s":{},)"
                R"("comm_fraction":{},"collective_calls_per_step":{},)"
                R"("collective_bytes_per_step":{},"cache_bytes_per_token_per_rank":{},)"
                R"("analytic":{},"wrong":{}}})",
                real ? "checkpoint" : "synthetic", tp, wts, batch, shape.prompt, shape.steps,
                prefill_tps, decode_tps, r.step_s, r.held, bandwidth, floor_s, r.comm_fraction,
                r.calls, r.bytes, per_token, analytic, r.wrong),
            r.wrong == 0 && per_token == analytic);
      }
  if (!real) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
}

}  // namespace tpx::bench
