#pragma once
/// \file
/// `swiglu_mlp<Mode, Backend, T>`: the feed-forward of a Llama-style block — gate|up as one packed
/// colwise layer, SwiGLU (`swiglu_step`, shared with the experts), down rowwise — in either block
/// mode.

#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/layer/backend.hpp"
#include "tpx/layer/block.hpp"
#include "tpx/layer/gated.hpp"
#include "tpx/layer/linear.hpp"

namespace tpx::inline v0::layer {

/// The full weights of a SwiGLU MLP: gate and up [I, H], down [H, I].
template <class T>
struct mlp_weights {
  matrix_view<const T> gate, up, down;
};

/// gate|up packed colwise → silu(gate) ⊙ up → down rowwise.
template <block_mode Mode, backend_with_ops Backend, class T = float>
class swiglu_mlp {
  using styles = block_styles<Mode>;

 public:
  using style_type = styles;
  using input = typename styles::column::input;
  using output = typename styles::row::output;
  using value_type = T;
  using gate_up_type = linear<typename styles::column, Backend, T>;
  using down_type = linear<typename styles::row, Backend, T>;
  static_assert(std::is_same_v<typename styles::column::output, typename styles::row::input>,
                "tpx::swiglu_mlp: the gate|up output layout must be the down input layout");

  /// What the weights are held as: T, or narrower under `weights_in`.
  using weight_type = weight_t<Backend, T>;

  swiglu_mlp(typename Backend::engine& engine, typename Backend::communicator& comm,
             mlp_weights<weight_type> w, std::string name = "mlp")
      : gate_up_(make_gate_up(engine, comm, w, name)),
        down_(engine, comm, w.down, {}, down_options(w.down.cols(), w.down.rows(), name)),
        ops_(comm) {}

  /// Builds the MLP from this rank's shards, as a checkpoint reader gives them: `gate_up` is the
  /// block `gate_up_type::weight_placement(gate_up_options(I, H, name), tp).of(rank)` of the
  /// stacked [gate; up] weight [2I, H] (this rank's gate rows, then its up rows), `down` the block
  /// of `down_options(I, H, name)` of down [H, I]; biases likewise (empty: none).
  swiglu_mlp(shard::from_shard_t, typename Backend::engine& engine,
             typename Backend::communicator& comm, index_t inter,
             matrix_view<const weight_type> gate_up, std::span<const T> gate_up_bias,
             matrix_view<const weight_type> down,
             std::span<const T> down_bias, std::string name = "mlp")
      : gate_up_(shard::from_shard, engine, comm, gate_up, gate_up_bias,
                 gate_up_options(inter, gate_up.cols(), name)),
        down_(shard::from_shard, engine, comm, down, down_bias,
              down_options(inter, down.rows(), name)),
        ops_(comm) {}

  /// The stacked gate|up layer over intermediate size `inter` and hidden size `hidden`: packed
  /// colwise, each of the two blocks split on its own.
  static linear_options gate_up_options(index_t inter, index_t hidden, const std::string& name) {
    return {.name = name + ".gate_up_proj",
            .out_features = 2 * inter,
            .in_features = hidden,
            .blocks = {{inter, 1}, {inter, 1}}};
  }
  static linear_options down_options(index_t inter, index_t hidden, const std::string& name) {
    return {.name = name + ".down_proj", .out_features = hidden, .in_features = inter};
  }

  gate_up_type& gate_up() noexcept { return gate_up_; }
  down_type& down() noexcept { return down_; }

  void forward(matrix_view<const T> x, matrix_view<T> y, index_t tokens) {
    step_.forward(
        ops_, tokens, gate_up_.output_cols() / 2, [&](matrix_view<T> h) { gate_up_.forward(x, h); },
        [&](matrix_view<const T> a) { down_.forward(a, y); });
  }

  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx,
                index_t tokens) {
    step_.backward(
        ops_, tokens, gate_up_.output_cols() / 2,
        [&](matrix_view<const T> a, matrix_view<T> da) { down_.backward(a, dy, da); },
        [&](matrix_view<const T> dh) { gate_up_.backward(x, dh, dx); });
  }

 private:
  /// Checks the three shapes, then builds gate|up as one packed colwise layer.
  static gate_up_type make_gate_up(typename Backend::engine& engine,
                                   typename Backend::communicator& comm,
                                   const mlp_weights<weight_type>& w,
                                   const std::string& name) {
    expect(w.gate.rows() == w.up.rows() && w.gate.cols() == w.up.cols() &&
               w.down.cols() == w.gate.rows() && w.down.rows() == w.gate.cols(),
           "{}: gate [{} × {}], up [{} × {}] and down [{} × {}] must be [I × H], [I × H], [H × I]",
           name, w.gate.rows(), w.gate.cols(), w.up.rows(), w.up.cols(), w.down.rows(),
           w.down.cols());
    const std::vector<weight_type> rows = detail::stack_rows<weight_type>({w.gate, w.up});
    return gate_up_type(engine, comm, make_matrix(rows.data(), 2 * w.gate.rows(), w.gate.cols()),
                        {}, gate_up_options(w.gate.rows(), w.gate.cols(), name));
  }

  gate_up_type gate_up_;
  down_type down_;
  typename Backend::ops ops_;
  swiglu_step<Backend, T> step_;
};

}  // namespace tpx::inline v0::layer
