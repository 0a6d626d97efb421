// A causal LM computing in bf16 on the host: the host's GEMM engine computes in float or double,
// and tpx::causal_lm says so in one sentence naming what to use instead (weights_in).
#include "tpx/backend/host/backend.hpp"
#include "tpx/model/causal_lm.hpp"

using namespace tpx;
template class model::causal_lm<layer::block_mode::tensor, host::backend, bf16>;
