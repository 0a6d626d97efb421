// The host GEMM engine against plain loops: every transpose combination, alpha and beta, the bias
// epilogue, padded operands, empty dims, and the shape errors.

#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../oracle.hpp"
#include "tpx/backend/host/gemm.hpp"

using namespace tpx;
using gemm::op;

namespace {
/// Stores `m` (or its transpose) with leading dimension ld ≥ its columns.
std::vector<double> store(const test::dense& m, bool transpose, index_t ld) {
  const index_t rows = transpose ? m.cols : m.rows, cols = transpose ? m.rows : m.cols;
  std::vector<double> out(static_cast<std::size_t>(std::max<index_t>(rows * ld, 1)), -99.0);
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j)
      out[static_cast<std::size_t>(i * ld + j)] = transpose ? m(j, i) : m(i, j);
  return out;
}
}  // namespace

TEST_CASE("gemm computes alpha·op(A)·op(B) + beta·C + bias for every transpose combination") {
  const index_t m = 5, n = 4, k = 3;
  const test::dense a = test::random_dense(m, k, 1), b = test::random_dense(k, n, 2),
                    c0 = test::random_dense(m, n, 3);
  const std::vector<double> bias = test::random_dense(n, 1, 4).v;
  host::gemm_engine engine;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const bool with_bias : {false, true}) {
        CAPTURE(ta);
        CAPTURE(tb);
        const index_t pad = 2;  // every operand padded: ld = cols + 2
        const index_t a_cols = ta ? m : k, b_cols = tb ? k : n;
        const std::vector<double> av = store(a, ta, a_cols + pad), bv = store(b, tb, b_cols + pad);
        std::vector<double> cv = store(c0, false, n + pad);
        engine.gemm(gemm::gemm_args<double>{
            .op_a = ta ? op::transpose : op::none,
            .op_b = tb ? op::transpose : op::none,
            .alpha = 0.5,
            .a = {av.data(), extents<2>{{ta ? k : m, a_cols}}, a_cols + pad},
            .b = {bv.data(), extents<2>{{tb ? n : k, b_cols}}, b_cols + pad},
            .beta = -2.0,
            .c = {cv.data(), extents<2>{{m, n}}, n + pad},
            .bias = with_bias ? std::span<const double>(bias) : std::span<const double>()});
        for (index_t i = 0; i < m; ++i) {
          for (index_t j = 0; j < n; ++j) {
            double want = -2.0 * c0(i, j) + (with_bias ? bias[static_cast<std::size_t>(j)] : 0.0);
            for (index_t p = 0; p < k; ++p) want += 0.5 * a(i, p) * b(p, j);
            CHECK(cv[static_cast<std::size_t>(i * (n + pad) + j)] ==
                  doctest::Approx(want).epsilon(1e-14));
          }
          CHECK(cv[static_cast<std::size_t>(i * (n + pad) + n)] == -99.0);  // padding untouched
        }
      }
}

TEST_CASE("gemm with an empty inner dim scales C and adds the bias; empty outputs are no-ops") {
  host::gemm_engine engine;
  std::vector<float> c{1, 2, 3, 4};
  const std::vector<float> bias{10, 20};
  engine.gemm(gemm::gemm_args<float>{.a = make_matrix<const float>(nullptr, 2, 0),
                                     .b = make_matrix<const float>(nullptr, 0, 2),
                                     .beta = 3.0f,
                                     .c = make_matrix(c.data(), 2, 2),
                                     .bias = bias});
  CHECK(c == std::vector<float>{13, 26, 19, 32});
  engine.gemm(gemm::gemm_args<float>{.a = make_matrix<const float>(nullptr, 0, 5),
                                     .b = make_matrix<const float>(c.data(), 5, 0),
                                     .c = make_matrix<float>(nullptr, 0, 0)});
}

