// The twin of chain_mismatch.cpp that compiles: colwise (shard<1> out) feeds rowwise (shard<1> in).
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/chain.hpp"
#include "tpx/layer/linear.hpp"

using namespace tpx;
using col = layer::linear<style::colwise<>, host::backend, float>;
using row = layer::linear<style::rowwise<>, host::backend, float>;

void build(col& a, row& b) {
  layer::chain<col, row> mlp(a, b);
}
