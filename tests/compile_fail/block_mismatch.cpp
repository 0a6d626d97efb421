// A tensor-mode block (replicated tokens) with all-to-all expert parallel experts (token shards):
// the feed-forward's layout is not the norm's, which tpx::decoder_layer refuses at compile time.
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/decoder.hpp"

using namespace tpx;
using ffn = layer::moe_ffn<style::moe_all_to_all, host::backend, float>;
template class layer::decoder_layer<layer::block_mode::tensor, ffn, host::backend, float>;
