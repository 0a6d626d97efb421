#pragma once
/// \file
/// The `element_ops` concept: the element-wise work a backend does for the layers, beside its GEMM
/// engine and communicator. A backend names its implementation `Backend::ops` (built from the
/// rank's communicator) and asserts the concept right under it; `ops::reference::elements`
/// (ops/reference.hpp) is the reference — plain loops over host memory, which `host::ops` builds
/// on — and `cuda::ops` the same members as kernels on the rank's stream. Buffers are views in the
/// backend's memory; ids, targets and index maps are host spans (the routing bookkeeping is
/// computed on the host, where the ids are).
///
/// | member                                        | does |
/// |-----------------------------------------------|-----------------------------------------------|
/// | rms_norm_forward(x, w, eps, y)                | y = x / rms(x) ⊙ w, per row | |
/// rms_norm_backward(x, w, eps, dy, dx, dw)      | dx and dw (dw overwritten, summed over rows)  |
/// | embedding_forward(ids, table, first, y)       | rows of the rank's vocab slice, zero
/// elsewhere| | embedding_backward(ids, dy, first, dtable)    | dy rows added into the slice's rows
/// | | row_max(logits, max)                          | per-row maximum | |
/// cross_entropy_sums(logits, max, targets, first, sums) | Σ exp(l − max) and the target logit   |
/// | cross_entropy_backward(logits, max, sum, targets, first, ignore, scale, dlogits) | | |
/// gather_rows(src, from, dst)                   | dst[r] = src[from[r]] (zero where −1)         |
/// | spread_rows(src, to, k, w, dst)               | rows to k slots each, optionally weighted | |
/// combine_rows(src, from, k, w, dst)            | dst[t] = Σ_j w[t, j] · src[from[t·k + j]]     |
/// | row_dots(a, b, from, out)                     | per-assignment dot products | |
/// swiglu_forward(h, a), swiglu_backward(h, da, dh) | gated SiLU of [gate | up]                  |
/// | add(a, b)                                     | a += b | | copy(from, to) | to = from (any
/// leading dimensions)            | | copy_to_host(from, to), copy_from_host(from, to) | between
/// backend and host memory            |
///
/// RoPE and attention are `ops::attention_ops` (ops/attention.hpp), a concept of their own: a
/// backend may model the element-wise ops without them. Routing is still host loops inside the
/// layers.

#include <concepts>
#include <cstdint>
#include <span>

#include "tpx/core/tensor_view.hpp"

namespace tpx::inline v0::ops {

/// Ops `O` do every element-wise operation of the layers on element type `T`.
template <class O, class T>
concept element_ops_of = requires(O& o, matrix_view<const T> in, matrix_view<T> out,
                                  std::span<const T> values, std::span<T> result,
                                  std::span<const std::int64_t> ids, std::span<const index_t> rows,
                                  index_t n, double eps, T scale, std::int64_t ignore) {
  o.rms_norm_forward(in, values, eps, out);
  o.rms_norm_backward(in, values, eps, in, out, result);
  o.embedding_forward(ids, in, n, out);
  o.embedding_backward(ids, in, n, out);
  o.row_max(in, result);
  o.cross_entropy_sums(in, values, ids, n, result);
  o.cross_entropy_backward(in, values, values, ids, n, ignore, scale, out);
  o.gather_rows(in, rows, out);
  o.spread_rows(in, rows, n, in, out);
  o.combine_rows(in, rows, n, in, out);
  o.row_dots(in, in, rows, out);
  o.swiglu_forward(in, out);
  o.swiglu_backward(in, in, out);
  o.add(out, in);
  o.copy(in, out);
  o.copy_to_host(in, out);
  o.copy_from_host(in, out);
};

/// Ops for the two compute types, f32 and f64.
template <class O>
concept element_ops = element_ops_of<O, float> && element_ops_of<O, double>;

}  // namespace tpx::inline v0::ops
