// The cuBLASLt engine against fp64 loops on the host: every transpose combination, alpha and
// beta, fused bias and bias gradient, padded operands, k = 0, in float, double, half and
// bfloat16; the plan cache; the kernels' bias add and bias gradient.

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../harness.hpp"
#include "platform.hpp"
#include "tpx/backend/cuda/gemm.hpp"

using namespace tpx;
using gemm::op;

namespace {

template <class T>
double tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  if constexpr (std::is_same_v<T, __half>) return 5e-3;
  return 2e-2;  // bfloat16
}

/// `m` (or its transpose) as T with leading dimension ld; padding holds 7.
template <class T>
std::vector<T> store(const test::dense& m, bool transpose, index_t ld) {
  const index_t rows = transpose ? m.cols : m.rows, cols = transpose ? m.rows : m.cols;
  std::vector<T> out(static_cast<std::size_t>(std::max<index_t>(rows * ld, 1)), T(7.0f));
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j)
      out[static_cast<std::size_t>(i * ld + j)] =
          T(static_cast<float>(transpose ? m(j, i) : m(i, j)));
  return out;
}

/// The value of an element as the device will see it (rounded to T), in double.
template <class T>
double as_t(double x) {
  return as_double(T(static_cast<float>(x)));
}

template <class T>
void check_every_combination(index_t m, index_t n, index_t k) {
  const test::dense a = test::random_dense(m, k, 1), b = test::random_dense(k, n, 2),
                    c0 = test::random_dense(m, n, 3);
  const std::vector<double> bias = test::random_dense(n, 1, 4).v;
  cuda::stream s;
  cuda::gemm_engine engine(s);
  const std::vector<T> bias_t = store<T>(test::column(bias), false, 1);
  const auto bias_d = cuda::to_device(std::span<const T>(bias_t));
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const int epilogue : {0, 1, 2}) {  // none, bias, bias gradient
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(epilogue);
        const index_t pad = 3;
        const index_t a_cols = ta ? m : k, b_cols = tb ? k : n;
        const auto a_d = cuda::to_device(std::span<const T>(store<T>(a, ta, a_cols + pad)));
        const auto b_d = cuda::to_device(std::span<const T>(store<T>(b, tb, b_cols + pad)));
        auto c_d = cuda::to_device(std::span<const T>(store<T>(c0, false, n + pad)));
        cuda::device_buffer<T> db_d(static_cast<std::size_t>(m));
        test::cuda_platform::poison(db_d);
        const float alpha = epilogue == 2 ? 1.0f : 0.5f, beta = -2.0f;
        engine.gemm(
            gemm::gemm_args<T>{.op_a = ta ? op::transpose : op::none,
                               .op_b = tb ? op::transpose : op::none,
                               .alpha = T(alpha),
                               .a = {a_d.data(), extents<2>{{ta ? k : m, a_cols}}, a_cols + pad},
                               .b = {b_d.data(), extents<2>{{tb ? n : k, b_cols}}, b_cols + pad},
                               .beta = T(beta),
                               .c = {c_d.data(), extents<2>{{m, n}}, n + pad},
                               .bias = epilogue == 1 ? bias_d.span() : std::span<const T>(),
                               .bias_grad = epilogue == 2 ? db_d.span() : std::span<T>()});
        const std::vector<T> c = cuda::to_host(c_d.data(), c_d.size(), s);
        double scale = 1, worst = 0;
        for (index_t i = 0; i < m; ++i) {
          for (index_t j = 0; j < n; ++j) {
            double want = beta * as_t<T>(c0(i, j)) +
                          (epilogue == 1 ? as_t<T>(bias[static_cast<std::size_t>(j)]) : 0.0);
            for (index_t p = 0; p < k; ++p) want += alpha * as_t<T>(a(i, p)) * as_t<T>(b(p, j));
            scale = std::max(scale, std::abs(want));
            const double got = as_double(c[static_cast<std::size_t>(i * (n + pad) + j)]);
            worst = std::max(worst, std::isnan(got) ? INFINITY : std::abs(got - want));
          }
          CHECK(as_double(c[static_cast<std::size_t>(i * (n + pad) + n)]) == 7.0);
        }
        CHECK(worst / scale < tolerance<T>());
        if (epilogue == 2) {
          const std::vector<T> db = cuda::to_host(db_d.data(), db_d.size(), s);
          for (index_t i = 0; i < m; ++i) {
            double want = 0;
            for (index_t p = 0; p < k; ++p) want += as_t<T>(a(i, p));
            CHECK(std::abs(as_double(db[static_cast<std::size_t>(i)]) - want) <
                  tolerance<T>() * std::max(1.0, std::abs(want)) * 4);
          }
        }
      }
}

}  // namespace

