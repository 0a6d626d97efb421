// tpx-bench --gpu: the linear styles on the cuda backend, ranks sharing one GPU through the
// device-local communicator. For Llama-8B- and Llama-70B-shaped projections (qkv and gate|up
// colwise, o and down rowwise, and their sequence-parallel forms) at tokens ∈ {1, 16, 512, 4096},
// in bfloat16:
//
//   layer     the tpx layer's forward, every rank, start to end
//   direct    the same GEMMs (the same cuBLASLt engine) and the same collectives, called by hand
//             on the same buffers: the overhead ratio is layer / direct (goal ≤ 1.02)
//   TFLOP/s   2 · tokens · out · in over the layer's time, next to the unsharded GEMM's
//             (the cuBLASLt heuristic's first choice for the whole [tokens × in] · [in × out]),
//             timed in the same run
//
// Times are CUDA-event medians on rank 0's stream between two barriers (every rank's work sits
// between them). All ranks share one GPU, so a tp-rank layer does the unsharded layer's FLOPs
// plus its collectives' copies on one device: the TFLOP/s ratio shows what splitting costs there,
// not multi-GPU scaling.

#include <cuda_bf16.h>

#include <string>
#include <vector>

#include "common.hpp"
#include "tpx/backend/cuda/backend.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

namespace tpx::bench {
namespace {

using T = __nv_bfloat16;

struct projection {
  std::string model, name;
  index_t out, in;
};

/// Deterministic values in [-0.5, 0.5) as bfloat16.
std::vector<T> noise(std::size_t n, std::uint64_t seed) {
  std::vector<T> v(n);
  for (T& x : v) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x = T(static_cast<float>((seed >> 40) & 0xFFFF) / 65536.0f - 0.5f);
  }
  return v;
}

/// Median milliseconds per call of `iters` calls of `step` (after a warm-up that sizes scratch
/// and caches plans), timed with events on `stream` between two calls of `fence`; `timer` says
/// whether this caller records the events (rank 0 of a group).
template <class Fence, class Step>
double median_ms(cudaStream_t stream, bool timer, int iters, Fence fence, Step step) {
  for (int i = 0; i < 3; ++i) step();
  std::vector<double> ms;
  cuda::event start(true), stop(true);
  for (int rep = 0; rep < 5; ++rep) {
    fence();
    if (timer) start.record(stream);
    for (int i = 0; i < iters; ++i) step();
    fence();
    if (timer) {
      stop.record(stream);
      ms.push_back(stop.since(start) / iters);
    }
  }
  return median(ms);
}

/// The same for every rank of a group, between barriers, on rank 0's stream.
template <class Step>
double time_ms(cuda::local_communicator& c, int iters, Step step) {
  return median_ms(
      c.stream(), c.rank() == 0, iters, [&] { c.barrier(); }, step);
}

/// The unsharded GEMM y = x · Wᵀ in ms (one rank, no collective).
double unsharded_ms(const projection& p, index_t tokens, int iters) {
  cuda::stream s;
  cuda::gemm_engine engine(s);
  const auto x =
      cuda::to_device(std::span<const T>(noise(static_cast<std::size_t>(tokens * p.in), 7)));
  const auto w =
      cuda::to_device(std::span<const T>(noise(static_cast<std::size_t>(p.out * p.in), 1)));
  cuda::device_buffer<T> y(static_cast<std::size_t>(tokens * p.out));
  return median_ms(
      s, true, iters, [] {},
      [&] {
        engine.gemm(gemm::gemm_args<T>{.op_b = gemm::op::transpose,
                                       .a = make_matrix<const T>(x.data(), tokens, p.in),
                                       .b = make_matrix<const T>(w.data(), p.out, p.in),
                                       .c = make_matrix(y.data(), tokens, p.out)});
      });
}

template <class Style>
void bench_style(const options& o, report& out, const projection& p, int tp, index_t tokens,
                 double unsharded) {
  constexpr bool seq_in = std::is_same_v<Style, style::colwise_sp>;
  constexpr bool seq_out = std::is_same_v<Style, style::rowwise_sp>;
  const int iters = o.quick ? 5 : 20;
  double layer_ms = 0, direct_ms = 0;
  cuda::run_local(tp, [&](cuda::local_communicator& c) {
    cuda::gemm_engine engine(c.stream());
    using layer_t = layer::linear<Style, cuda::local_backend, T>;
    const layer::linear_options opt{.name = p.name, .out_features = p.out, .in_features = p.in};
    const shard::placement wp = layer_t::weight_placement(opt, tp);
    const shard::placement bp = layer_t::bias_placement(opt, tp);
    const std::vector<index_t> ws = wp.of(c.rank()).shape(), bs = bp.of(c.rank()).shape();
    const std::vector<T> w = noise(static_cast<std::size_t>(ws[0] * ws[1]), 1 + c.rank());
    const std::vector<T> b = noise(static_cast<std::size_t>(bs[0]), 100 + c.rank());
    layer_t lin(shard::from_shard, engine, c, make_matrix<const T>(w.data(), ws[0], ws[1]), b, opt);

    // Token shards: the balanced split the SP layers use.
    const std::vector<index_t> rows =
        shard::partition::split(tokens, tp, shard::split_kind::balanced).sizes();
    const index_t own = rows[static_cast<std::size_t>(c.rank())];
    const index_t x_rows = seq_in ? own : tokens, y_rows = seq_out ? own : tokens;
    const index_t x_cols = lin.input_cols(), y_cols = lin.output_cols();
    const auto x =
        cuda::to_device(std::span<const T>(noise(static_cast<std::size_t>(x_rows * x_cols), 7)));
    cuda::device_buffer<T> y(static_cast<std::size_t>(y_rows * y_cols));
    const auto xv = make_matrix<const T>(x.data(), x_rows, x_cols);
    const auto yv = make_matrix(y.data(), y_rows, y_cols);
    const double l = time_ms(c, iters, [&] { lin.forward(xv, yv); });

    // The same work by hand: the GEMM on the rank's shard and the style's collective.
    cuda::device_buffer<T> full(
        static_cast<std::size_t>(tokens * std::max(x_cols, lin.local_shape()[0])));
    const std::span<const T> bias = lin.bias();
    const auto gemm_into = [&](matrix_view<const T> a, matrix_view<T> dst, bool with_bias) {
      engine.gemm(gemm::gemm_args<T>{.op_b = gemm::op::transpose,
                                     .a = a,
                                     .b = lin.weight(),
                                     .c = dst,
                                     .bias = with_bias ? bias : std::span<const T>()});
    };
    const double d = time_ms(c, iters, [&] {
      if constexpr (seq_in) {  // all-gather tokens, then the GEMM with its bias
        const auto gathered = make_matrix(full.data(), tokens, x_cols);
        comm::all_gather_rows<cuda::local_communicator, T>(c, xv, gathered, rows);
        gemm_into(gathered, yv, true);
      } else if constexpr (seq_out) {  // partial GEMM, reduce-scatter tokens, bias once
        const auto partial = make_matrix(full.data(), tokens, y_cols);
        gemm_into(xv, partial, false);
        comm::reduce_scatter_rows<cuda::local_communicator, T>(c, partial, yv, rows);
        engine.add_bias(yv, bias);
      } else if constexpr (std::is_same_v<typename Style::output_pair,
                                          comm::reduce_from_parallel>) {
        gemm_into(xv, yv, false);
        c.all_reduce(yv.span());
        engine.add_bias(yv, bias);
      } else {
        gemm_into(xv, yv, true);
      }
    });
    if (c.rank() == 0) layer_ms = l, direct_ms = d;
  });
  const double flop =
      2.0 * static_cast<double>(tokens) * static_cast<double>(p.out) * static_cast<double>(p.in);
  const double tflops = flop / (layer_ms * 1e-3) / 1e12, best = flop / (unsharded * 1e-3) / 1e12;
  out.row(
      fmt::format("{:>10} {:>8} {:>12} {:>3} {:>6} {:>10.1f} {:>10.1f} {:>8.3f} {:>9.1f} {:>9.1f}",
                  p.model, p.name, Style::name, tp, tokens, layer_ms * 1e3, direct_ms * 1e3,
                  layer_ms / direct_ms, tflops, best),
      fmt::format("{{\"bench\":\"gpu\",\"model\":\"{}\",\"layer\":\"{}\",\"style\":\"{}\","
                  "\"tp\":{},\"tokens\":{},\"layer_us\":{:.2f},\"direct_us\":{:.2f},"
                  "\"overhead\":{:.4f},\"tflops\":{:.2f},\"unsharded_tflops\":{:.2f}}}",
                  p.model, p.name, Style::name, tp, tokens, layer_ms * 1e3, direct_ms * 1e3,
                  layer_ms / direct_ms, tflops, best),
      layer_ms / direct_ms <= 1.02);
}

}  // namespace

