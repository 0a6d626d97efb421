// Must not compile: on the cuda backend a MoE layer stops at the top-k routing cuda::ops lacks,
// with moe's sentence naming the members.
#include "tpx/backend/cuda/backend.hpp"
#include "tpx/layer/moe.hpp"

using namespace tpx;
template class layer::moe<style::moe_tensor, cuda::local_backend, float>;
