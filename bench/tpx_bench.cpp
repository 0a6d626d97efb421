// tpx-bench: nccl-tests-style measurements of the host backend.
//
//   collectives  all_reduce, all_gather, reduce_scatter on thread ranks, sizes 1 KB … 64 MB,
//                tp ∈ {2, 4, 8}: time, algbw, busbw, #wrong; and this machine's memcpy bandwidth
//                measured in the same run, as the ceiling a shared-memory collective can reach.
//                Under mpirun -np N: the same on the N MPI processes, each row with its time ÷
//                the thread ranks' of the same run.
//   layers       each linear style's forward and backward: time, GFLOP/s, and the overhead ratio
//                layer ÷ (the same CBLAS GEMMs and the same collective called by hand), measured
//                interleaved in the same run (goal ≤ 1.05).
//   blocks       Llama and Mixtral decoder layers in TP and TP+SP mode: forward + backward time,
//                bytes moved per rank, fraction of the time inside collectives; and a Llama
//                layer at tp 1 against its own GEMMs alone at 32 … 2048 tokens (goal ≤ 1.3 at
//                512); see bench/blocks.cpp.
//
//   io           shard-on-read from a page-cached safetensors file, each style and tp: a rank's
//                read throughput ÷ a plain sequential read of the same file in the same run
//                (goal ≥ 0.8), and bytes read ÷ the shard's bytes (goal 1.0); see bench/io.cpp.
//
//   plan         resolving the plan of real models (Llama-3.1-405B, a 2,001-tensor Llama,
//                Mixtral-8x22B with EP, DeepSeek-V3) from their tensor lists and from a parsed
//                safetensors header (goal for ~2,000 tensors: well under 10 ms); see
//                bench/plan.cpp.
//
//   model        a whole causal LM from a synthetic bf16 checkpoint tpx writes: each rank's load
//                time against a sequential read of as many bytes, and forward time per token, at
//                tp 1, 2, 4; see bench/model.cpp.
//
//   decode       generation through the KV cache, weights held in f32 and in bf16: prefill and
//                decode tokens per second at batch 1, 8, 32 and tp 1, 2, 4 (or --tp), each
//                step against the floor its parameter bytes set at this machine's read
//                bandwidth, collectives per decode step, cache bytes per token per rank; with
//                --model-dir, a real checkpoint at batch 1 and 8; see bench/decode.cpp.
//
//   tokenize     (only when asked; built when Meson finds PCRE2) the tokenizer's encoding speed on
//                --text FILE, with the ids' checksum; see bench/tokenize.cpp and
//                bench/compare/encode.py (Hugging Face tokenizers beside it).
//
//   gpu          (only when asked; built when Meson finds CUDA and NCCL) the linear styles on the
//                cuda backend, ranks sharing one GPU: layer time ÷ the same cuBLASLt GEMMs and
//                collectives called by hand, and TFLOP/s next to the unsharded GEMM, for
//                Llama-8B/70B projections at tokens 1 … 4096; see bench/gpu.cpp.
//
//   tpx-bench [--collectives] [--layers] [--blocks] [--io] [--plan] [--model] [--decode] [--gpu]
//             [--tokenize TOKENIZER --text FILE] [--quick]
//             [--tp 2,4,8] [--max-bytes N] [--model-dir DIR] [--json]
//
// Times are medians over batches; each batch runs back to back between two barriers, so the
// reported time is per call including the group's synchronisation. Buffers rotate so that small
// sizes are not served from cache alone.

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cli.hpp"
#include "common.hpp"
#include "tpx/tpx.hpp"
#if TPX_HAVE_MPI
#include "tpx/backend/mpi/communicator.hpp"
#endif

