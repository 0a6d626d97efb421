// The twin that compiles: bf16 weights, float compute (every member instantiated, SP mode).
#include "tpx/backend/host/backend.hpp"
#include "tpx/model/causal_lm.hpp"

using namespace tpx;
template class model::causal_lm<layer::block_mode::sequence,
                                layer::weights_in<host::backend, bf16>, float>;
