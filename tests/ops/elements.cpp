// The element ops' laws on the host (tests/ops/element_laws.hpp): the reference loops
// (`ops::reference::elements`) and `host::ops` (the reference with its own vectorised SwiGLU)
// against the fp64 oracle in f32 and f64, and the adjoint and gradient laws in f64.

#include <doctest/doctest.h>

#include <type_traits>

#include "../linear_harness.hpp"
#include "element_laws.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/ops/reference.hpp"

using namespace tpx;

namespace {
/// The host platform with the reference loops as its ops.
struct reference_platform : test::host_platform {
  struct backend {
    using ops = tpx::ops::reference::elements;
  };
};
}  // namespace

TEST_CASE_TEMPLATE("the reference element ops equal the fp64 oracle, member by member", T, float,
                   double) {
  test::laws::check_against_oracle<reference_platform, T>(std::is_same_v<T, float> ? 2e-5 : 1e-12);
}

TEST_CASE(
    "the reference element ops: spread and combine are adjoint, backward is forward's "
    "derivative") {
  test::laws::check_adjoint_and_gradients<reference_platform>();
}

TEST_CASE_TEMPLATE("host element ops equal the fp64 oracle, member by member", T, float, double) {
  test::laws::check_against_oracle<test::host_platform, T>(std::is_same_v<T, float> ? 2e-5 : 1e-12);
}

TEST_CASE("host element ops: spread and combine are adjoint, backward is forward's derivative") {
  test::laws::check_adjoint_and_gradients<test::host_platform>();
}
