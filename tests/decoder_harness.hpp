#pragma once
// Whole decoder layers against the fp64 oracle on any platform (thread ranks, MPI processes): a
// block's random weights, and the check of its output, dx and every weight gradient on every rank.
// Used by tests/layer/decoder.cpp and the mpi suite.

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "block_harness.hpp"
#include "layer/grads.hpp"
#include "linear_harness.hpp"
#include "tpx/layer/decoder.hpp"

namespace tpx::test {

struct block_case {
  index_t tokens = 7, hidden = 10, inter = 9;
  shard::gqa heads{24, 4, 2};  // tp 8 replicates each KV head on 2 ranks
  bool moe = false;
  index_t experts = 8, top_k = 2, expert_inter = 5, shared_inter = 0;
  std::uint64_t seed = 500;
};

inline block_weights make_block(const block_case& k) {
  block_weights w;
  const index_t d = k.heads.head_dim, nq = k.heads.n_heads * d, nkv = k.heads.n_kv_heads * d;
  w.heads = {k.heads.n_heads, k.heads.n_kv_heads, d};
  w.norm1 = random_dense(k.hidden, 1, k.seed).v;
  w.norm2 = random_dense(k.hidden, 1, k.seed + 1).v;
  for (double& v : w.norm1) v += 1.5;
  for (double& v : w.norm2) v += 1.5;
  w.q = random_dense(nq, k.hidden, k.seed + 2);
  w.k = random_dense(nkv, k.hidden, k.seed + 3);
  w.v = random_dense(nkv, k.hidden, k.seed + 4);
  w.o = random_dense(k.hidden, nq, k.seed + 5);
  w.moe = k.moe;
  if (!k.moe) {
    w.inter = k.inter;
    w.gate_up = random_dense(2 * k.inter, k.hidden, k.seed + 6);
    w.down = random_dense(k.hidden, k.inter, k.seed + 7);
    return w;
  }
  w.routing = {.top_k = k.top_k};
  w.experts = random_moe(k.experts, k.hidden, k.expert_inter, k.shared_inter, k.seed + 8);
  return w;
}

/// Runs the layer on tp ranks of platform P; returns the worst relative error over y, dx and
/// every gradient (under MPI: this process's rank's).
template <class Layer, class T, class P = host_platform>
double check_block(int tp, const block_case& k) {
  const block_weights w = make_block(k);
  const dense x = random_dense(k.tokens, k.hidden, k.seed + 50);
  const dense dy = random_dense(k.tokens, k.hidden, k.seed + 51);
  const block_result ref = decoder_layer(x, w, dy);
  const block_storage<T> s(w);
  const shard::partition rows = shard::partition::split(k.tokens, tp, shard::split_kind::balanced);
  std::vector<double> errors(static_cast<std::size_t>(tp), 0.0);
  P::run(tp, [&](auto& engine, auto& c) {
    Layer block = s.template build<Layer>(engine, c);
    constexpr bool sp = Layer::mode == layer::block_mode::sequence;
    const shard::interval mine = sp ? rows.of(c.rank()).parts[0] : shard::interval{0, k.tokens};
    const shard::pieces all{{{0, k.hidden}}};
    const std::vector<T> xl = detail::take<T>(x, mine, all),
                         dyl = detail::take<T>(dy, mine, all);
    std::vector<T> yl(xl.size()), dxl(xl.size());
    detail::poison(yl);
    detail::poison(dxl);
    block.forward(make_matrix(xl.data(), mine.size(), k.hidden),
                  make_matrix(yl.data(), mine.size(), k.hidden), k.tokens);
    block.backward(make_matrix(xl.data(), mine.size(), k.hidden),
                   make_matrix(dyl.data(), mine.size(), k.hidden),
                   make_matrix(dxl.data(), mine.size(), k.hidden), k.tokens);
    using L = std::conditional_t<sp, style::layout::shard<0>, style::layout::replicate>;
    const auto y = detail::gather_full<L>(c, yl, k.tokens, k.hidden, rows);
    const auto dx = detail::gather_full<L>(c, dxl, k.tokens, k.hidden, rows);
    double& e = errors[static_cast<std::size_t>(c.rank())];
    const auto note = [&](double v) { e = std::max(e, v); };
    note(relative_error<T>(y, ref.y, {0, k.tokens}, {0, k.hidden}));
    note(relative_error<T>(dx, ref.dx, {0, k.tokens}, {0, k.hidden}));
    note(vector_grad_error(block.input_norm().weight_grad(), ref.dnorm1));
    note(vector_grad_error(block.post_norm().weight_grad(), ref.dnorm2));
    dense dqkv(ref.dq.rows + 2 * ref.dk.rows, k.hidden);
    dqkv.v = ref.dq.v;
    dqkv.v.insert(dqkv.v.end(), ref.dk.v.begin(), ref.dk.v.end());
    dqkv.v.insert(dqkv.v.end(), ref.dv.v.begin(), ref.dv.v.end());
    note(linear_grad_error(block.attention().qkv(), dqkv));
    note(linear_grad_error(block.attention().o(), ref.dout));
    if constexpr (std::is_same_v<typename Layer::ffn_type,
                                 layer::swiglu_mlp<Layer::mode, typename P::backend, T>>) {
      note(linear_grad_error(block.ffn().gate_up(), ref.dgate_up));
      note(linear_grad_error(block.ffn().down(), ref.ddown));
    } else {
      note(moe_grad_error(block.ffn(), ref.experts, k.expert_inter, k.shared_inter));
    }
  });
  return *std::max_element(errors.begin(), errors.end());
}

}  // namespace tpx::test
