// The routed experts (with and without a shared expert) of every `style::moe_experts` mode on the
// cuda backend — `cuda::ops` row moves and SwiGLU, cuBLASLt grouped GEMMs, the device-local
// communicator (all-to-all-v included) — for given routing, against the host fp64 oracle for
// tp/ep ∈ {1, 2, 4, 8}, in float (≤ 1e-5) and bfloat16 (≤ 2e-2): y, dx, d(routing weights) and
// every expert-gradient shard; experts without tokens, ranks without tokens, widths past one block.

#include <doctest/doctest.h>

#include <vector>

#include "../experts_harness.hpp"
#include "platform.hpp"

using namespace tpx;
using P = test::cuda_platform;

TEST_CASE_TEMPLATE("the experts on the GPU reproduce the oracle in every mode", S,
                   style::moe_tensor, style::moe_tensor_sp, style::moe_all_to_all,
                   style::moe_masked) {
  std::vector<test::experts_case> cases = test::experts_cases();
  cases.push_back(  // wider than a block of threads
      {.tokens = 40, .experts = 8, .hidden = 300, .inter = 24, .shared_inter = 16, .top_k = 2});
  for (const test::experts_case& k : cases)
    for (const int tp : {1, 2, 4, 8}) {
      CAPTURE(tp);
      CAPTURE(k.tokens);
      CAPTURE(k.hidden);
      CHECK(test::check_experts<S, float, P>(tp, k) < 1e-5);
      CHECK(test::check_experts<S, __nv_bfloat16, P>(tp, k) < 2e-2);
    }
}