TEST_CASE("the bias_grad field of a GEMM holds the row sums of op(A), padded or not") {
  const index_t m = 4, n = 3, k = 5;
  const test::dense a = test::random_dense(m, k, 7), b = test::random_dense(k, n, 8);
  host::gemm_engine engine;
  for (const bool ta : {false, true}) {
    CAPTURE(ta);
    const index_t a_cols = ta ? m : k, pad = 1;
    const std::vector<double> av = store(a, ta, a_cols + pad), bv = store(b, false, n);
    std::vector<double> cv(static_cast<std::size_t>(m * n)), db(static_cast<std::size_t>(m), -1.0);
    engine.gemm(
        gemm::gemm_args<double>{.op_a = ta ? op::transpose : op::none,
                                .a = {av.data(), extents<2>{{ta ? k : m, a_cols}}, a_cols + pad},
                                .b = make_matrix<const double>(bv.data(), k, n),
                                .c = make_matrix(cv.data(), m, n),
                                .bias_grad = std::span<double>(db)});
    for (index_t i = 0; i < m; ++i) {
      double want = 0.0;
      for (index_t p = 0; p < k; ++p) want += a(i, p);
      CHECK(db[static_cast<std::size_t>(i)] == doctest::Approx(want).epsilon(1e-14));
    }
  }
  std::vector<double> av(6), bv(6), cv(4), db(3);
  CHECK_THROWS_WITH_AS(
      engine.gemm(gemm::gemm_args<double>{.a = make_matrix<const double>(av.data(), 2, 3),
                                          .b = make_matrix<const double>(bv.data(), 3, 2),
                                          .c = make_matrix(cv.data(), 2, 2),
                                          .bias_grad = std::span<double>(db)}),
      "host::gemm_engine: the bias gradient has 3 elements but C has 2 rows", tpx::error);
}

TEST_CASE("bias_grad sums rows and add_bias broadcasts over rows") {
  host::gemm_engine engine;
  const std::vector<double> dy{1, 2, 3, 4, 5, 6};  // [3 × 2]
  std::vector<double> db(2, -1);
  engine.bias_grad(make_matrix(dy.data(), 3, 2), std::span<double>(db));
  CHECK(db == std::vector<double>{9, 12});
  std::vector<double> y(6, 0);
  engine.add_bias(make_matrix(y.data(), 3, 2), std::span<const double>(db));
  CHECK(y == std::vector<double>{9, 12, 9, 12, 9, 12});
}

TEST_CASE("operands that do not line up are errors naming both shapes") {
  host::gemm_engine engine;
  std::vector<double> a(12), b(12), c(16);
  CHECK_THROWS_WITH_AS(
      engine.gemm(gemm::gemm_args<double>{.a = make_matrix<const double>(a.data(), 4, 3),
                                          .b = make_matrix<const double>(b.data(), 4, 3),
                                          .c = make_matrix(c.data(), 4, 3)}),
      "host::gemm_engine: op(A) is [4 × 3] and op(B) is [4 × 3]; the inner dims 3 and 4 must be "
      "equal",
      tpx::error);
  CHECK_THROWS_WITH_AS(
      engine.gemm(gemm::gemm_args<double>{.op_b = op::transpose,
                                          .a = make_matrix<const double>(a.data(), 4, 3),
                                          .b = make_matrix<const double>(b.data(), 4, 3),
                                          .c = make_matrix(c.data(), 4, 3)}),
      "host::gemm_engine: C is [4 × 3] but op(A)·op(B) is [4 × 4]", tpx::error);
  const std::vector<double> bias(3);
  CHECK_THROWS_WITH_AS(
      engine.gemm(gemm::gemm_args<double>{.op_b = op::transpose,
                                          .a = make_matrix<const double>(a.data(), 4, 3),
                                          .b = make_matrix<const double>(b.data(), 4, 3),
                                          .c = make_matrix(c.data(), 4, 4),
                                          .bias = bias}),
      "host::gemm_engine: the bias has 3 elements but C has 4 columns", tpx::error);
  std::vector<double> db(3);
  CHECK_THROWS_AS(
      engine.bias_grad(make_matrix<const double>(a.data(), 4, 3), std::span<double>(db).first(2)),
      tpx::error);
}