namespace {

using namespace tpx;
using bench::clock_type;
using bench::cpu_model;
using bench::median;
using bench::options;
using bench::report;
using bench::since;

constexpr std::string_view usage =
    "usage: tpx-bench [--collectives] [--layers] [--blocks] [--io] [--plan] [--model] [--decode]\n"
    "                 [--gpu] [--tokenize T --text F] [--quick] [--tp 2,4,8] [--max-bytes N]\n"
    "                 [--json]\n"
    "\n"
    "Measures tpx side by side with what it should cost, in one run. Modes (default: every host\n"
    "mode; name some to run only those):\n"
    "  --collectives  all_reduce, all_gather, reduce_scatter on thread ranks, 1 KB up to\n"
    "                 --max-bytes: time, algbw, busbw, #wrong, beside this machine's memcpy;\n"
    "                 under mpirun -np N (the only mode there) also on the N MPI processes,\n"
    "                 each row with its time ÷ the N thread ranks' of the same run\n"
    "  --layers       each linear style forward and backward: GFLOP/s and the overhead over the\n"
    "                 same GEMMs and collective called by hand (goal <= 1.05)\n"
    "  --blocks       Llama and Mixtral decoder layers, TP and TP+SP: time, bytes moved, the\n"
    "                 share of time in collectives; a Llama layer at tp 1 over its own GEMMs\n"
    "                 at 32 ... 2048 tokens (goal <= 1.3 at 512)\n"
    "  --io           shard-on-read: a rank's read throughput over a sequential read (goal >= "
    "0.8)\n"
    "                 and bytes read over the shard's bytes (goal 1.0)\n"
    "  --plan         plan resolution of real models (goal: well under 10 ms for ~2,000 tensors)\n"
    "  --model        a causal LM from a synthetic checkpoint: load time, forward per token\n"
    "  --decode       generation through the KV cache, weights f32 and bf16: tokens/s against\n"
    "                 the bytes-per-step floor, collectives per step, cache bytes\n"
    "  --tokenize T   the tokenizer T (a tokenizer.json or a model directory; only when asked)\n"
    "                 encoding --text FILE as one text: MB/s, tokens/s, the ids' checksum\n"
    "                 (bench/compare/encode.py times Hugging Face tokenizers beside it)\n"
    "  --gpu          the linear styles on the cuda backend (only when asked; needs a GPU and a\n"
    "                 build with CUDA): overhead over cuBLASLt + NCCL by hand (goal <= 1.02)\n"
    "Options:\n"
    "  --quick        small sizes and few repetitions (what `meson test --benchmark` runs)\n"
    "  --tp LIST      group sizes, comma separated (default 2,4,8; --decode: 1,2,4)\n"
    "  --max-bytes N  the largest collective buffer in bytes (default 64 MiB)\n"
    "  --model-dir D  --decode runs the checkpoint in D (config.json, safetensors) instead of a\n"
    "                 synthetic Llama\n"
    "  --json         one JSON object instead of the text tables\n"
    "  --help         this text\n"
    "  --version      prints the program's and tpx's version\n"
    "A row outside its goal ends in '<- outside goal', its JSON record has \"within_goal\": "
    "false,\n"
    "and a last line counts them.\n";

options parse(int argc, char** argv) {
  options o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto next = [&]() -> std::string_view {
      expect(i + 1 < argc, "{} needs a value\n{}", a, usage);
      return argv[++i];
    };
    if (a == "--collectives")
      o.collectives = true;
    else if (a == "--layers")
      o.layers = true;
    else if (a == "--blocks")
      o.blocks = true;
    else if (a == "--io")
      o.io = true;
    else if (a == "--plan")
      o.plan = true;
    else if (a == "--model")
      o.model = true;
    else if (a == "--decode")
      o.decode = true;
    else if (a == "--gpu")
      o.gpu = true;
    else if (a == "--tokenize") {
      o.tokenize = true;
      o.tokenizer = next();
    } else if (a == "--text")
      o.text = next();
    else if (a == "--quick")
      o.quick = true;
    else if (a == "--json")
      o.json = true;
    else if (a == "--max-bytes")
      o.max_bytes = cli::whole_number(a, next(), 1, std::int64_t{1} << 40);
    else if (a == "--model-dir")
      o.model_dir = next();
    else if (a == "--tp") {
      o.tps_given = true;
      o.tps.clear();
      std::string list(next());
      for (std::size_t p = 0; p <= list.size();) {
        const std::size_t q = std::min(list.find(',', p), list.size());
        o.tps.push_back(static_cast<int>(
            cli::whole_number(a, std::string_view(list).substr(p, q - p), 1, max_ranks)));
        p = q + 1;
      }
    } else if (a == "--help" || a == "-h") {
      fmt::print("{}", usage);
      std::exit(0);
    } else {
      fail("unknown option '{}'\n{}", a, usage);
    }
  }
  if (!o.collectives && !o.layers && !o.blocks && !o.io && !o.plan && !o.model && !o.decode &&
      !o.gpu && !o.tokenize)
    o.collectives = o.layers = o.blocks = o.io = o.plan = o.model = o.decode = true;
  if (o.quick) o.max_bytes = std::min<index_t>(o.max_bytes, index_t{1} << 20);
  return o;
}

