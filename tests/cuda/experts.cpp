// The routed experts (with and without a shared expert) of every `style::moe_experts` mode on the
// cuda backend — `cuda::ops` row moves and SwiGLU, cuBLASLt grouped GEMMs, the device-local
// communicator (all-to-all-v included) — for given routing, against the host fp64 oracle for
// tp/ep ∈ {1, 2, 4, 8}, in float (≤ 1e-5) and bfloat16 (≤ 2e-2): y, dx, d(routing weights) and
// every expert-gradient shard; experts without tokens, ranks without tokens, widths past one block.

#include <doctest/doctest.h>

#include "../experts_harness.hpp"
#include "platform.hpp"

using namespace tpx;
using P = test::cuda_platform;

TEST_CASE_TEMPLATE("the experts on the GPU reproduce the oracle in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  const test::experts_case cases[] = {
      {.tokens = 7, .experts = 8, .hidden = 6, .inter = 5, .top_k = 2},
      {.tokens = 5, .experts = 8, .hidden = 5, .inter = 4, .shared_inter = 3, .top_k = 3},
      {.tokens = 2, .experts = 8, .hidden = 4, .inter = 3, .shared_inter = 2, .top_k = 1},
      {.tokens = 0, .experts = 8, .hidden = 3, .inter = 2, .top_k = 2},
      {.tokens = 40, .experts = 8, .hidden = 300, .inter = 24, .shared_inter = 16, .top_k = 2},
  };
  for (const test::experts_case& k : cases)
    for (const int tp : {1, 2, 4, 8}) {
      CAPTURE(tp);
      CAPTURE(k.tokens);
      CAPTURE(k.hidden);
      CHECK(test::check_experts<S, float, P>(tp, k) < 1e-5);
      CHECK(test::check_experts<S, __nv_bfloat16, P>(tp, k) < 2e-2);
    }
}