TEST_CASE("grouped_gemm runs every group, empty groups included, as single GEMMs would") {
  host::gemm_engine engine;
  const test::dense a0 = test::random_dense(3, 4, 11), b0 = test::random_dense(5, 4, 12);
  const test::dense a1 = test::random_dense(0, 4, 13), b1 = test::random_dense(5, 4, 14);
  const test::dense a2 = test::random_dense(2, 4, 15), b2 = test::random_dense(5, 4, 16);
  std::vector<double> c(static_cast<std::size_t>((3 + 0 + 2) * 5), -1.0);
  const auto m = [](const test::dense& d) { return make_matrix(d.v.data(), d.rows, d.cols); };
  const auto out = make_matrix(c.data(), 5, 5);
  const std::vector<gemm::gemm_args<double>> groups{
      {.op_b = op::transpose, .a = m(a0), .b = m(b0), .c = out.row_range(0, 3)},
      {.op_b = op::transpose, .a = m(a1), .b = m(b1), .c = out.row_range(3, 3)},
      {.op_b = op::transpose, .a = m(a2), .b = m(b2), .c = out.row_range(3, 5)}};
  engine.grouped_gemm(std::span<const gemm::gemm_args<double>>(groups));
  const test::dense want0 = test::linear_forward(a0, b0, {}),
                    want2 = test::linear_forward(a2, b2, {});
  for (index_t j = 0; j < 5; ++j) {
    for (index_t i = 0; i < 3; ++i) CHECK(out(i, j) == doctest::Approx(want0(i, j)).epsilon(1e-14));
    for (index_t i = 0; i < 2; ++i)
      CHECK(out(3 + i, j) == doctest::Approx(want2(i, j)).epsilon(1e-14));
  }
}

TEST_CASE("a bf16 B computes in float what float computes on its widened values, across blocks") {
  // n · k and k · n above the engine's widened block (64 Ki floats): B goes through in several
  // blocks of rows — of C's columns (B transposed) or of the inner dim (B as stored).
  const index_t m = 3, n = 700, k = 150;
  const test::dense a = test::random_dense(m, k, 11), b = test::random_dense(k, n, 12),
                    c0 = test::random_dense(m, n, 13);
  const std::vector<double> bias = test::random_dense(n, 1, 14).v;
  const auto floats = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  const std::vector<float> bias_f = floats(bias);
  host::gemm_engine engine;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      CAPTURE(ta);
      CAPTURE(tb);
      const index_t pad = 3, a_cols = ta ? m : k, b_cols = tb ? k : n;
      const std::vector<float> af = floats(store(a, ta, a_cols + pad));
      const std::vector<double> bd = store(b, tb, b_cols + pad);
      std::vector<bf16> bh;
      std::vector<float> bw;  // the bf16 values, widened
      for (const double x : bd) {
        bh.push_back(bf16(x));
        bw.push_back(static_cast<float>(bh.back()));
      }
      std::vector<float> want = floats(store(c0, false, n + pad)), got = want;
      const auto args = [&]<class W>(const std::vector<W>& bv, std::vector<float>& cv) {
        return gemm::gemm_args<float, W>{
            .op_a = ta ? op::transpose : op::none,
            .op_b = tb ? op::transpose : op::none,
            .alpha = 0.5f,
            .a = {af.data(), extents<2>{{ta ? k : m, a_cols}}, a_cols + pad},
            .b = {bv.data(), extents<2>{{tb ? n : k, b_cols}}, b_cols + pad},
            .beta = -2.0f,
            .c = {cv.data(), extents<2>{{m, n}}, n + pad},
            .bias = bias_f};
      };
      const auto g = args(bh, got);
      const auto f = args(bw, want);
      engine.gemm(f);
      engine.gemm(g);
      double worst = 0, scale = 0;
      for (index_t i = 0; i < m; ++i) {
        for (index_t j = 0; j < n; ++j) {
          const std::size_t at = static_cast<std::size_t>(i * (n + pad) + j);
          worst = std::max(worst, std::abs(static_cast<double>(got[at]) - want[at]));
          scale = std::max(scale, std::abs(static_cast<double>(want[at])));
        }
        CHECK(got[static_cast<std::size_t>(i * (n + pad) + n)] == -99.0f);  // padding untouched
      }
      CHECK(scale > 1);
      CHECK(worst <= 1e-5 * scale);  // float rounding of sums split differently, nothing more
    }
}