#ifndef TPX_BENCH_GPU_ONLY  // tools/gpu-check builds the GPU mode alone (no BLAS on the device)
// --- memcpy ceiling -------------------------------------------------------------------------

double memcpy_gbps(index_t bytes, int repeats) {
  std::vector<char> a(static_cast<std::size_t>(bytes), 1), b(static_cast<std::size_t>(bytes));
  std::vector<double> t;
  std::memcpy(b.data(), a.data(), a.size());  // warm up, fault pages in
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = clock_type::now();
    std::memcpy(r % 2 ? a.data() : b.data(), r % 2 ? b.data() : a.data(), a.size());
    t.push_back(since(t0));
  }
  return static_cast<double>(bytes) / median(t) / 1e9;
}

// --- collectives ----------------------------------------------------------------------------

/// Times `op(buffer_index)` on every rank: median over batches of the mean time per call.
template <class Comm>
double time_on_ranks(Comm& c, int batches, const std::function<void(int)>& op,
                     double target_seconds) {
  // Calibrate the batch length on one call (the same on every rank: rank 0 decides).
  c.barrier();
  auto t0 = clock_type::now();
  op(0);
  c.barrier();
  std::vector<double> once{since(t0)};
  c.broadcast(std::span<double>(once), 0);
  const int calls = std::clamp(static_cast<int>(target_seconds / std::max(once[0], 1e-7)), 1, 1000);
  std::vector<double> per_call;
  for (int b = 0; b < batches; ++b) {
    c.barrier();
    t0 = clock_type::now();
    for (int i = 0; i < calls; ++i) op(i);
    c.barrier();
    per_call.push_back(since(t0) / calls);
  }
  return median(per_call);
}

/// Collective `k` (all_reduce, all_gather, reduce_scatter) of `bytes` of floats on this rank of
/// `c`: the median time per call, and how many elements this rank got wrong in a checked call.
template <class Comm>
std::pair<double, index_t> measure_collective(Comm& c, int k, index_t bytes, const options& o) {
  const int tp = c.size();
  const index_t count = bytes / static_cast<index_t>(sizeof(float));  // total elements
  const std::vector<index_t> counts = shard::split_sizes(count, tp, shard::split_kind::balanced);
  const index_t mine = counts[static_cast<std::size_t>(c.rank())];
  // Rotate through enough buffers to exceed the caches for small sizes.
  const int rotate = static_cast<int>(std::clamp<index_t>((index_t{32} << 20) / bytes, 1, 16));
  std::vector<std::vector<float>> in(static_cast<std::size_t>(rotate)), res(in.size());
  const index_t in_n = k == 1 ? mine : count, out_n = k == 2 ? mine : count;
  for (int b = 0; b < rotate; ++b) {
    in[static_cast<std::size_t>(b)].assign(static_cast<std::size_t>(in_n), 1.0f);
    res[static_cast<std::size_t>(b)].assign(static_cast<std::size_t>(out_n), 0.0f);
  }
  const auto op = [&](int i) {
    auto& a = in[static_cast<std::size_t>(i % rotate)];
    auto& r = res[static_cast<std::size_t>(i % rotate)];
    if (k == 0)
      c.all_reduce(std::span<float>(a));
    else if (k == 1)
      c.all_gather(std::span<const float>(a), std::span<float>(r), counts);
    else
      c.reduce_scatter(std::span<const float>(a), std::span<float>(r), counts);
  };
  const double s = time_on_ranks(c, o.quick ? 3 : 7, op, o.quick ? 0.005 : 0.03);
  // Check: fresh values, one call, compare with the analytic result.
  auto& a = in[0];
  for (index_t i = 0; i < in_n; ++i)
    a[static_cast<std::size_t>(i)] = static_cast<float>(c.rank() + 1);
  op(0);
  const auto& got = k == 0 ? a : res[0];
  index_t bad = 0;
  for (index_t i = 0; i < static_cast<index_t>(got.size()); ++i) {
    float want = static_cast<float>(tp * (tp + 1) / 2);
    if (k == 1) {  // element i came from the rank whose block holds i
      index_t r = 0, end = counts[0];
      while (i >= end) end += counts[static_cast<std::size_t>(++r)];
      want = static_cast<float>(r + 1);
    }
    bad += got[static_cast<std::size_t>(i)] != want;
  }
  return {s, bad};
}

