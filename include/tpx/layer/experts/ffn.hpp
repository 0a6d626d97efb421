#pragma once
/// \file
/// `grouped_swiglu<Backend, T>`: n SwiGLU feed-forwards run as grouped GEMMs over rows sorted by
/// group — the routed experts of one rank (one group per local expert), or the shared expert
/// (one group of every token). Weights w1 [n, 2I, H] (each group's gate rows, then its up rows)
/// and w2 [n, H, I] in the backend's memory, held as `weight_t<Backend, T>`; their gradients
/// dw1, dw2 (T) exist from the first backward on. Group g's rows are [off[g], off[g + 1]) of the row-sorted activations; a group
/// may get no row.

#include <span>
#include <type_traits>
#include <vector>

#include "tpx/core/dtype.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/gemm/engine.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/gated.hpp"
#include "tpx/shard/split.hpp"

namespace tpx::inline v0::layer::detail {

template <backend_with_ops Backend, class T>
class grouped_swiglu {
 public:
  using weight_type = weight_t<Backend, T>;

  /// Takes slice [begin, end) of each group's I from the full weights `gate_up(g)` [2I, H] and
  /// `down(g)` [H, I], g < n.
  template <class GateUp, class Down>
  void load(index_t n, index_t hidden, shard::interval slice, GateUp gate_up, Down down) {
    const index_t full = n > 0 ? gate_up(0).rows() / 2 : 0;
    std::vector<weight_type> w1, w2;
    for (index_t g = 0; g < n; ++g) {
      const auto gu = gate_up(g), dn = down(g);
      for (const index_t half : {index_t{0}, full})  // gate rows, then up rows of the slice
        for (index_t row = slice.begin; row < slice.end; ++row)
          for (index_t j = 0; j < hidden; ++j) w1.push_back(convert<weight_type>(gu(half + row, j)));
      for (index_t row = 0; row < hidden; ++row)
        for (index_t j = slice.begin; j < slice.end; ++j)
          w2.push_back(convert<weight_type>(dn(row, j)));
    }
    upload(n, hidden, slice.size(), w1, w2);
  }

  /// Takes the weights as laid out here: w1 [n, 2I, H], w2 [n, H, I].
  void upload(index_t n, index_t hidden, index_t inter, std::span<const weight_type> w1,
              std::span<const weight_type> w2) {
    n_ = n, hidden_ = hidden, inter_ = inter;
    Backend::upload(w1, w1_);
    Backend::upload(w2, w2_);
  }

  index_t groups() const noexcept { return n_; }
  index_t inter() const noexcept { return inter_; }

  tensor_view<const weight_type, 3> gate_up_weight() const { return view(w1_, true); }
  tensor_view<const weight_type, 3> down_weight() const { return view(w2_, false); }
  /// Empty ([0, 0, 0]) before the first backward.
  tensor_view<const T, 3> gate_up_grad() const { return view(dw1_, true); }
  tensor_view<const T, 3> down_grad() const { return view(dw2_, false); }
  /// The gradients as one span each (for a sum over the ranks that replicate the weights).
  std::span<T> gate_up_grad_span() noexcept { return {dw1_.data(), dw1_.size()}; }
  std::span<T> down_grad_span() noexcept { return {dw2_.data(), dw2_.size()}; }

  /// o = (silu(xs · gateᵀ) ⊙ xs · upᵀ) · w2ᵀ, group by group.
  void forward(typename Backend::engine& engine, typename Backend::ops& ops,
               matrix_view<const T> xs, std::span<const index_t> off, matrix_view<T> o) {
    const auto w1 = view(w1_, true);
    const auto w2 = view(w2_, false);
    step_.forward(
        ops, xs.rows(), inter_,
        [&](matrix_view<T> h) {
          run(engine, [&](index_t g) {
            return weight_args{.op_b = gemm::op::transpose,
                               .a = rows(xs, off, g),
                               .b = w1[g],
                               .c = rows(h, off, g)};
          });
        },
        [&](matrix_view<const T> a) {
          run(engine, [&](index_t g) {
            return weight_args{.op_b = gemm::op::transpose,
                               .a = rows(a, off, g),
                               .b = w2[g],
                               .c = rows(o, off, g)};
          });
        });
  }