TEST_CASE_TEMPLATE("cuBLASLt GEMMs match the fp64 loops for every transpose and epilogue", T, float,
                   double, __half, __nv_bfloat16) {
  check_every_combination<T>(5, 4, 3);
  check_every_combination<T>(33, 17, 65);
  check_every_combination<T>(64, 128, 96);
}

TEST_CASE("k = 0 scales C by beta, and empty dims do nothing") {
  cuda::stream s;
  cuda::gemm_engine engine(s);
  std::vector<float> ch{1, 2, 3, 4, 5, 6};
  auto c = cuda::to_device(std::span<const float>(ch));
  cuda::device_buffer<float> empty;
  engine.gemm(gemm::gemm_args<float>{.a = make_matrix<const float>(empty.data(), 2, 0),
                                     .b = make_matrix<const float>(empty.data(), 0, 3),
                                     .beta = 0.5f,
                                     .c = make_matrix(c.data(), 2, 3)});
  CHECK(cuda::to_host(c.data(), 6, s) == std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3});
  engine.gemm(gemm::gemm_args<float>{.a = make_matrix<const float>(empty.data(), 2, 0),
                                     .b = make_matrix<const float>(empty.data(), 0, 3),
                                     .c = make_matrix(c.data(), 2, 3)});
  CHECK(cuda::to_host(c.data(), 6, s) == std::vector<float>(6, 0.0f));
}

TEST_CASE("a shape's heuristic runs once; later calls reuse the cached plan") {
  cuda::stream s;
  cuda::gemm_engine engine(s);
  cuda::device_buffer<float> a(64 * 32), b(32 * 16), c(64 * 16);
  const auto call = [&](index_t rows) {
    engine.gemm(gemm::gemm_args<float>{.a = make_matrix<const float>(a.data(), rows, 32),
                                       .b = make_matrix<const float>(b.data(), 32, 16),
                                       .c = make_matrix(c.data(), rows, 16)});
  };
  call(64);
  CHECK(engine.statistics().plans == 1);
  for (int i = 0; i < 5; ++i) call(64);
  CHECK(engine.statistics().plans == 1);
  CHECK(engine.statistics().gemms == 6);
  call(32);
  CHECK(engine.statistics().plans == 2);
  s.synchronize();
}

TEST_CASE("add_bias and bias_grad kernels") {
  cuda::stream s;
  cuda::gemm_engine engine(s);
  std::vector<double> yh{1, 2, 3, 4, 5, 6}, bh{10, 20};
  auto y = cuda::to_device(std::span<const double>(yh));
  auto b = cuda::to_device(std::span<const double>(bh));
  cuda::device_buffer<double> db(2);
  engine.bias_grad(make_matrix<const double>(y.data(), 3, 2), db.span());
  CHECK(cuda::to_host(db.data(), 2, s) == std::vector<double>{9, 12});
  engine.add_bias(make_matrix(y.data(), 3, 2), std::span<const double>(b.data(), 2));
  CHECK(cuda::to_host(y.data(), 6, s) == std::vector<double>{11, 22, 13, 24, 15, 26});
  CHECK_THROWS_WITH_AS(
      engine.add_bias(make_matrix(y.data(), 2, 3), std::span<const double>(b.data(), 2)),
      "cuda::gemm_engine::add_bias: the bias has 2 elements but C has 3 columns", tpx::error);
}

TEST_CASE("a GEMM captured on one stream replays on new input") {
  cuda::stream s;
  cuda::gemm_engine engine(s);
  const test::dense w = test::random_dense(8, 16, 31);
  const std::vector<float> wf = test::whole<float>(w);
  const auto wd = cuda::to_device(std::span<const float>(wf));
  cuda::device_buffer<float> x(4 * 16), y(4 * 8);
  const auto step = [&] {
    engine.gemm(gemm::gemm_args<float>{.op_b = op::transpose,
                                       .a = make_matrix<const float>(x.data(), 4, 16),
                                       .b = make_matrix<const float>(wd.data(), 8, 16),
                                       .c = make_matrix(y.data(), 4, 8)});
  };
  step();  // the plan exists before capture
  const cuda::graph g = cuda::capture(s, step);
  CHECK(g.nodes() > 0);
  for (const std::uint64_t seed : {41u, 42u}) {
    const test::dense xd = test::random_dense(4, 16, seed);
    const std::vector<float> xf = test::whole<float>(xd);
    cuda::copy_to_device(std::span<const float>(xf), x.data());
    test::cuda_platform::poison(y);
    g.launch(s);
    const std::vector<float> got = cuda::to_host(y.data(), y.size(), s);
    CHECK(test::relative_error<float>(got, test::linear_forward(xd, w, {}), {0, 4}, {0, 8}) < 1e-5);
  }
}