#if TPX_HAVE_MPI
/// The processes of the MPI job tpx-bench runs in, when an MPI launcher started it.
mpi::communicator* processes = nullptr;

/// Waits for every process without spinning: MPI's barrier polls a core, which would take the
/// thread ranks' time while rank 0 measures them.
void idle_barrier(mpi::communicator& c) {
  MPI_Request request;
  TPX_MPI(MPI_Ibarrier(c.handle(), &request));
  for (int done = 0; !done; std::this_thread::sleep_for(std::chrono::microseconds(200)))
    TPX_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
}
#endif

void bench_collectives(const options& o, report& out) {
  const char* names[] = {"all_reduce", "all_gather", "reduce_scatter"};
  const comm::kind kinds[] = {comm::kind::all_reduce, comm::kind::all_gather,
                              comm::kind::reduce_scatter};
  const auto header = [&](const std::string& title, bool ratio) {
    out.line(fmt::format("#\n# {}", title));
    out.line(fmt::format("# {:>12} {:>12} {:>15} {:>10} {:>9} {:>9} {:>7}{}", "size(B)", "count",
                         "op", "time(us)", "algbw", "busbw", "#wrong",
                         ratio ? fmt::format(" {:>10}", "vs threads") : ""));
    out.line(fmt::format("# {:>12} {:>12} {:>15} {:>10} {:>9} {:>9} {:>7}{}", "", "(elements)", "",
                         "", "(GB/s)", "(GB/s)", "",
                         ratio ? fmt::format(" {:>10}", "(time)") : ""));
  };
  const auto print = [&](const char* ranks, int tp, int k, index_t bytes, double seconds,
                         index_t bad, std::optional<double> vs_threads) {
    const index_t count = bytes / static_cast<index_t>(sizeof(float));
    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    const double busbw = algbw * comm::bus_factor(kinds[k], tp);
    out.row(
        fmt::format("  {:>12} {:>12} {:>15} {:>10.1f} {:>9.2f} {:>9.2f} {:>7}{}", bytes, count,
                    names[k], seconds * 1e6, algbw, busbw, bad,
                    vs_threads ? fmt::format(" {:>10.2f}", *vs_threads) : ""),
        fmt::format(
            R"({{"kind":"collective","ranks":"{}","op":"{}","tp":{},"bytes":{},"count":{},"time_us":{:.3f},"algbw_gbps":{:.4f},"busbw_gbps":{:.4f},"wrong":{}{}}})",
            ranks, names[k], tp, bytes, count, seconds * 1e6, algbw, busbw, bad,
            vs_threads ? fmt::format(",\"vs_threads\":{:.4f}", *vs_threads) : ""),
        bad == 0);
  };
  bool measures = true;  // this process times the thread ranks (under MPI: rank 0 alone)
#if TPX_HAVE_MPI
  if (processes != nullptr) measures = processes->rank() == 0;
#endif
  if (measures) {
    const double copy = memcpy_gbps(index_t{64} << 20, o.quick ? 3 : 9);
    out.line(
        fmt::format("# memcpy bandwidth of this machine, one thread, 64 MB: {:.2f} GB/s", copy));
    if (o.json)
      out.records.push_back(
          fmt::format(R"({{"kind":"memcpy","bytes":{},"gbps":{:.4f}}})", 64 << 20, copy));
  }
  for (const int tp : o.tps) {
    std::vector<double> threads_time;  // per (bytes, op), for the MPI table's ratio
    if (measures) {
      header(fmt::format("host collectives, tp = {} thread ranks, float, sum", tp), false);
      for (index_t bytes = 1024; bytes <= o.max_bytes; bytes *= 4)
        for (int k = 0; k < 3; ++k) {
          double seconds = 0;
          std::vector<index_t> wrong(static_cast<std::size_t>(tp));
          host::run(tp, [&](host::communicator& c) {
            const auto [s, bad] = measure_collective(c, k, bytes, o);
            wrong[static_cast<std::size_t>(c.rank())] = bad;
            if (c.rank() == 0) seconds = s;
          });
          index_t bad = 0;
          for (const index_t w : wrong) bad += w;
          threads_time.push_back(seconds);
          print("threads", tp, k, bytes, seconds, bad, std::nullopt);
        }
    }
#if TPX_HAVE_MPI
    if (processes == nullptr) continue;
    idle_barrier(*processes);  // the other processes waited while rank 0 timed the threads
    header(fmt::format("host collectives, tp = {} MPI processes (mpi::communicator), float, sum; "
                       "time ÷ the thread ranks' above",
                       tp),
           true);
    std::size_t at = 0;
    for (index_t bytes = 1024; bytes <= o.max_bytes; bytes *= 4)
      for (int k = 0; k < 3; ++k, ++at) {
        auto [seconds, bad] = measure_collective(*processes, k, bytes, o);
        processes->all_reduce(std::span<index_t>(&bad, 1));
        if (processes->rank() == 0)
          print("mpi", tp, k, bytes, seconds, bad, seconds / threads_time[at]);
      }
#endif
  }
}

