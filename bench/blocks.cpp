// tpx-bench --blocks: whole decoder layers (Llama: attention + SwiGLU MLP; Mixtral: attention +
// 8 experts, top 2) in TP and TP+SP mode on thread ranks: forward + backward time, bytes each rank
// moved, and the fraction of the time spent inside collectives.
//
// The communicator is the host one wrapped in a stopwatch (`timed_communicator`), so the
// communication fraction is what the layers measured around their own collective calls; on
// thread ranks it includes waiting for the slowest rank (load imbalance), since a collective
// cannot finish before every rank has arrived.

#include <chrono>
#include <vector>

#include "common.hpp"
#include "timed.hpp"
#include "tpx/model/synthetic.hpp"
#include "tpx/tpx.hpp"

namespace tpx::bench {
namespace {


struct block_dims {
  index_t tokens, hidden, heads, kv_heads, head_dim, inter, experts, top_k;
};

/// n uniform draws in [−scale/2, scale/2), as weights and activations are (the earlier 97-periodic
/// ramp left a twentieth of one gradient subnormal, which runs 2 – 3× slower on some CPUs).
template <class T>
std::vector<T> filled(index_t n, T scale) {
  model::detail::splitmix draw{static_cast<std::uint64_t>(n) * 0x9E3779B97F4A7C15ull + 17};
  std::vector<T> v(static_cast<std::size_t>(n));
  for (T& x : v) x = scale / 2 * static_cast<T>(draw.uniform());
  return v;
}

/// One step's time (median over repetitions, rank 0) and what its collectives moved.
struct block_time {
  double seconds, comm_fraction;
  std::int64_t bytes;
  double bus;
};

template <class Layer>
block_time time_block(const options& o, int tp, const block_dims& d) {
  using T = float;
  const index_t nq = d.heads * d.head_dim, nkv = d.kv_heads * d.head_dim;
  const T in_scale = T(2) / std::sqrt(static_cast<T>(d.hidden));
  const auto q = filled<T>(nq * d.hidden, in_scale), k = filled<T>(nkv * d.hidden, in_scale),
             v = filled<T>(nkv * d.hidden, in_scale), wo = filled<T>(d.hidden * nq, in_scale),
             gu = filled<T>(2 * d.inter * d.hidden, in_scale),
             dn = filled<T>(d.hidden * d.inter, in_scale),
             router = filled<T>(d.experts * d.hidden, in_scale),
             egu = filled<T>(d.experts * 2 * d.inter * d.hidden, in_scale),
             edn = filled<T>(d.experts * d.hidden * d.inter, in_scale);
  const std::vector<T> norm(static_cast<std::size_t>(d.hidden), T(1));
  const layer::decoder_weights<T> weights{
      .input_norm = norm,
      .post_norm = norm,
      .attention = {make_matrix(q.data(), nq, d.hidden), make_matrix(k.data(), nkv, d.hidden),
                    make_matrix(v.data(), nkv, d.hidden), make_matrix(wo.data(), d.hidden, nq)},
      .mlp = {make_matrix(gu.data(), d.inter, d.hidden),
              make_matrix(gu.data() + d.inter * d.hidden, d.inter, d.hidden),
              make_matrix(dn.data(), d.hidden, d.inter)},
      .router = make_matrix(router.data(), d.experts, d.hidden),
      .gate_up = tensor_view<const T, 3>(egu.data(), {{d.experts, 2 * d.inter, d.hidden}}),
      .down = tensor_view<const T, 3>(edn.data(), {{d.experts, d.hidden, d.inter}})};
  const layer::decoder_options options{
      .attention = {.heads = {d.heads, d.kv_heads, d.head_dim}},
      .eps = 1e-6,
      .routing = {.n_experts = d.experts, .top_k = d.top_k},
      .experts = {.n_experts = d.experts, .hidden = d.hidden, .inter = d.inter, .top_k = d.top_k}};
  const int reps = o.quick ? 2 : 5;
  std::vector<double> times;
  double comm_seconds = 0, total_seconds = 0;
  std::int64_t bytes = 0;
  double bus = 0;
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& hc) {
    timed_communicator c(hc);
    Layer block = Layer::build(engine, c, weights, options);
    const index_t n = block.local_tokens(d.tokens);
    const auto x = filled<T>(n * d.hidden, T(2));
    std::vector<T> y(x.size()), dx(x.size());
    const auto xv = make_matrix(x.data(), n, d.hidden);
    const auto step = [&] {
      block.forward(xv, make_matrix(y.data(), n, d.hidden), d.tokens);
      block.backward(xv, make_matrix<const T>(y.data(), n, d.hidden),
                     make_matrix(dx.data(), n, d.hidden), d.tokens);
    };
    step();  // warm-up: scratch grows to size
    for (int r = 0; r < reps; ++r) {
      c.reset();
      hc.barrier();
      const auto start = clock_type::now();
      step();
      hc.barrier();
      const double s = since(start);
      if (c.rank() == 0) {
        times.push_back(s);
        comm_seconds += c.seconds();
        total_seconds += s;
        bytes = bus = 0;
        for (int k = 0; k < comm::kind_count; ++k) {
          const auto kind = static_cast<comm::kind>(k);
          if (kind == comm::kind::barrier) continue;
          bytes += c.statistics()[kind].bytes;
          bus += static_cast<double>(c.statistics()[kind].bytes) * comm::bus_factor(kind, tp);
        }
      }
    }
  });
  return {median(times), comm_seconds / total_seconds, bytes, bus};
}

