#pragma once
// Shared by the MoE and decoder-block tests and by tpx-demo: random MoE weights, the oracle's
// routing as tpx routing options, and the oracle's block weights kept as T with the views and
// options tpx's decoder layers are built from (`decoder_layer::build`).

#include <cstdint>
#include <vector>

#include "oracle.hpp"
#include "tpx/layer/decoder.hpp"

namespace tpx::test {

/// Router [E, H] (seed), expert e's gate_up [2I, H] and down [H, I] (seed + 10 + 2e, + 11 + 2e),
/// the shared expert's [2Is, H] and [H, Is] (seed + 1, + 2).
inline moe_weights random_moe(index_t experts, index_t hidden, index_t inter, index_t shared_inter,
                              std::uint64_t seed) {
  moe_weights w;
  w.router = random_dense(experts, hidden, seed);
  for (index_t e = 0; e < experts; ++e) {
    w.gate_up.push_back(
        random_dense(2 * inter, hidden, seed + 10 + 2 * static_cast<std::uint64_t>(e)));
    w.down.push_back(random_dense(hidden, inter, seed + 11 + 2 * static_cast<std::uint64_t>(e)));
  }
  w.shared_gate_up = random_dense(2 * shared_inter, hidden, seed + 1);
  w.shared_down = random_dense(hidden, shared_inter, seed + 2);
  w.inter = inter;
  w.shared_inter = shared_inter;
  return w;
}

/// The oracle's routing as tpx's, for `experts` experts.
inline ops::routing_options routing_of(const moe_routing& r, index_t experts) {
  return {.n_experts = experts,
          .top_k = r.top_k,
          .score = r.sigmoid ? ops::scoring::sigmoid : ops::scoring::softmax,
          .renormalize = r.renormalize,
          .scale = r.scale,
          .selection_bias = r.selection_bias};
}

/// Matrices one after the other, as T: [E, rows, cols] from E matrices of [rows, cols].
template <class T>
std::vector<T> stacked(const std::vector<dense>& ms) {
  std::vector<T> out;
  for (const dense& m : ms) out.insert(out.end(), m.v.begin(), m.v.end());
  return out;
}

/// The oracle's block weights as T, and the views and options a tpx decoder layer is built from.
/// Keeps a reference to `w`, which must outlive it.
template <class T>
class block_storage {
 public:
  explicit block_storage(const block_weights& w)
      : w_(&w),
        norm1_(w.norm1.begin(), w.norm1.end()),
        norm2_(w.norm2.begin(), w.norm2.end()),
        q_(whole<T>(w.q)),
        k_(whole<T>(w.k)),
        v_(whole<T>(w.v)),
        o_(whole<T>(w.o)),
        gate_up_(whole<T>(w.gate_up)),
        down_(whole<T>(w.down)),
        router_(whole<T>(w.experts.router)),
        experts_gate_up_(stacked<T>(w.experts.gate_up)),
        experts_down_(stacked<T>(w.experts.down)),
        shared_gate_up_(whole<T>(w.experts.shared_gate_up)),
        shared_down_(whole<T>(w.experts.shared_down)) {}

  layer::decoder_weights<T> weights() const {
    const block_weights& w = *w_;
    const index_t h = w.q.cols, e = w.experts.router.rows, i = w.experts.inter;
    return {.input_norm = norm1_,
            .post_norm = norm2_,
            .attention = {view(q_, w.q), view(k_, w.k), view(v_, w.v), view(o_, w.o)},
            .mlp = {make_matrix(gate_up_.data(), w.inter, h),
                    make_matrix(gate_up_.data() + w.inter * h, w.inter, h), view(down_, w.down)},
            .router = view(router_, w.experts.router),
            .gate_up = tensor_view<const T, 3>(experts_gate_up_.data(), {{e, 2 * i, h}}),
            .down = tensor_view<const T, 3>(experts_down_.data(), {{e, h, i}}),
            .shared_gate_up = view(shared_gate_up_, w.experts.shared_gate_up),
            .shared_down = view(shared_down_, w.experts.shared_down)};
  }

  layer::decoder_options options() const {
    const block_weights& w = *w_;
    const index_t e = w.experts.router.rows;
    return {.attention = {.heads = {w.heads.n_heads, w.heads.n_kv_heads, w.heads.head_dim},
                          .rope_theta = w.theta},
            .eps = w.eps,
            .routing = routing_of(w.routing, e),
            .experts = {.name = "block_sparse_moe",
                        .n_experts = e,
                        .hidden = w.q.cols,
                        .inter = w.experts.inter,
                        .top_k = w.routing.top_k,
                        .shared_inter = w.experts.shared_inter}};
  }

  /// Builds the layer on this rank.
  template <class Layer>
  Layer build(typename Layer::engine_type& engine, typename Layer::comm_type& comm) const {
    return Layer::build(engine, comm, weights(), options());
  }

 private:
  static matrix_view<const T> view(const std::vector<T>& v, const dense& m) {
    return make_matrix(v.data(), m.rows, m.cols);
  }

  const block_weights* w_;
  std::vector<T> norm1_, norm2_, q_, k_, v_, o_, gate_up_, down_, router_, experts_gate_up_,
      experts_down_, shared_gate_up_, shared_down_;
};

}  // namespace tpx::test