TEST_CASE("grouped GEMMs with bf16 weights run every group as single ones would") {
  const test::dense a = test::random_dense(4, 6, 21), b = test::random_dense(5, 6, 22);
  const std::vector<float> af(a.v.begin(), a.v.end());
  std::vector<bf16> bh;
  for (const double x : b.v) bh.push_back(bf16(x));
  std::vector<float> one(20), grouped(20);
  host::gemm_engine engine;
  const auto product = [&](std::vector<float>& c, index_t rows, index_t at) {
    return gemm::gemm_args<float, bf16>{.op_b = op::transpose,
                                        .a = make_matrix<const float>(af.data() + at * 6, rows, 6),
                                        .b = make_matrix<const bf16>(bh.data(), 5, 6),
                                        .c = make_matrix(c.data() + at * 5, rows, 5)};
  };
  engine.gemm(product(one, 4, 0));
  const std::vector<gemm::gemm_args<float, bf16>> groups{product(grouped, 1, 0),
                                                         product(grouped, 0, 1),
                                                         product(grouped, 3, 1)};
  engine.grouped_gemm(std::span<const gemm::gemm_args<float, bf16>>(groups));
  for (std::size_t i = 0; i < one.size(); ++i)  // a one-row group may take another kernel
    CHECK(grouped[i] == doctest::Approx(one[i]).epsilon(1e-6));
  for (index_t i = 0; i < 4; ++i) {
    double want = 0;
    for (index_t l = 0; l < 6; ++l) want += af[static_cast<std::size_t>(i * 6 + l)] *
                                          static_cast<double>(static_cast<float>(bh[static_cast<std::size_t>(l)]));
    CHECK(one[static_cast<std::size_t>(i * 5)] == doctest::Approx(want).epsilon(1e-6));
  }
}

TEST_CASE("one row of A (a decode step) through every path: float and bf16 B, either transpose") {
  // k = 37: the dot products' 16-wide body and their tail; C starts as NaN where β = 0 (never
  // read) and as values where β ≠ 0.
  const index_t n = 23, k = 37;
  const test::dense b = test::random_dense(k, n, 31);
  const std::vector<double> a = test::random_dense(1, k, 32).v, c0 = test::random_dense(1, n, 33).v;
  host::gemm_engine engine;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const bool narrow : {false, true})
        for (const float beta : {0.0f, -2.0f}) {
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(narrow);
          CAPTURE(beta);
          const index_t pad = 2, b_cols = tb ? k : n;
          const std::vector<double> bd = store(b, tb, b_cols + pad);
          std::vector<float> bf;
          std::vector<bf16> bh;
          for (const double x : bd) {
            bh.push_back(bf16(x));
            bf.push_back(narrow ? static_cast<float>(bh.back()) : static_cast<float>(x));
          }
          // op(a) is one row of k: a [1 × k] as stored, or a column [k × 1] of a padded A.
          const index_t lda = ta ? 3 : k;
          std::vector<float> av(static_cast<std::size_t>(ta ? k * lda : k), -99.0f);
          for (index_t l = 0; l < k; ++l)
            av[static_cast<std::size_t>(ta ? l * lda : l)] = static_cast<float>(a[static_cast<std::size_t>(l)]);
          std::vector<float> c(static_cast<std::size_t>(n));
          for (index_t j = 0; j < n; ++j)
            c[static_cast<std::size_t>(j)] =
                beta == 0.0f ? std::nanf("") : static_cast<float>(c0[static_cast<std::size_t>(j)]);
          const auto args = [&]<class W>(const std::vector<W>& bv) {
            return gemm::gemm_args<float, W>{
                .op_a = ta ? op::transpose : op::none,
                .op_b = tb ? op::transpose : op::none,
                .alpha = 0.5f,
                .a = {av.data(), extents<2>{{ta ? k : 1, ta ? 1 : k}}, lda},
                .b = {bv.data(), extents<2>{{tb ? n : k, b_cols}}, b_cols + pad},
                .beta = beta,
                .c = make_matrix(c.data(), 1, n)};
          };
          if (narrow)
            engine.gemm(args(bh));
          else
            engine.gemm(args(bf));
          for (index_t j = 0; j < n; ++j) {
            double want = beta == 0.0f ? 0.0 : beta * static_cast<float>(c0[static_cast<std::size_t>(j)]);
            for (index_t l = 0; l < k; ++l)
              want += 0.5 * static_cast<float>(a[static_cast<std::size_t>(l)]) *
                      bf[static_cast<std::size_t>(tb ? j * (b_cols + pad) + l : l * (b_cols + pad) + j)];
            CHECK(c[static_cast<std::size_t>(j)] == doctest::Approx(want).epsilon(1e-5));
          }
        }
}

