#pragma once
/// \file
/// `host::ops`: the element-wise work of the layers that is not a GEMM or a collective (RMSNorm,
/// the embedding lookup and its gradient, the cross-entropy's row statistics and gradient, the
/// experts' row moves, SwiGLU, routing), over host memory in T: the reference loops of
/// ops/reference.hpp, with SwiGLU vectorised here, and attention through the GEMM engine
/// (host/attention.hpp). Every backend has an `ops` type with these members; the cuda backend's
/// (`cuda::ops`) launches kernels on the rank's stream. Layers hold one, built from the rank's
/// communicator, and never loop over activations themselves.
///
/// Shapes are checked by the layers that call these; an `ops` member assumes them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "tpx/backend/host/attention.hpp"
#include "tpx/backend/host/simd.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/ops/concept.hpp"
#include "tpx/ops/elementwise.hpp"
#include "tpx/ops/reference.hpp"
#include "tpx/ops/routing.hpp"

namespace tpx::inline v0::host {

/// The reference loops (`ops::reference::elements`), SwiGLU four floats at a time, and RoPE
/// and attention through the GEMM engine (`host::attention`).
class ops : public tpx::ops::reference::elements, public attention {
 public:
  ops() = default;
  /// Host loops need nothing of the rank; the constructor matches the other backends'.
  template <class Comm>
  explicit ops(const Comm&) {}

  /// a = silu(gate) ⊙ up for h = [gate | up]; floats four at a time through `simd::sigmoid`,
  /// doubles by the reference loop.
  template <class T>
  void swiglu_forward(matrix_view<const T> h, matrix_view<T> a) const {
    if constexpr (std::is_same_v<T, float>) {
      const index_t i = a.cols();
      if (i == 0) return;
      for (index_t r = 0; r < a.rows(); ++r) {
        const float* gate = &h(r, 0);
        const float* up = gate + i;
        float* out = &a(r, 0);
        for (index_t j = 0; j < i; j += 4) {
          const index_t n = std::min<index_t>(4, i - j);
          const simd::f32x4 g = simd::load(gate + j, n), u = simd::load(up + j, n);
          simd::store(out + j, n, g * simd::sigmoid(g) * u);
        }
      }
    } else {
      tpx::ops::swiglu<T>(h, a);
    }
  }
  /// dh = [da ⊙ up ⊙ silu'(gate) | da ⊙ silu(gate)], silu' = s (1 + g (1 − s)), s = sigmoid(g).
  template <class T>
  void swiglu_backward(matrix_view<const T> h, matrix_view<const T> da, matrix_view<T> dh) const {
    if constexpr (std::is_same_v<T, float>) {
      const index_t i = da.cols();
      if (i == 0) return;
      for (index_t r = 0; r < da.rows(); ++r) {
        const float* gate = &h(r, 0);
        const float* up = gate + i;
        const float* d = &da(r, 0);
        float* dgate = &dh(r, 0);
        float* dup = dgate + i;
        for (index_t j = 0; j < i; j += 4) {
          const index_t n = std::min<index_t>(4, i - j);
          const simd::f32x4 g = simd::load(gate + j, n), u = simd::load(up + j, n),
                            dv = simd::load(d + j, n), s = simd::sigmoid(g);
          simd::store(dgate + j, n, dv * u * s * (1.0f + g * (1.0f - s)));
          simd::store(dup + j, n, dv * g * s);
        }
      }
    } else {
      tpx::ops::swiglu_backward<T>(h, da, dh);
    }
  }
};

static_assert(tpx::ops::element_ops<ops> && tpx::ops::attention_ops<ops> &&
              tpx::ops::routing_ops<ops> &&
              tpx::ops::activation_ops_of<ops, tpx::ops::activation::silu, float>);

}  // namespace tpx::inline v0::host
