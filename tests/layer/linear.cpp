// Linear-layer behaviour beyond the oracle laws: the rowwise bias is added exactly once, each
// style moves exactly its analytic bytes, and bad input is a sentence.

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/style/vocab_parallel.hpp"

using namespace tpx;
using comm::kind;

namespace {
template <class Style>
using lin = layer::linear<Style, host::backend, double>;

}  // namespace

TEST_CASE("the rowwise bias is added exactly once, after the all-reduce") {
  // With W = 0 the output is the bias alone: a bias added on every rank before the reduction
  // would come out tp times.
  const index_t out = 5, in = 8, tokens = 3;
  const std::vector<double> w(static_cast<std::size_t>(out * in), 0.0);
  const std::vector<double> b{1, 2, 3, 4, 5};
  host::gemm_engine engine;
  for (int tp = 1; tp <= 8; ++tp)
    host::run(tp, [&](host::communicator& c) {
      lin<style::rowwise<>> l(engine, c, make_matrix<const double>(w.data(), out, in), b,
                              {.name = "o_proj", .out_features = out, .in_features = in});
      const std::vector<double> x(static_cast<std::size_t>(tokens * l.input_cols()), 1.0);
      std::vector<double> y(static_cast<std::size_t>(tokens * out));
      l.forward(make_matrix<const double>(x.data(), tokens, l.input_cols()),
                make_matrix(y.data(), tokens, out));
      for (index_t t = 0; t < tokens; ++t)
        for (index_t o = 0; o < out; ++o)
          expect(y[static_cast<std::size_t>(t * out + o)] == b[static_cast<std::size_t>(o)],
                 "tp {}: y({}, {}) = {}", tp, t, o, y[static_cast<std::size_t>(t * out + o)]);
    });
}

TEST_CASE("each style moves exactly the bytes of its collectives") {
  // [tokens, out] = [6, 16] from [6, 12]; one forward and one backward on tp = 4.
  const index_t tokens = 6, out = 16, in = 12, tp = 4;
  const test::dense w = test::random_dense(out, in, 3);
  const std::vector<double> b(static_cast<std::size_t>(out), 0.5);
  host::gemm_engine engine;
  const auto bytes_of = [&]<class Style>(Style) {
    std::vector<comm::stats> stats(tp);
    host::run(tp, [&](host::communicator& c) {
      lin<Style> l(engine, c, make_matrix<const double>(w.v.data(), out, in), b,
                   {.name = "p", .out_features = out, .in_features = in});
      const index_t rows =
          std::is_same_v<typename Style::input, style::layout::shard<0>>
              ? shard::split(tokens, tp, c.rank(), shard::split_kind::balanced).size()
              : tokens;
      std::vector<double> x(static_cast<std::size_t>(rows * l.input_cols()), 0.25), dx(x.size()),
          y(static_cast<std::size_t>(rows * l.output_cols()));
      const auto xv = make_matrix<const double>(x.data(), rows, l.input_cols());
      l.forward(xv, make_matrix(y.data(), rows, l.output_cols()));
      l.backward(xv, make_matrix<const double>(y.data(), rows, l.output_cols()),
                 make_matrix(dx.data(), rows, l.input_cols()));
      stats[static_cast<std::size_t>(c.rank())] = c.statistics();
    });
    for (const auto& s : stats) CHECK(s.by_kind == stats[0].by_kind);  // symmetric
    return stats[0];
  };
  const std::int64_t f = 8;  // bytes per double
  {                          // colwise: backward all-reduce of dx [tokens, in]
    const comm::stats s = bytes_of(style::colwise<>{});
    CHECK(s[kind::all_reduce] == comm::counter{1, tokens * in * f});
    CHECK(s.total_bytes() == tokens * in * f);
  }
  {  // colwise gathered: + forward all-gather of y [tokens, out]
    const comm::stats s = bytes_of(style::colwise_gathered{});
    CHECK(s[kind::all_gather] == comm::counter{1, tokens * out * f});
    CHECK(s[kind::all_reduce] == comm::counter{1, tokens * in * f});
  }
  {  // rowwise: forward all-reduce of y [tokens, out]
    const comm::stats s = bytes_of(style::rowwise<>{});
    CHECK(s[kind::all_reduce] == comm::counter{1, tokens * out * f});
    CHECK(s.total_bytes() == tokens * out * f);
  }
  {  // rowwise split: + backward all-gather of dx [tokens, in]
    const comm::stats s = bytes_of(style::rowwise_split{});
    CHECK(s[kind::all_reduce] == comm::counter{1, tokens * out * f});
    CHECK(s[kind::all_gather] == comm::counter{1, tokens * in * f});
  }
  {  // replicate: nothing
    CHECK(bytes_of(style::replicate<>{}).total_bytes() == 0);
  }
  {  // replicate with grad all-reduce: dW [out, in] and db [out]
    const comm::stats s = bytes_of(style::replicate_grad_all_reduce{});
    CHECK(s[kind::all_reduce] == comm::counter{2, (out * in + out) * f});
  }
}

