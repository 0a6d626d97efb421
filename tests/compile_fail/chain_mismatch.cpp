// Must not compile: a rowwise layer's output is replicated, but a rowwise input is shard<1>.
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/chain.hpp"
#include "tpx/layer/linear.hpp"

using namespace tpx;
using row = layer::linear<style::rowwise<>, host::backend, float>;

void build(row& a, row& b) {
  layer::chain<row, row> mlp(a, b);
}
