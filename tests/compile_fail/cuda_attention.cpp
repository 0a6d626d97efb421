// Must not compile: on the cuda backend a decoder layer stops at the one op family cuda::ops
// lacks, attention, with causal_attention's sentence naming the members (not a host-memory
// refusal, not pages of template errors).
#include "tpx/backend/cuda/backend.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
template class layer::decoder_layer<layer::block_mode::tensor,
                                    layer::swiglu_mlp<layer::block_mode::tensor, cuda::local_backend>,
                                    cuda::local_backend, float>;