template <class Layer>
void bench_block(const options& o, report& out, const char* model, int tp, const block_dims& d) {
  const auto [t, frac, bytes, bus] = time_block<Layer>(o, tp, d);
  const char* mode = Layer::mode == layer::block_mode::sequence ? "TP+SP" : "TP";
  out.row(
      fmt::format("  {:>8} {:>6} {:>3} {:>6} {:>6} {:>12.1f} {:>12} {:>12.0f} {:>8.2f}", model,
                  mode, tp, d.tokens, d.hidden, t * 1e6, bytes, bus, frac),
      fmt::format(
          R"({{"kind":"block","model":"{}","mode":"{}","tp":{},"tokens":{},"hidden":{},"fwd_bwd_us":{:.1f},"bytes_per_rank":{},"bus_bytes_per_rank":{:.0f},"comm_fraction":{:.4f}}})",
          model, mode, tp, d.tokens, d.hidden, t * 1e6, bytes, bus, frac));
}

/// Forward + backward seconds (median of `reps`) of the GEMMs a Llama layer of `d` at tp 1 runs:
/// qkv, o, gate_up and down, each forward (Y = X Wᵀ) and backward (dX = dY W, dW = dYᵀ X) — the
/// floor a layer made of these GEMMs plus element-wise work cannot go under.
double gemms_alone(const block_dims& d, int reps) {
  using T = float;
  const index_t n = d.tokens, h = d.hidden, nq = d.heads * d.head_dim,
                qkv = nq + 2 * d.kv_heads * d.head_dim;
  struct shape {
    index_t out, in;
  };
  const shape shapes[] = {{qkv, h}, {h, nq}, {2 * d.inter, h}, {h, d.inter}};
  index_t widest = 0;
  for (const shape& s : shapes) widest = std::max({widest, s.out, s.in});
  const auto w = filled<T>(widest * widest, T(0.1)), x = filled<T>(n * widest, T(1));
  std::vector<T> y(static_cast<std::size_t>(n * widest)), dx(y.size()),
      dw(static_cast<std::size_t>(widest * widest));
  host::gemm_engine e;
  const auto step = [&] {
    for (const shape& s : shapes) {
      const auto wv = make_matrix(w.data(), s.out, s.in);
      const auto xv = make_matrix(x.data(), n, s.in), yv = make_matrix<const T>(x.data(), n, s.out);
      e.gemm<T>({.op_b = gemm::op::transpose, .a = xv, .b = wv, .c = make_matrix(y.data(), n, s.out)});
      e.gemm<T>({.a = yv, .b = wv, .c = make_matrix(dx.data(), n, s.in)});
      e.gemm<T>({.op_a = gemm::op::transpose, .a = yv, .b = xv,
                 .c = make_matrix(dw.data(), s.out, s.in)});
    }
  };
  step();
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto start = clock_type::now();
    step();
    times.push_back(since(start));
  }
  return median(times);
}

