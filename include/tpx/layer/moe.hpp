#pragma once
/// \file
/// `moe<Style, Backend, T>`: a mixture-of-experts layer — replicated router, top-k routing, the
/// experts (and shared expert) of `experts<Style>` — composed, forward and backward.
///
///   x ─ router (replicated linear) ─ logits ─ route ─ ids, w ─┐
///   x ──────────────────────────────────────────────────────── experts<Style> ─ y
///
/// The router sees the tokens the style gives each rank: every token (tensor, masked: its
/// gradient is the same on every rank) or the rank's token block (tensor_sequence, all_to_all:
/// its gradient is all-reduced, HF's `replicated_with_grad_allreduce`).

#include <cstdint>
#include <type_traits>
#include <vector>

#include "tpx/layer/experts.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/ops/routing.hpp"

namespace tpx::inline v0::layer {

template <class Style, backend_with_ops Backend, class T = float>
class moe {
  static_assert(ops::routing_ops_of<typename Backend::ops, T>,
                "tpx::moe: the backend's ops have no top-k routing (ops::routing_ops: route, "
                "route_backward); cuda::ops has none yet");

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  using buffer = typename Backend::template buffer<T>;
  using router_style =
      std::conditional_t<std::is_same_v<typename Style::input, style::layout::shard<0>>,
                         style::replicate_grad_all_reduce, style::replicate<>>;
  using router_type = linear<router_style, Backend, T>;
  using experts_type = experts<Style, Backend, T>;
  /// What the router's and experts' weights are held as: T, or narrower under `weights_in`.
  using weight_type = weight_t<Backend, T>;

  /// `router` [E, H]; the experts as `experts` takes them.
  moe(engine_type& engine, comm_type& comm, matrix_view<const weight_type> router,
      ops::routing_options routing, tensor_view<const weight_type, 3> gate_up,
      tensor_view<const weight_type, 3> down, matrix_view<const weight_type> shared_gate_up,
      matrix_view<const weight_type> shared_down, experts_options options)
      : moe(engine, comm, router, std::move(routing),
            experts_type(engine, comm, gate_up, down, shared_gate_up, shared_down, options)) {}

  /// `router` [E, H] (replicated: every rank passes all of it) and experts built already (from
  /// the full tensors or from this rank's shards).
  moe(engine_type& engine, comm_type& comm, matrix_view<const weight_type> router,
      ops::routing_options routing, experts_type&& experts)
      : routing_(std::move(routing)),
        router_(engine, comm, router, {},
                {.name = experts.name() + ".gate",
                 .out_features = experts.n_experts(),
                 .in_features = experts.hidden()}),
        experts_(std::move(experts)),
        ops_(comm) {
    routing_.check();
    expect(routing_.n_experts == experts_.n_experts() && routing_.top_k == experts_.top_k(),
           "{}: the routing picks {} of {} experts but the experts layer has top_k {} of {}",
           experts_.name(), routing_.top_k, routing_.n_experts, experts_.top_k(),
           experts_.n_experts());
  }

  router_type& router() noexcept { return router_; }
  const ops::routing_options& routing() const noexcept { return routing_; }
  experts_type& experts_layer() noexcept { return experts_; }
  /// The routing of the last forward, [n, k].
  matrix_view<const std::int64_t> ids() const {
    return make_matrix<const std::int64_t>(ids_.data(), rows_, routing_.top_k);
  }
  matrix_view<const T> weights() const {
    return make_matrix<const T>(w_.data(), rows_, routing_.top_k);
  }

  /// `total_tokens` is needed under tensor_sequence only (see experts).
  void forward(matrix_view<const T> x, matrix_view<T> y, index_t total_tokens = -1) {
    rows_ = x.rows();
    const index_t e = routing_.n_experts, k = routing_.top_k;
    const matrix_view<T> logits = detail::sized(logits_, rows_, e);
    router_.forward(x, logits);
    ops_.route(read_only(logits), routing_, detail::sized(ids_, rows_, k),
               detail::sized(w_, rows_, k));
    experts_.forward(x, ids(), weights(), y, total_tokens);
  }

  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t total_tokens = -1) {
    expect(x.rows() == rows_, "{}: backward for {} tokens needs a forward on as many",
           router_.name(), x.rows());
    const index_t e = routing_.n_experts, k = routing_.top_k;
    const matrix_view<T> dw = detail::sized(dw_, rows_, k);
    experts_.backward(x, ids(), weights(), dy, dx, dw, total_tokens);
    const matrix_view<const T> logits = make_matrix<const T>(logits_.data(), rows_, e);
    const matrix_view<T> dlogits = detail::sized(dlogits_, rows_, e);
    ops_.route_backward(logits, routing_, ids(), read_only(dw), dlogits);
    const matrix_view<T> dxr = detail::sized(dx_router_, rows_, x.cols());
    router_.backward(x, dlogits, dxr);
    ops_.add(dx, read_only(dxr));
  }

 private:
  ops::routing_options routing_;
  router_type router_;
  experts_type experts_;
  typename Backend::ops ops_;
  index_t rows_ = 0;
  std::vector<std::int64_t> ids_;
  buffer logits_, w_, dw_, dlogits_, dx_router_;
};

}  // namespace tpx::inline v0::layer