TEST_CASE("a weight whose shape disagrees with the layer is an error naming both shapes") {
  const std::vector<double> w(12 * 7);
  host::gemm_engine engine;
  CHECK(test::error_of(2,
                       [&](host::communicator& c) {
                         lin<style::colwise<>> l(engine, c,
                                                 make_matrix<const double>(w.data(), 12, 7), {},
                                                 {.name = "model.layers.0.self_attn.q_proj",
                                                  .out_features = 12,
                                                  .in_features = 8});
                       }) ==
        "model.layers.0.self_attn.q_proj: the weight is [12 × 7] but the layer is [12 × 8] "
        "(out_features × in_features)");
  const std::vector<double> b(11);
  CHECK(test::error_of(1, [&](host::communicator& c) {
          lin<style::colwise<>> l(engine, c, make_matrix<const double>(w.data(), 12, 7), b,
                                  {.name = "q", .out_features = 12, .in_features = 7});
        }) == "q: the bias has 11 elements but out_features is 12");
}

TEST_CASE("an indivisible dim under the even split is an error naming tensor, dim, size and tp") {
  const std::vector<double> w(10 * 6);
  host::gemm_engine engine;
  CHECK(test::error_of(4,
                       [&](host::communicator& c) {
                         lin<style::rowwise<>> l(engine, c,
                                                 make_matrix<const double>(w.data(), 6, 10), {},
                                                 {.name = "mlp.down_proj",
                                                  .out_features = 6,
                                                  .in_features = 10,
                                                  .split = shard::split_kind::even});
                       }) ==
        "mlp.down_proj.weight dim 1 has size 10, which tp = 4 does not divide (10 % 4 = 2); "
        "the even split needs a multiple of tp: use a balanced or chunk split");
}

TEST_CASE("activations of the wrong shape are errors naming the layer, style, layout and sizes") {
  const std::vector<double> w(8 * 6);
  host::gemm_engine engine;
  const std::string what = test::error_of(2, [&](host::communicator& c) {
    lin<style::rowwise<>> l(engine, c, make_matrix<const double>(w.data(), 8, 6), {},
                            {.name = "o_proj", .out_features = 8, .in_features = 6});
    std::vector<double> x(4 * 6), y(4 * 8);  // x replicated, but rowwise wants shard<1>
    l.forward(make_matrix<const double>(x.data(), 4, 6), make_matrix(y.data(), 4, 8));
  });
  CHECK(what.find("o_proj (rowwise, tp = 2, rank ") != std::string::npos);
  CHECK(
      what.find("the input is [4 × 6] but must be [4 × 3] (tokens × features, shard<1> layout)") !=
      std::string::npos);
  const std::string dy = test::error_of(1, [&](host::communicator& c) {
    lin<style::colwise<>> l(engine, c, make_matrix<const double>(w.data(), 8, 6), {},
                            {.name = "q", .out_features = 8, .in_features = 6});
    std::vector<double> x(4 * 6), dy(3 * 8), dx(4 * 6);
    l.backward(make_matrix<const double>(x.data(), 4, 6),
               make_matrix<const double>(dy.data(), 3, 8), make_matrix(dx.data(), 4, 6));
  });
  CHECK(dy ==
        "q (colwise, tp = 1, rank 0): the output gradient is [3 × 8] but must be [4 × 8] "
        "(tokens × features, shard<1> layout)");
}

namespace {
/// A style of the user's: rowwise with split input, declared from the pairs alone.
struct my_split_rowwise : style::detail::split_matrix<1> {
  static constexpr std::string_view name = "my_split_rowwise";
  using input = style::layout::replicate;
  using output = style::layout::replicate;
  using weight = style::layout::shard<1>;
  using input_pair = comm::split_to_parallel;
  using output_pair = comm::reduce_from_parallel;
};
}  // namespace

TEST_CASE("a style declared from known conjugate pairs gets a linear layer with no other change") {
  static_assert(
      style::linear_style<style::colwise<>> && style::linear_style<style::colwise_gathered> &&
      style::linear_style<style::rowwise<>> && style::linear_style<style::rowwise_split> &&
      style::linear_style<style::replicate<>> &&
      style::linear_style<style::replicate_grad_all_reduce> &&
      style::linear_style<style::colwise_sp> && style::linear_style<style::rowwise_sp>);
  // An all-reduce after a row split has no meaning for a linear: the vocab styles are not linear.
  static_assert(!style::linear_style<style::vocab_parallel<>> &&
                !style::linear_style<style::vocab_parallel_sp>);
  static_assert(style::linear_style<my_split_rowwise>);
  const index_t out = 6, in = 10, tokens = 4;
  std::vector<double> w(static_cast<std::size_t>(out * in)),
      x(static_cast<std::size_t>(tokens * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.3 * static_cast<double>(i));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.7 * static_cast<double>(i));
  host::gemm_engine engine;
  for (const int tp : {1, 2, 3, 4}) {
    CAPTURE(tp);
    host::run(tp, [&](host::communicator& c) {
      const layer::linear_options o{.name = "o_proj", .out_features = out, .in_features = in};
      lin<my_split_rowwise> mine(engine, c, make_matrix<const double>(w.data(), out, in), {}, o);
      lin<style::rowwise_split> theirs(engine, c, make_matrix<const double>(w.data(), out, in), {},
                                       o);
      std::vector<double> y1(static_cast<std::size_t>(tokens * out)), y2 = y1;
      mine.forward(make_matrix<const double>(x.data(), tokens, in),
                   make_matrix(y1.data(), tokens, out));
      theirs.forward(make_matrix<const double>(x.data(), tokens, in),
                     make_matrix(y2.data(), tokens, out));
      expect(y1 == y2, "rank {}: the user's style differs from rowwise_split", c.rank());
    });
  }
}
