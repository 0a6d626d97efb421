// tpx-demo: one Llama-style decoder layer (or a Mixtral-style one with --moe) split over ranks —
// threads of this process, or the processes of an MPI job (mpirun -np N tpx-demo) — in TP or TP+SP
// mode, run forward and backward, checked against the unsharded layer in fp64
// (tests/oracle.hpp, plain loops), printing each part's style and shards, the bytes every
// collective moved and the time.
//
//   tpx-demo [--tp N] [--backend threads|mpi] [--sp] [--moe] [--ep N] [--tokens T] [--hidden H] [--heads N]
//            [--kv-heads N] [--head-dim D] [--inter I] [--experts E] [--top-k K]
//            [--safetensors PATH [--layer L]]
//
// With --safetensors the layer's weights are read from a checkpoint with Hugging Face names
// (model.layers.L.self_attn.q_proj.weight, …, block_sparse_moe.experts.N.w1.weight with --moe);
// hidden, head_dim, inter and the expert count come from the tensors' shapes, the head counts
// from --heads and --kv-heads.

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "block_harness.hpp"
#include "cli.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/tpx.hpp"
#if TPX_HAVE_MPI
#include "tpx/backend/mpi/backend.hpp"
#endif

namespace {

using namespace tpx;
using layer::block_mode;

struct options {
  int tp = 4, ep = 1;
  bool tp_given = false;
  std::string backend;  ///< empty: by the launcher (mpi under one, else threads)
  bool sp = false, moe = false;
  index_t tokens = 8, hidden = 64, heads = 8, kv_heads = 4, head_dim = 8, inter = 172;
  index_t experts = 8, top_k = 2;
  std::optional<std::string> safetensors;
  index_t layer = 0;
};

constexpr std::string_view usage =
    "usage: tpx-demo [--tp N] [--backend threads|mpi] [--sp] [--moe] [--ep N] [--tokens T]\n"
    "                [--hidden H] [--heads N]\n"
    "                [--kv-heads N] [--head-dim D] [--inter I] [--experts E] [--top-k K]\n"
    "                [--safetensors PATH [--layer L]]\n"
    "\n"
    "One Llama decoder layer (Mixtral with --moe) on N ranks, forward and backward,\n"
    "checked against the unsharded layer in fp64; prints each part's style and shards, the bytes\n"
    "each collective moved and the time. Exits 0 when every output and gradient agrees, 1 when\n"
    "not, 2 on an error.\n"
    "\n"
    "  --tp N            ranks (default 4; under MPI the number of processes)\n"
    "  --backend B       threads: N threads of this process; mpi: one rank per process of an\n"
    "                    MPI job (mpirun -np N tpx-demo), rank 0 printing (default: mpi when\n"
    "                    started by an MPI launcher, else threads)\n"
    "  --sp              sequence parallel: activations split by tokens between the blocks\n"
    "  --moe             a Mixtral layer: router, top-k routing, experts\n"
    "  --ep N            experts over N ranks (1, or equal to --tp; needs --moe)\n"
    "  --tokens T        tokens in the batch (default 8)\n"
    "  --hidden H        hidden size (default 64)\n"
    "  --heads N         query heads (default 8)\n"
    "  --kv-heads N      KV heads (default 4)\n"
    "  --head-dim D      head dim, even (default 8)\n"
    "  --inter I         MLP / expert intermediate size (default 172)\n"
    "  --experts E       experts with --moe (default 8)\n"
    "  --top-k K         experts per token (default 2)\n"
    "  --safetensors PATH  read the layer's weights from a checkpoint with Hugging Face names\n"
    "                    (hidden, head_dim, inter and experts from the tensors' shapes)\n"
    "  --layer L         which layer of that checkpoint (default 0)\n"
    "  --help            this text\n"
    "  --version         prints the program's and tpx's version\n";

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto text = [&]() -> std::string {
      expect(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    const auto number = [&](std::int64_t lo, std::int64_t hi) {
      return cli::whole_number(a, text(), lo, hi);
    };
    constexpr std::int64_t big = std::int64_t{1} << 20;
    if (a == "--tp") {
      o.tp = static_cast<int>(number(1, max_ranks));
      o.tp_given = true;
    } else if (a == "--backend") {
      o.backend = text();
      expect(o.backend == "threads" || o.backend == "mpi",
             "--backend must be threads or mpi, got '{}'", o.backend);
    }
    else if (a == "--ep")
      o.ep = static_cast<int>(number(1, max_ranks));
    else if (a == "--sp")
      o.sp = true;
    else if (a == "--moe")
      o.moe = true;
    else if (a == "--tokens")
      o.tokens = number(1, big);
    else if (a == "--hidden")
      o.hidden = number(1, big);
    else if (a == "--heads")
      o.heads = number(1, big);
    else if (a == "--kv-heads")
      o.kv_heads = number(1, big);
    else if (a == "--head-dim")
      o.head_dim = number(2, big);
    else if (a == "--inter")
      o.inter = number(1, big);
    else if (a == "--experts")
      o.experts = number(1, 65536);
    else if (a == "--top-k")
      o.top_k = number(1, 65536);
    else if (a == "--safetensors")
      o.safetensors = text();
    else if (a == "--layer")
      o.layer = number(0, 65535);
    else if (a == "--help" || a == "-h") {
      fmt::print("{}", usage);
      std::exit(0);
    } else {
      fail("unknown option '{}'\n{}", a, usage);
    }
  }
  return o;
}

/// The checks that need the final tp (under MPI, the number of processes).
options checked(options o) {
  expect(o.ep == 1 || o.ep == o.tp,
         "--ep {} must be 1 or equal --tp {} (expert parallelism shares the TP ranks)", o.ep, o.tp);
  expect(o.ep == 1 || o.moe, "--ep needs --moe");
  expect(o.head_dim % 2 == 0, "--head-dim must be even (RoPE rotates pairs), got {}", o.head_dim);
  return o;
}

/// Random weights of the configured shape.
test::block_weights random_block(const options& o) {
  test::block_weights w;
  const index_t nq = o.heads * o.head_dim, nkv = o.kv_heads * o.head_dim;
  const auto scaled = [](test::dense m, double s) {
    for (double& v : m.v) v *= s;
    return m;
  };
  const double in = 1.0 / std::sqrt(static_cast<double>(o.hidden));
  w.norm1 = std::vector<double>(static_cast<std::size_t>(o.hidden), 1.0);
  w.norm2 = w.norm1;
  w.q = scaled(test::random_dense(nq, o.hidden, 1), in);
  w.k = scaled(test::random_dense(nkv, o.hidden, 2), in);
  w.v = scaled(test::random_dense(nkv, o.hidden, 3), in);
  w.o = scaled(test::random_dense(o.hidden, nq, 4), 1.0 / std::sqrt(static_cast<double>(nq)));
  w.inter = o.inter;
  w.gate_up = scaled(test::random_dense(2 * o.inter, o.hidden, 5), in);
  w.down = scaled(test::random_dense(o.hidden, o.inter, 6),
                  1.0 / std::sqrt(static_cast<double>(o.inter)));
  if (o.moe) {
    w.moe = true;
    w.routing = {.top_k = o.top_k};
    w.experts.router = scaled(test::random_dense(o.experts, o.hidden, 7), in);
    w.experts.inter = o.inter;
    for (index_t e = 0; e < o.experts; ++e) {
      w.experts.gate_up.push_back(
          scaled(test::random_dense(2 * o.inter, o.hidden, 10 + 2 * e), in));
      w.experts.down.push_back(scaled(test::random_dense(o.hidden, o.inter, 11 + 2 * e),
                                      1.0 / std::sqrt(static_cast<double>(o.inter))));
    }
  }
  return w;
}

/// Weights read from a checkpoint with Hugging Face names; sets the dims from their shapes.
test::block_weights read_block(options& o) {
  const io::checkpoint ckpt(*o.safetensors);
  const std::string p = fmt::format("model.layers.{}.", o.layer);
  const auto matrix = [&](const std::string& name) {
    const io::tensor_info& t = ckpt.info(p + name);
    expect(t.shape.size() == 2, "'{}{}' has {} dims but must be a matrix", p, name, t.shape.size());
    test::dense m(t.shape[0], t.shape[1]);
    m.v = ckpt.read<double>(p + name);
    return m;
  };
  const auto vector = [&](const std::string& name) { return ckpt.read<double>(p + name); };
  test::block_weights w;
  w.q = matrix("self_attn.q_proj.weight");
  w.k = matrix("self_attn.k_proj.weight");
  w.v = matrix("self_attn.v_proj.weight");
  w.o = matrix("self_attn.o_proj.weight");
  w.norm1 = vector("input_layernorm.weight");
  w.norm2 = vector("post_attention_layernorm.weight");
  o.hidden = w.q.cols;
  expect(o.heads >= 1 && w.q.rows % o.heads == 0,
         "q_proj has {} rows, which --heads {} does not divide", w.q.rows, o.heads);
  o.head_dim = w.q.rows / o.heads;
  expect(w.k.rows == o.kv_heads * o.head_dim,
         "k_proj has {} rows but --kv-heads {} × head_dim {} = {}", w.k.rows, o.kv_heads,
         o.head_dim, o.kv_heads * o.head_dim);
  const auto stack = [](const test::dense& a, const test::dense& b) {
    test::dense m(a.rows + b.rows, a.cols);
    std::copy(a.v.begin(), a.v.end(), m.v.begin());
    std::copy(b.v.begin(), b.v.end(), m.v.begin() + static_cast<std::ptrdiff_t>(a.v.size()));
    return m;
  };
  if (!o.moe) {
    const test::dense gate = matrix("mlp.gate_proj.weight");
    w.gate_up = stack(gate, matrix("mlp.up_proj.weight"));
    w.down = matrix("mlp.down_proj.weight");
    o.inter = w.inter = gate.rows;
    return w;
  }
  w.moe = true;
  w.experts.router = matrix("block_sparse_moe.gate.weight");
  o.experts = w.experts.router.rows;
  w.routing = {.top_k = o.top_k};
  for (index_t e = 0; e < o.experts; ++e) {
    const std::string ex = fmt::format("block_sparse_moe.experts.{}.", e);
    const test::dense w1 = matrix(ex + "w1.weight");
    w.experts.gate_up.push_back(stack(w1, matrix(ex + "w3.weight")));
    w.experts.down.push_back(matrix(ex + "w2.weight"));
    o.inter = w.experts.inter = w1.rows;
  }
  return w;
}

std::string sizes(const std::vector<index_t>& v) {
  return fmt::format("{}", fmt::join(v, "|"));
}

std::string traffic(const comm::stats& s) {
  std::string out;
  for (int k = 0; k < comm::kind_count; ++k) {
    const comm::counter& c = s.by_kind[static_cast<std::size_t>(k)];
    if (c.calls == 0 || static_cast<comm::kind>(k) == comm::kind::barrier) continue;
    out += fmt::format("{}{} ×{} {} B", out.empty() ? "" : ", ",
                       comm::name(static_cast<comm::kind>(k)), c.calls, c.bytes);
  }
  return out.empty() ? "none" : out;
}

/// The ranks as threads of this process.
struct thread_ranks {
  using backend = host::backend;
  int tp = 1;
  static constexpr const char* what = "thread ranks";
  bool prints() const { return true; }
  template <class Fn>
  void run(Fn&& fn) const {
    host::run(tp, fn);
  }
};

#if TPX_HAVE_MPI
/// The ranks as the processes of an MPI job; rank 0 prints.
struct process_ranks {
  using backend = mpi::backend;
  mpi::communicator* world = nullptr;
  static constexpr const char* what = "MPI processes";
  bool prints() const { return world->rank() == 0; }
  template <class Fn>
  void run(Fn&& fn) const {
    mpi::run(*world, fn, "tpx-demo");
  }
};
#endif

/// Runs a block of type Layer on `ranks`; prints what it did; returns true when it matches the
/// oracle.
template <class Layer, class Ranks>
bool run(const options& o, const test::block_weights& w, const Ranks& ranks) {
  using B = typename Ranks::backend;
  using T = float;
  const test::dense x = test::random_dense(o.tokens, o.hidden, 90);
  const test::dense dy = test::random_dense(o.tokens, o.hidden, 91);
  const test::block_result ref = test::decoder_layer(x, w, dy);
  const test::block_storage<T> weights(w);
  constexpr bool sp = Layer::mode == block_mode::sequence;
  const shard::partition rows =
      shard::partition::split(o.tokens, o.tp, shard::split_kind::balanced);
  std::vector<double> error(static_cast<std::size_t>(o.tp));
  comm::stats fwd, bwd;
  std::vector<std::string> lines;
  double fwd_ms = 0, bwd_ms = 0;
  typename B::engine engine;
  ranks.run([&](auto& c) {
    using ffn_t = typename Layer::ffn_type;
    using attention_t = layer::attention_block<Layer::mode, B, T>;
    Layer block = weights.template build<Layer>(engine, c);
    const shard::interval mine = sp ? rows.of(c.rank()).parts[0] : shard::interval{0, o.tokens};
    std::vector<T> xl, dyl;
    for (index_t t = mine.begin; t < mine.end; ++t)
      for (index_t j = 0; j < o.hidden; ++j) {
        xl.push_back(static_cast<T>(x(t, j)));
        dyl.push_back(static_cast<T>(dy(t, j)));
      }
    std::vector<T> yl(xl.size()), dxl(xl.size());
    const index_t n = mine.size();
    const auto xv = make_matrix<const T>(xl.data(), n, o.hidden);
    const auto timed = [&](auto&& step) {
      c.barrier();
      const auto start = std::chrono::steady_clock::now();
      step();
      c.barrier();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
    };
    c.reset_statistics();
    const double f =
        timed([&] { block.forward(xv, make_matrix(yl.data(), n, o.hidden), o.tokens); });
    const comm::stats after_forward = c.statistics();
    c.reset_statistics();
    const double b = timed([&] {
      block.backward(xv, make_matrix<const T>(dyl.data(), n, o.hidden),
                     make_matrix(dxl.data(), n, o.hidden), o.tokens);
    });
    const comm::stats after_backward = c.statistics();
    double worst = 0;
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < o.hidden; ++j) {
        const auto at = static_cast<std::size_t>(t * o.hidden + j);
        worst = std::max({worst, std::abs(yl[at] - ref.y(mine.begin + t, j)),
                          std::abs(dxl[at] - ref.dx(mine.begin + t, j))});
      }
    c.all_reduce(std::span<double>(&worst, 1), comm::reduce_op::max);  // every rank's worst
    error[static_cast<std::size_t>(c.rank())] = worst;
    if (c.rank() != 0) return;
    fwd = after_forward;
    bwd = after_backward;
    fwd_ms = f, bwd_ms = b;
    const auto& qkv = block.attention().qkv();
    const auto& op = block.attention().o();
    lines.push_back(fmt::format(
        "  {:<26} {:<32} [{}] on every rank", "input_layernorm",
        Layer::mode == block_mode::sequence ? "sequence_parallel" : "replicate", o.hidden));
    lines.push_back(
        fmt::format("  {:<26} {:<32} rank 0 [{} × {}]; rows per rank {} (q|k|v heads)", qkv.name(),
                    std::string(attention_t::qkv_type::style_type::name) + ", whole heads",
                    qkv.local_shape()[0], qkv.local_shape()[1], sizes(qkv.partition().sizes())));
    lines.push_back(fmt::format("  {:<26} {:<32} rank 0 [{} × {}]; columns per rank {}", op.name(),
                                attention_t::o_type::style_type::name, op.local_shape()[0],
                                op.local_shape()[1], sizes(op.partition().sizes())));
    lines.push_back(fmt::format(
        "  {:<26} {:<32} [{}] on every rank", "post_attention_layernorm",
        Layer::mode == block_mode::sequence ? "sequence_parallel" : "replicate", o.hidden));
    if constexpr (std::is_same_v<ffn_t, layer::swiglu_mlp<Layer::mode, B, T>>) {
      auto& mlp = block.ffn();
      lines.push_back(fmt::format("  {:<26} {:<32} rank 0 [{} × {}]; rows per rank {} (gate|up)",
                                  mlp.gate_up().name(),
                                  std::string(ffn_t::gate_up_type::style_type::name) + ", packed",
                                  mlp.gate_up().local_shape()[0], mlp.gate_up().local_shape()[1],
                                  sizes(mlp.gate_up().partition().sizes())));
      lines.push_back(fmt::format("  {:<26} {:<32} rank 0 [{} × {}]; columns per rank {}",
                                  mlp.down().name(), ffn_t::down_type::style_type::name,
                                  mlp.down().local_shape()[0], mlp.down().local_shape()[1],
                                  sizes(mlp.down().partition().sizes())));
    } else {
      auto& ex = block.ffn().experts_layer();
      lines.push_back(fmt::format("  {:<26} {:<32} [{} × {}] on every rank",
                                  "block_sparse_moe.gate", ffn_t::router_type::style_type::name,
                                  o.experts, o.hidden));
      lines.push_back(fmt::format(
          "  {:<26} {:<32} rank 0: experts [{}, {}), I slice [{}, {}): gate_up [{} × {} × {}], "
          "down "
          "[{} × {} × {}]",
          "block_sparse_moe.experts", ffn_t::experts_type::style_type::name,
          ex.local_experts().begin, ex.local_experts().end, ex.inter_slice().begin,
          ex.inter_slice().end, ex.gate_up_grad().extent(0), ex.gate_up_grad().extent(1),
          ex.gate_up_grad().extent(2), ex.down_grad().extent(0), ex.down_grad().extent(1),
          ex.down_grad().extent(2)));
    }
  });
  const double worst = *std::max_element(error.begin(), error.end());
  double scale = 1;
  for (const double e : ref.y.v) scale = std::max(scale, std::abs(e));
  for (const double e : ref.dx.v) scale = std::max(scale, std::abs(e));
  const bool ok = worst / scale <= 1e-4;
  if (!ranks.prints()) return ok;
  fmt::print(
      "tpx {} demo: {} decoder layer, {} tokens, hidden {}, {} heads / {} KV heads × {}, "
      "{} {}, on {} {}, {}{}\n",
      tpx::version, o.moe ? "Mixtral-style" : "Llama-style", o.tokens, o.hidden, o.heads,
      o.kv_heads, o.head_dim,
      o.moe ? fmt::format("{} experts (top {}) × inter", o.experts, o.top_k) : "inter", o.inter,
      o.tp, Ranks::what, sp ? "TP + SP" : "TP", o.ep > 1 ? fmt::format(", EP {}", o.ep) : "");
  fmt::print("weights: {}\n", o.safetensors ? *o.safetensors : "random");
  fmt::print("  {:<26} {:<32} shards\n", "part", "style");
  for (const std::string& l : lines) fmt::print("{}\n", l);
  fmt::print("communication, rank 0 (f32): forward {}; backward {}\n", traffic(fwd), traffic(bwd));
  if (o.tp > o.kv_heads)
    fmt::print(
        "  (tp {} > {} KV heads: each KV head lives on {} ranks, and backward all-reduces "
        "the qkv weight-gradient rows they share)\n",
        o.tp, o.kv_heads, o.tp / o.kv_heads);
  fmt::print("time, rank 0 ({}, one pass): forward {:.2f} ms, backward {:.2f} ms\n",
             Ranks::what, fwd_ms, bwd_ms);
  fmt::print("max |error| of y and dx vs the unsharded fp64 layer: {:.3g} (relative {:.3g})\n",
             worst, worst / scale);
  fmt::print("{}\n", ok ? "OK" : "MISMATCH");
  return ok;
}