TEST_CASE("a few rows of A times a weight as stored: both dots kernels and the engine") {
  // Rows 1 … 9 (the wide kernel's one-to-eight-row blocks, and nine: a block of eight and one
  // more through the kernel, or sgemm through the engine), k across the 32-, 16- and 8-wide
  // bodies and their tails, padded X, W and C; β = 0 over NaN (never read) and β ≠ 0.
  const index_t n = 13, pad = 3;
  host::gemm_engine engine;
  for (const index_t k : {1, 7, 8, 15, 16, 17, 31, 32, 40, 77})
    for (int m = 1; m <= 9; ++m)
      for (const float beta : {0.0f, 0.5f}) {
        CAPTURE(k);
        CAPTURE(m);
        CAPTURE(beta);
        const test::dense x = test::random_dense(m, k, 40 + m), w = test::random_dense(n, k, 50);
        const test::dense c0 = test::random_dense(m, n, 60);
        const std::vector<double> xd = store(x, false, k + pad), wd = store(w, false, k + pad);
        const std::vector<float> xf(xd.begin(), xd.end());
        std::vector<float> wf;
        std::vector<bf16> wh;
        for (const double v : wd) {
          wh.push_back(bf16(v));
          wf.push_back(static_cast<float>(wh.back()));  // W's values, exact in both types
        }
        const auto want = [&](index_t i, index_t j) {
          double s = 0;
          for (index_t l = 0; l < k; ++l)
            s += static_cast<double>(xf[static_cast<std::size_t>(i * (k + pad) + l)]) *
                 wf[static_cast<std::size_t>(j * (k + pad) + l)];
          return -1.5 * s + (beta == 0.0f ? 0.0 : beta * static_cast<float>(c0(i, j)));
        };
        const auto run = [&](const std::string& path, auto&& compute) {
          CAPTURE(path);
          std::vector<float> c(static_cast<std::size_t>(m * (n + pad)), -7.0f);
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j)
              c[static_cast<std::size_t>(i * (n + pad) + j)] =
                  beta == 0.0f ? std::nanf("") : static_cast<float>(c0(i, j));
          compute(c.data());
          for (index_t i = 0; i < m; ++i) {
            for (index_t j = 0; j < n; ++j)
              CHECK(c[static_cast<std::size_t>(i * (n + pad) + j)] ==
                    doctest::Approx(want(i, j)).epsilon(1e-5));
            for (index_t j = n; j < n + pad; ++j)  // the padding is never written
              CHECK(c[static_cast<std::size_t>(i * (n + pad) + j)] == -7.0f);
          }
        };
        const auto args = [&]<class W>(const std::vector<W>& wv, float* c) {
          return host::simd::dots_args<W>{.x = xf.data(),
                                          .ldx = k + pad,
                                          .m = m,
                                          .w = wv.data(),
                                          .ldw = k + pad,
                                          .n = n,
                                          .k = k,
                                          .c = c,
                                          .ldc = n + pad,
                                          .alpha = -1.5f,
                                          .beta = beta};
        };
        const auto engine_gemm = [&]<class W>(const std::vector<W>& wv, float* c) {
          engine.gemm(gemm::gemm_args<float, W>{.op_b = op::transpose,
                                                .alpha = -1.5f,
                                                .a = {xf.data(), extents<2>{{m, k}}, k + pad},
                                                .b = {wv.data(), extents<2>{{n, k}}, k + pad},
                                                .beta = beta,
                                                .c = {c, extents<2>{{m, n}}, n + pad}});
        };
        run("narrow, float", [&](float* c) { host::simd::detail::dots_narrow(args(wf, c)); });
        run("narrow, bf16", [&](float* c) { host::simd::detail::dots_narrow(args(wh, c)); });
#ifdef TPX_HOST_WIDE_DOTS
        if (host::simd::wide_dots()) {
          run("wide, float", [&](float* c) { host::simd::detail::dots_wide(args(wf, c)); });
          run("wide, bf16", [&](float* c) { host::simd::detail::dots_wide(args(wh, c)); });
        }
#endif
        run("engine, float", [&](float* c) { engine_gemm(wf, c); });
        run("engine, bf16", [&](float* c) { engine_gemm(wh, c); });
      }
#ifdef TPX_HOST_WIDE_DOTS
  if (!host::simd::wide_dots()) MESSAGE("this CPU has no AVX2 + FMA: the wide kernel was not run");
#endif
}