// --- layers ---------------------------------------------------------------------------------

template <class T>
void sgemm(bool ta, bool tb, index_t m, index_t n, index_t k, const T* a, index_t lda, const T* b,
           index_t ldb, T* c, index_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f, c, static_cast<int>(ldc));
}

void add_bias(float* y, index_t rows, index_t cols, const float* b) {
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) y[i * cols + j] += b[j];
}

/// One style's layer against the same work done by hand with CBLAS and the communicator.
template <class Style>
void bench_layer(const options& o, report& out, int tp, index_t tokens, index_t outf, index_t inf) {
  using layer_t = layer::linear<Style, host::backend, float>;
  std::vector<float> w(static_cast<std::size_t>(outf * inf), 0.01f),
      b(static_cast<std::size_t>(outf), 0.1f);
  host::gemm_engine engine;
  double fwd = 0, fwd_direct = 0, bwd = 0, bwd_direct = 0;
  host::run(tp, [&](host::communicator& c) {
    layer_t l(engine, c, make_matrix<const float>(w.data(), outf, inf), b,
              {.name = "bench", .out_features = outf, .in_features = inf});
    const index_t xi = l.input_cols(), yo = l.output_cols();
    const index_t lo = l.local_shape()[0], li = l.local_shape()[1];
    std::vector<float> x(static_cast<std::size_t>(tokens * xi), 0.5f),
        y(static_cast<std::size_t>(tokens * yo)), dy(y.size(), 0.25f), dx(x.size());
    // Hand-written baseline buffers: contiguous local weights and scratch.
    std::vector<float> wl(static_cast<std::size_t>(lo * li), 0.01f),
        bl(l.bias().begin(), l.bias().end()),
        tmp(static_cast<std::size_t>(tokens * std::max(lo, li) * tp +
                                     tokens * std::max(outf, inf))),
        dw(wl.size()), db(bl.size());
    const auto xv = make_matrix<const float>(x.data(), tokens, xi);
    const auto yv = make_matrix(y.data(), tokens, yo);
    const auto dyv = make_matrix<const float>(dy.data(), tokens, yo);
    const auto dxv = make_matrix(dx.data(), tokens, xi);
    const std::vector<index_t> counts(l.counts().begin(), l.counts().end());
    const shard::interval own = l.slice();
    constexpr bool gathered = std::is_same_v<Style, style::colwise_gathered>;
    constexpr bool split_in = std::is_same_v<Style, style::rowwise_split>;
    constexpr bool row = Style::split_dim == 1;

    // [tokens, width] column blocks of every rank → [tokens, full]: one flat all-gather into
    // `staging`, then one memcpy per row and block.
    const auto gather_cols_by_hand = [&](host::communicator& cm, const float* local, index_t width,
                                         float* staging, float* full, index_t full_cols) {
      std::vector<index_t> n(counts);
      for (auto& v : n) v *= tokens;
      cm.all_gather(std::span<const float>(local, static_cast<std::size_t>(tokens * width)),
                    std::span<float>(staging, static_cast<std::size_t>(tokens * full_cols)), n);
      index_t off = 0;
      for (const index_t cols : counts) {
        for (index_t t = 0; t < tokens; ++t)
          std::memcpy(full + t * full_cols + off, staging + off * tokens + t * cols,
                      static_cast<std::size_t>(cols) * sizeof(float));
        off += cols;
      }
    };
    // Forward by hand: GEMM (+ bias) and the style's collective.
    const auto direct_forward = [&] {
      const float* xin = split_in ? x.data() + own.begin : x.data();
      float* target = gathered ? tmp.data() : y.data();
      const index_t ldy = gathered ? lo : yo;
      sgemm<float>(false, true, tokens, lo, li, xin, xi, wl.data(), li, target, ldy);
      if (row) {
        c.all_reduce(std::span<float>(y));
        add_bias(y.data(), tokens, yo, bl.data());
      } else {
        add_bias(target, tokens, lo, bl.data());
      }
      if (gathered)
        gather_cols_by_hand(c, tmp.data(), lo, tmp.data() + tokens * lo, y.data(), outf);
    };
    // Backward by hand: dX GEMM and its collective, dW GEMM, db.
    const auto direct_backward = [&] {
      const float* dyl = gathered ? dy.data() + own.begin : dy.data();
      const float* xin = split_in ? x.data() + own.begin : x.data();
      float* dxl = split_in ? tmp.data() : dx.data();
      sgemm<float>(false, false, tokens, li, lo, dyl, yo, wl.data(), li, dxl, split_in ? li : xi);
      if (!row) c.all_reduce(std::span<float>(dx));
      if (split_in) gather_cols_by_hand(c, dxl, li, tmp.data() + tokens * li, dx.data(), inf);
      sgemm<float>(true, false, lo, li, tokens, dyl, yo, xin, xi, dw.data(), li);
      std::fill(db.begin(), db.end(), 0.0f);
      for (index_t t = 0; t < tokens; ++t)
        for (index_t j = 0; j < lo; ++j) db[static_cast<std::size_t>(j)] += dyl[t * yo + j];
    };
    const int rounds = o.quick ? 3 : 9;
    std::vector<double> f, fd, bw, bd;
    const double target = o.quick ? 0.01 : 0.05;
    for (int r = 0; r < rounds; ++r) {  // interleaved, so drift hits both sides alike
      f.push_back(time_on_ranks(
          c, 1, [&](int) { l.forward(xv, yv); }, target));
      fd.push_back(time_on_ranks(
          c, 1, [&](int) { direct_forward(); }, target));
      bw.push_back(time_on_ranks(
          c, 1, [&](int) { l.backward(xv, dyv, dxv); }, target));
      bd.push_back(time_on_ranks(
          c, 1, [&](int) { direct_backward(); }, target));
    }
    if (c.rank() == 0) {
      fwd = median(f);
      fwd_direct = median(fd);
      bwd = median(bw);
      bwd_direct = median(bd);
    }
  });
  const double flops = 2.0 * static_cast<double>(tokens * outf * inf);  // whole layer, all ranks
  out.row(
      fmt::format("  {:>22} {:>3} {:>6} {:>6} {:>6} {:>10.1f} {:>8.2f} {:>7.3f} {:>10.1f} {:>8.2f} "
                  "{:>7.3f}",
                  Style::name, tp, tokens, outf, inf, fwd * 1e6, flops / fwd / 1e9,
                  fwd / fwd_direct, bwd * 1e6, 2 * flops / bwd / 1e9, bwd / bwd_direct),
      fmt::format(
          R"({{"kind":"layer","style":"{}","tp":{},"tokens":{},"out":{},"in":{},"forward_us":{:.3f},"forward_gflops":{:.4f},"forward_overhead":{:.4f},"backward_us":{:.3f},"backward_gflops":{:.4f},"backward_overhead":{:.4f}}})",
          Style::name, tp, tokens, outf, inf, fwd * 1e6, flops / fwd / 1e9, fwd / fwd_direct,
          bwd * 1e6, 2 * flops / bwd / 1e9, bwd / bwd_direct),
      fwd / fwd_direct <= 1.05 && bwd / bwd_direct <= 1.05);
}

