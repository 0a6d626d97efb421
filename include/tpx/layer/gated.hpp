#pragma once
/// \file
/// `swiglu_step<Backend, T>`: the gated middle both feed-forwards share — `swiglu_mlp` between its
/// gate|up and down layers, the experts between their grouped GEMMs. Forward: the first projection
/// writes h = [gate | up] [tokens × 2I], a = silu(gate) ⊙ up [tokens × I] goes to the second.
/// Backward: the second projection's backward gives da, dh = SwiGLU'(h) · da goes to the first's.
/// It keeps h and a of the last forward for backward; the projections are callables, so the step
/// knows nothing of how they are split. (A GeGLU feed-forward is this step with its activation.)

#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"

namespace tpx::inline v0::layer {

template <backend_with_ops Backend, class T>
class swiglu_step {
 public:
  /// `up(h)` fills h [tokens × 2I]; `down(a)` reads a [tokens × I].
  template <class Up, class Down>
  void forward(typename Backend::ops& ops, index_t tokens, index_t inter, Up&& up, Down&& down) {
    const matrix_view<T> h = detail::sized(h_, tokens, 2 * inter),
                         a = detail::sized(a_, tokens, inter);
    up(h);
    ops.swiglu_forward(read_only(h), a);
    down(read_only(a));
  }

  /// `down_back(a, da)` fills da [tokens × I] from the last forward's a; `up_back(dh)` reads
  /// dh [tokens × 2I].
  template <class DownBack, class UpBack>
  void backward(typename Backend::ops& ops, index_t tokens, index_t inter, DownBack&& down_back,
                UpBack&& up_back) {
    const matrix_view<const T> h = make_matrix<const T>(h_.data(), tokens, 2 * inter),
                               a = make_matrix<const T>(a_.data(), tokens, inter);
    const matrix_view<T> da = detail::sized(da_, tokens, inter),
                         dh = detail::sized(dh_, tokens, 2 * inter);
    down_back(a, da);
    ops.swiglu_backward(h, read_only(da), dh);
    up_back(read_only(dh));
  }

 private:
  typename Backend::template buffer<T> h_, a_, da_, dh_;
};

}  // namespace tpx::inline v0::layer