  /// dxs from dout for the last forward of xs; dw1 and dw2 are overwritten.
  void backward(typename Backend::engine& engine, typename Backend::ops& ops,
                matrix_view<const T> xs, std::span<const index_t> off, matrix_view<const T> dout,
                matrix_view<T> dxs) {
    if (dw1_.size() != w1_.size()) dw1_.resize(w1_.size());
    if (dw2_.size() != w2_.size()) dw2_.resize(w2_.size());
    const auto w1 = view(w1_, true);
    const auto w2 = view(w2_, false);
    const auto dw1 = view(dw1_, true);
    const auto dw2 = view(dw2_, false);
    step_.backward(
        ops, xs.rows(), inter_,
        [&](matrix_view<const T> a, matrix_view<T> da) {
          linear_backward(engine, off, dout, w2, a, da, dw2);
        },
        [&](matrix_view<const T> dh) { linear_backward(engine, off, dh, w1, xs, dxs, dw1); });
  }

 private:
  using buffer = typename Backend::template buffer<T>;
  /// A product with a weight as B (the others have activations as both operands).
  using weight_args = gemm::gemm_args<T, weight_type>;

  /// A linear's backward group by group, as two grouped GEMMs: dx = dy · w[g] and
  /// dw[g] = dyᵀ · x over each group's rows.
  void linear_backward(typename Backend::engine& engine, std::span<const index_t> off,
                       matrix_view<const T> dy, tensor_view<const weight_type, 3> w,
                       matrix_view<const T> x, matrix_view<T> dx, tensor_view<T, 3> dw) {
    run(engine, [&](index_t g) {
      return weight_args{.a = rows(dy, off, g), .b = w[g], .c = rows(dx, off, g)};
    });
    run(engine, [&](index_t g) {
      return gemm::gemm_args<T>{
          .op_a = gemm::op::transpose, .a = rows(dy, off, g), .b = rows(x, off, g), .c = dw[g]};
    });
  }

  /// One grouped GEMM of the product `each(g)` returns for every group g.
  template <class Each>
  void run(typename Backend::engine& engine, Each each) {
    using args = std::invoke_result_t<Each, index_t>;
    std::vector<args>* list;
    if constexpr (std::is_same_v<args, gemm::gemm_args<T>>)
      list = &args_;
    else
      list = &weight_args_;
    list->clear();
    for (index_t g = 0; g < n_; ++g) list->push_back(each(g));
    engine.grouped_gemm(std::span<const args>(*list));
  }

  /// `b` as [n, 2I, H] (first) or [n, H, I]; [0, 0, 0] while `b` (a gradient) is unallocated.
  template <class B>
  auto view(B& b, bool first) const {
    using V = std::remove_pointer_t<decltype(b.data())>;
    const extents<3> e =
        first ? extents<3>{{n_, 2 * inter_, hidden_}} : extents<3>{{n_, hidden_, inter_}};
    if (static_cast<index_t>(b.size()) != e.size()) return tensor_view<V, 3>(b.data(), {{0, 0, 0}});
    return tensor_view<V, 3>(b.data(), e);
  }

  template <class V>
  static V rows(V m, std::span<const index_t> off, index_t g) {
    return m.row_range(off[static_cast<std::size_t>(g)], off[static_cast<std::size_t>(g + 1)]);
  }

  index_t n_ = 0, hidden_ = 0, inter_ = 0;
  typename Backend::template buffer<weight_type> w1_, w2_;
  buffer dw1_, dw2_;
  swiglu_step<Backend, T> step_;
  std::vector<gemm::gemm_args<T>> args_;
  std::vector<weight_args> weight_args_;  // unused while weight_type is T
};

}  // namespace tpx::inline v0::layer::detail