void bench_gpu(const options& o, report& out) {
  std::string why;
  expect(cuda::device_available(&why), "--gpu: no usable CUDA device ({})", why);
  cudaDeviceProp prop{};
  TPX_CUDA(cudaGetDeviceProperties(&prop, 0));
  out.line(fmt::format("# gpu: {} ({} SMs, {:.0f} GiB), bfloat16, ranks sharing the device",
                       prop.name, prop.multiProcessorCount,
                       static_cast<double>(prop.totalGlobalMem) / (1 << 30)));
  out.line(fmt::format("{:>10} {:>8} {:>12} {:>3} {:>6} {:>10} {:>10} {:>8} {:>9} {:>9}", "model",
                       "layer", "style", "tp", "tokens", "layer_us", "direct_us", "overhead",
                       "TFLOP/s", "unshard"));
  std::vector<projection> shapes = {{"llama-8b", "qkv", 6144, 4096},
                                    {"llama-8b", "o", 4096, 4096},
                                    {"llama-8b", "gate_up", 28672, 4096},
                                    {"llama-8b", "down", 4096, 14336}};
  if (!o.quick) {
    shapes.push_back({"llama-70b", "qkv", 10240, 8192});
    shapes.push_back({"llama-70b", "o", 8192, 8192});
    shapes.push_back({"llama-70b", "gate_up", 57344, 8192});
    shapes.push_back({"llama-70b", "down", 8192, 28672});
  }
  const std::vector<index_t> token_counts =
      o.quick ? std::vector<index_t>{16, 512} : std::vector<index_t>{1, 16, 512, 4096};
  std::vector<int> tps{1};
  for (const int tp : o.tps)
    if (tp > 1) tps.push_back(tp);
  for (const projection& p : shapes)
    for (const index_t tokens : token_counts) {
      const double unsharded = unsharded_ms(p, tokens, o.quick ? 5 : 20);
      const bool colwise = p.name == "qkv" || p.name == "gate_up";
      for (const int tp : tps) {
        if (colwise) {
          bench_style<style::colwise<>>(o, out, p, tp, tokens, unsharded);
          bench_style<style::colwise_sp>(o, out, p, tp, tokens, unsharded);
        } else {
          bench_style<style::rowwise<>>(o, out, p, tp, tokens, unsharded);
          bench_style<style::rowwise_sp>(o, out, p, tp, tokens, unsharded);
        }
      }
    }
}

}  // namespace tpx::bench