template <class Ranks>
int demo(const options& o, const test::block_weights& w, const Ranks& ranks) {
  using B = typename Ranks::backend;
  bool ok = false;
  if (!o.moe)
    ok = o.sp ? run<layer::llama_layer<block_mode::sequence, B>>(o, w, ranks)
              : run<layer::llama_layer<block_mode::tensor, B>>(o, w, ranks);
  else if (o.ep == 1)
    ok = o.sp ? run<layer::mixtral_layer<block_mode::sequence, B>>(o, w, ranks)
              : run<layer::mixtral_layer<block_mode::tensor, B>>(o, w, ranks);
  else
    ok = o.sp ? run<layer::mixtral_layer<block_mode::sequence, B, float, style::moe_all_to_all>>(
                    o, w, ranks)
              : run<layer::mixtral_layer<block_mode::tensor, B, float, style::moe_masked>>(o, w,
                                                                                            ranks);
  return ok ? 0 : 1;
}

/// The layer's weights and heads, random or from --safetensors (which sets the dims in `o`).
test::block_weights weights_of(options& o) {
  test::block_weights w = o.safetensors ? read_block(o) : random_block(o);
  w.heads = {o.heads, o.kv_heads, o.head_dim};
  return w;
}

int start(int argc, char** argv) {
#if TPX_HAVE_MPI
  if (cli::wants_processes(argc, argv)) {
    mpi::environment env(argc, argv);
    mpi::communicator world = mpi::communicator::world();
    options o;
    test::block_weights w;
    if (const std::optional<int> status = cli::agreed_or_exit("tpx-demo", world, [&] {
          o = parse(argc, argv);
          cli::expect_one_rank_per_process(
              o.backend, o.tp_given ? std::optional<int>(o.tp) : std::nullopt, world.size());
          o.tp = world.size();
          o.backend = "mpi";
          o = checked(o);
          w = weights_of(o);
        }))
      return *status;
    return demo(o, w, process_ranks{&world});
  }
#endif
  options o = checked(parse(argc, argv));
  expect(o.backend != "mpi",
         "--backend mpi: this tpx-demo was built without MPI (configure with -Dmpi=enabled and an "
         "MPI installed, e.g. Debian's libopenmpi-dev)");
  const test::block_weights w = weights_of(o);
  return demo(o, w, thread_ranks{o.tp});
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-demo", argc, argv, start);
}