void bench_layers(const options& o, report& out) {
  out.line("#\n# linear layers, float, host backend; GFLOP/s of the whole layer over all ranks;");
  out.line(
      "# overhead = layer time ÷ the same CBLAS GEMMs + collective called by hand (goal ≤ 1.05)");
  out.line(fmt::format("# {:>22} {:>3} {:>6} {:>6} {:>6} {:>10} {:>8} {:>7} {:>10} {:>8} {:>7}",
                       "style", "tp", "tokens", "out", "in", "fwd(us)", "GFLOP/s", "ovh", "bwd(us)",
                       "GFLOP/s", "ovh"));
  const index_t tokens = o.quick ? 16 : 128, outf = o.quick ? 256 : 1024, inf = o.quick ? 192 : 768;
  for (const int tp : o.tps) {
    if (tp > 4 && !o.quick) continue;  // 2 cores: beyond 4 thread ranks the GEMMs only queue
    bench_layer<style::colwise<>>(o, out, tp, tokens, outf, inf);
    bench_layer<style::colwise_gathered>(o, out, tp, tokens, outf, inf);
    bench_layer<style::rowwise<>>(o, out, tp, tokens, inf, outf);
    bench_layer<style::rowwise_split>(o, out, tp, tokens, inf, outf);
  }
}
#endif