/// A Llama layer on one rank against its own GEMMs alone, over token counts: what the layer adds
/// to the GEMMs (attention, RoPE, norms, SwiGLU, copies). Goal: within 1.3× at 512 tokens.
void bench_layer_floor(const options& o, report& out) {
  out.line("#\n# a Llama layer at tp 1 (hidden 512, 8 / 4 heads of 64, inter 1376; float, one");
  out.line("# thread) against its GEMMs alone (qkv, o, gate_up, down: forward, dX, dW);");
  out.line("# ratio = layer / GEMMs, goal <= 1.3 at 512 tokens");
  out.line(fmt::format("# {:>6} {:>14} {:>14} {:>8}", "tokens", "layer(us)", "gemms(us)", "ratio"));
  const std::vector<index_t> counts =
      o.quick ? std::vector<index_t>{16, 64} : std::vector<index_t>{32, 128, 512, 1024, 2048};
  for (const index_t tokens : counts) {
    const block_dims d{tokens, 512, 8, 4, 64, 1376, 0, 0};
    const int reps = o.quick ? 2 : tokens >= 1024 ? 3 : 5;
    const double layer = time_block<layer::llama_layer<layer::block_mode::tensor, timed_backend>>(
                             o, 1, d)
                             .seconds;
    const double floor = gemms_alone(d, reps);
    const double ratio = layer / floor;
    out.row(fmt::format("  {:>6} {:>14.1f} {:>14.1f} {:>8.2f}", tokens, layer * 1e6, floor * 1e6,
                        ratio),
            fmt::format(
                R"({{"kind":"layer_floor","tokens":{},"layer_us":{:.1f},"gemms_us":{:.1f},"ratio":{:.3f}}})",
                tokens, layer * 1e6, floor * 1e6, ratio),
            tokens == 512 ? std::optional<bool>(ratio <= 1.3) : std::nullopt);
  }
}

}  // namespace

void bench_blocks(const options& o, report& out) {
  const block_dims llama =
      o.quick ? block_dims{16, 64, 8, 2, 8, 96, 0, 0} : block_dims{128, 512, 8, 4, 64, 1376, 0, 0};
  block_dims mixtral = llama;
  mixtral.inter = o.quick ? 48 : 512;
  mixtral.experts = 8;
  mixtral.top_k = 2;
  out.line(
      "#\n# decoder layers, float, host backend: forward + backward per step (rank 0, median);");
  out.line("# weights and inputs uniform draws (weights within ±1/√hidden, inputs ±1: no subnormals);");
  out.line("# bytes = rank 0's collective sizes in the step (nccl-tests convention: an all-reduce");
  out.line(
      "# counts its buffer, an all-gather its output, a reduce-scatter its input); bus = bytes");
  out.line(
      "# × the nccl-tests bus factor, what crosses the wire per rank (TP and SP move the same);");
  out.line("# comm = fraction of the step rank 0 spent inside collective calls (incl. waiting)");
  out.line(fmt::format("# {:>8} {:>6} {:>3} {:>6} {:>6} {:>12} {:>12} {:>12} {:>8}", "model",
                       "mode", "tp", "tokens", "hidden", "fwd+bwd(us)", "bytes", "bus", "comm"));
  using B = timed_backend;
  using layer::block_mode;
  for (const int tp : o.tps) {
    if (tp > 4 && !o.quick) continue;  // 2 cores: beyond 4 thread ranks the GEMMs only queue
    bench_block<layer::llama_layer<block_mode::tensor, B>>(o, out, "llama", tp, llama);
    bench_block<layer::llama_layer<block_mode::sequence, B>>(o, out, "llama", tp, llama);
    bench_block<layer::mixtral_layer<block_mode::tensor, B>>(o, out, "mixtral", tp, mixtral);
    bench_block<layer::mixtral_layer<block_mode::sequence, B>>(o, out, "mixtral", tp, mixtral);
  }
  bench_layer_floor(o, out);
}

}  // namespace tpx::bench
