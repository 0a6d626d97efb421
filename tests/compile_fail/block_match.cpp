// The twin of block_mismatch.cpp: a sequence-mode block (token shards) takes all-to-all experts.
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
using ffn = layer::moe_ffn<style::moe_all_to_all, host::backend, float>;
template class layer::decoder_layer<layer::block_mode::sequence, ffn, host::backend, float>;