int run(const options& o) {
  report out{o.json, {}};
#if TPX_HAVE_MPI
  out.silent = processes != nullptr && processes->rank() != 0;
#endif
  out.line(fmt::format("# tpx-bench {} | fmt {} | {}", tpx::version, FMT_VERSION,
#ifdef OPENBLAS_VERSION
                       OPENBLAS_VERSION
#else
                       "CBLAS"
#endif
                       ));
  out.line(fmt::format(
      "# host: {}, {} hardware threads | OPENBLAS_NUM_THREADS={}", cpu_model(),
      std::thread::hardware_concurrency(),
      std::getenv("OPENBLAS_NUM_THREADS") ? std::getenv("OPENBLAS_NUM_THREADS") : "(unset)"));
  out.line(fmt::format("# command: {}", o.command));
#ifndef TPX_BENCH_GPU_ONLY
  if (o.collectives) bench_collectives(o, out);
  if (o.layers) bench_layers(o, out);
  if (o.blocks) bench::bench_blocks(o, out);
  if (o.io) bench::bench_io(o, out);
  if (o.plan) bench::bench_plan(o, out);
  if (o.model) bench::bench_model(o, out);
  if (o.decode) bench::bench_decode(o, out);
  if (o.tokenize) {
#ifdef TPX_BENCH_TEXT
    bench::bench_tokenize(o, out);
#else
    fail("--tokenize: this tpx-bench was built without PCRE2 (Debian libpcre2-dev)");
#endif
  }
#else
  expect(!o.collectives && !o.layers && !o.blocks && !o.io && !o.plan && !o.model && !o.decode,
         "this build (tools/gpu-check) has the --gpu mode only");
#endif
  if (o.gpu) {
#ifdef TPX_BENCH_GPU
    bench::bench_gpu(o, out);
#else
    fail(
        "--gpu: this tpx-bench was built without the cuda backend (Meson found no "
        "CUDA toolkit with cuBLASLt and NCCL; configure with -Dcuda=enabled to insist)");
#endif
  }
  out.line(fmt::format("# {} rows outside their goal", out.outside));
  if (o.json && !out.silent) {
    fmt::print(
        "{{\"tpx\":\"{}\",\"command\":\"{}\",\"cpu\":\"{}\",\"outside_goal\":{},"
        "\"results\":[\n  {}\n]}}\n",
        tpx::version, o.command, cpu_model(), out.outside, fmt::join(out.records, ",\n  "));
  }
  return 0;
}

}  // namespace

namespace {

/// Under an MPI launcher: --collectives on the job's processes, next to as many thread ranks
/// timed by rank 0 in the same run.
int run_processes(int argc, char** argv) {
#if TPX_HAVE_MPI
  mpi::environment env(argc, argv);
  mpi::communicator world = mpi::communicator::world();
  options o;
  if (const std::optional<int> status = cli::agreed_or_exit("tpx-bench", world, [&] {
        o = parse(argc, argv);
        expect(o.collectives && !o.layers && !o.blocks && !o.io && !o.plan && !o.model &&
                   !o.decode && !o.gpu,
               "under an MPI launcher tpx-bench runs --collectives only (the MPI processes next to "
               "thread ranks); run the other modes without the launcher");
        if (o.tps != options{}.tps)  // --tp given
          for (const int tp : o.tps) cli::expect_one_rank_per_process("", tp, world.size());
        o.tps = {world.size()};
      }))
    return *status;
  processes = &world;
  return run(o);
#else
  (void)argc, (void)argv;
  return 2;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-bench", argc, argv, [](int argc, char** argv) {
#if TPX_HAVE_MPI
    if (tpx::cli::wants_processes(argc, argv)) return run_processes(argc, argv);
#endif
    return run(parse(argc, argv));
  });
}
