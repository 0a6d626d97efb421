// Compiles: the SwiGLU MLP and the norms are linear layers and element ops, all of which the cuda
// backend has (the twin of cuda_attention.cpp and cuda_moe.cpp).
#include "tpx/backend/cuda/backend.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
template class layer::swiglu_mlp<layer::block_mode::tensor, cuda::local_backend, float>;
template class layer::swiglu_mlp<layer::block_mode::sequence, cuda::local_backend, double>;
template class layer::rms_norm<style::sequence_parallel, cuda::local_backend, float>;
