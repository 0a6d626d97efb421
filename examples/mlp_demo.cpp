// tpx-demo: a tensor-parallel MLP (colwise → SiLU → rowwise) on thread ranks, checked against the
// unsharded MLP computed in fp64, printing the error and the bytes each collective moved.
//
//   tpx-demo [--tp N] [--tokens T] [--hidden H] [--inter I]

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "tpx/tpx.hpp"

namespace {

using namespace tpx;

struct options {
  int tp = 4;
  index_t tokens = 8, hidden = 64, inter = 172;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> long {
      expect(i + 1 < argc, "tpx-demo: {} needs a value", a);
      char* end = nullptr;
      const long v = std::strtol(argv[++i], &end, 10);
      expect(end != argv[i] && *end == '\0', "tpx-demo: {} needs a whole number, got '{}'", a,
             argv[i]);
      return v;
    };
    if (a == "--tp")
      o.tp = static_cast<int>(value());
    else if (a == "--tokens")
      o.tokens = value();
    else if (a == "--hidden")
      o.hidden = value();
    else if (a == "--inter")
      o.inter = value();
    else if (a == "--help" || a == "-h") {
      fmt::print("usage: tpx-demo [--tp N] [--tokens T] [--hidden H] [--inter I]\n");
      std::exit(0);
    } else {
      fail("tpx-demo: unknown option '{}' (known: --tp, --tokens, --hidden, --inter)", a);
    }
  }
  expect_group_size(o.tp, "tpx-demo");
  expect(o.tokens >= 0 && o.hidden >= 1 && o.inter >= 1,
         "tpx-demo: tokens must be ≥ 0 and hidden, inter ≥ 1 (got {}, {}, {})", o.tokens, o.hidden,
         o.inter);
  return o;
}

std::vector<double> random_values(index_t n, unsigned seed) {
  std::vector<double> v(static_cast<std::size_t>(n));
  unsigned s = seed;
  for (double& x : v) {
    s = s * 1664525u + 1013904223u;
    x = (static_cast<double>(s >> 8) / static_cast<double>(1u << 24) - 0.5) * 0.5;
  }
  return v;
}

double silu(double x) {
  return x / (1 + std::exp(-x));
}

/// One unsharded linear layer in fp64: y[t, o] = act(Σ_i x[t, i] · w[o, i] + b[o]).
template <class Act>
std::vector<double> dense_layer(const std::vector<double>& x, const std::vector<double>& w,
                                const std::vector<double>& b, index_t tokens, index_t in,
                                index_t out, Act act) {
  std::vector<double> y(static_cast<std::size_t>(tokens * out));
  for (index_t t = 0; t < tokens; ++t)
    for (index_t o = 0; o < out; ++o) {
      double acc = b[static_cast<std::size_t>(o)];
      for (index_t i = 0; i < in; ++i)
        acc += x[static_cast<std::size_t>(t * in + i)] * w[static_cast<std::size_t>(o * in + i)];
      y[static_cast<std::size_t>(t * out + o)] = act(acc);
    }
  return y;
}

/// The unsharded MLP in fp64: y = silu(x · W1ᵀ + b1) · W2ᵀ + b2.
std::vector<double> reference(const options& o, const std::vector<double>& x,
                              const std::vector<double>& w1, const std::vector<double>& b1,
                              const std::vector<double>& w2, const std::vector<double>& b2) {
  const auto a = dense_layer(x, w1, b1, o.tokens, o.hidden, o.inter, silu);
  return dense_layer(a, w2, b2, o.tokens, o.inter, o.hidden, [](double v) { return v; });
}

template <class V>
std::vector<float> to_float(const V& v) {
  return std::vector<float>(v.begin(), v.end());
}

int run_demo(const options& o) {
  const auto x = random_values(o.tokens * o.hidden, 1), w1 = random_values(o.inter * o.hidden, 2),
             b1 = random_values(o.inter, 3), w2 = random_values(o.hidden * o.inter, 4),
             b2 = random_values(o.hidden, 5);
  const auto want = reference(o, x, w1, b1, w2, b2);
  const auto xf = to_float(x), w1f = to_float(w1), b1f = to_float(b1), w2f = to_float(w2),
             b2f = to_float(b2);

  using up_t = layer::linear<style::colwise<>, host::backend, float>;
  using down_t = layer::linear<style::rowwise<>, host::backend, float>;
  std::vector<double> error(static_cast<std::size_t>(o.tp));
  std::vector<comm::stats> stats(static_cast<std::size_t>(o.tp));
  std::vector<std::string> shards(static_cast<std::size_t>(o.tp));
  host::gemm_engine engine;
  const auto start = std::chrono::steady_clock::now();
  host::run(o.tp, [&](host::communicator& c) {
    up_t up(engine, c, make_matrix(w1f.data(), o.inter, o.hidden), b1f,
            {.name = "mlp.up_proj", .out_features = o.inter, .in_features = o.hidden});
    down_t down(engine, c, make_matrix(w2f.data(), o.hidden, o.inter), b2f,
                {.name = "mlp.down_proj", .out_features = o.hidden, .in_features = o.inter});
    layer::chain<up_t, down_t, layer::activation::silu> mlp(up, down);
    std::vector<float> y(static_cast<std::size_t>(o.tokens * o.hidden));
    mlp.forward(make_matrix(xf.data(), o.tokens, o.hidden),
                make_matrix(y.data(), o.tokens, o.hidden));
    double worst = 0;
    for (std::size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::abs(y[i] - want[i]));
    const std::size_t r = static_cast<std::size_t>(c.rank());
    error[r] = worst;
    stats[r] = c.statistics();
    shards[r] = fmt::format(
        "up_proj rows [{}, {}) = [{} × {}], down_proj cols [{}, {}) = [{} × {}]", up.slice().begin,
        up.slice().end, up.local_shape()[0], up.local_shape()[1], down.slice().begin,
        down.slice().end, down.local_shape()[0], down.local_shape()[1]);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  fmt::print(
      "tpx {} demo: MLP [{} tokens] {} → {} (SiLU) → {} on {} thread ranks (colwise → rowwise)\n",
      tpx::version, o.tokens, o.hidden, o.inter, o.hidden, o.tp);
  double worst = 0;
  for (int r = 0; r < o.tp; ++r) {
    const comm::stats& s = stats[static_cast<std::size_t>(r)];
    fmt::print("  rank {}: {}; all_reduce {} call(s), {} bytes; max |y − y_ref| = {:.3g}\n", r,
               shards[static_cast<std::size_t>(r)], s[comm::kind::all_reduce].calls,
               s[comm::kind::all_reduce].bytes, error[static_cast<std::size_t>(r)]);
    worst = std::max(worst, error[static_cast<std::size_t>(r)]);
  }
  const double expected_bytes = static_cast<double>(o.tokens * o.hidden * sizeof(float));
  fmt::print(
      "bytes per rank: {} (one all-reduce of [{} × {}] f32 = {} bytes, the analytic minimum)\n",
      stats[0].total_bytes(), o.tokens, o.hidden, expected_bytes);
  fmt::print("max error vs the unsharded fp64 MLP: {:.3g} (f32 compute); wall time {:.1f} ms\n",
             worst, seconds * 1e3);
  const bool ok = worst <= 1e-4 && static_cast<double>(stats[0].total_bytes()) == expected_bytes;
  fmt::print("{}\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_demo(parse(argc, argv));
  } catch (const tpx::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
}
