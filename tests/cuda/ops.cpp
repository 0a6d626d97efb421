// The element ops' laws on the cuda backend (tests/ops/element_laws.hpp): every `cuda::ops`
// kernel against the fp64 oracle in f32 and f64, on strided views, with rows wider than a
// block's threads; and the adjoint and gradient laws in f64.

#include <doctest/doctest.h>

#include <type_traits>

#include "../ops/element_laws.hpp"
#include "platform.hpp"

using namespace tpx;

TEST_CASE_TEMPLATE("cuda element ops equal the fp64 oracle, member by member", T, float, double) {
  test::laws::check_against_oracle<test::cuda_platform, T>(std::is_same_v<T, float> ? 2e-5 : 1e-12);
}

TEST_CASE("cuda element ops: spread and combine are adjoint, backward is forward's derivative") {
  test::laws::check_adjoint_and_gradients<test::cuda_platform>();
}
