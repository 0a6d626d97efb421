#pragma once
/// \file
/// What the blocks of a decoder layer share: the two modes a block splits its work in
/// (`block_mode`: tensor, or tensor + sequence parallel), the styles of a block's parts in each
/// mode (`block_styles`), and the stacking of full weights into a fused one (`detail::stack_rows`).
/// The blocks: `attention_block` (layer/attention_block.hpp), `swiglu_mlp` (layer/mlp.hpp),
/// `moe_ffn` and `decoder_layer` (layer/decoder.hpp).

#include <initializer_list>
#include <type_traits>
#include <vector>

#include "tpx/core/tensor_view.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/moe_experts.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

namespace tpx::inline v0::layer {

/// How a block splits its work.
enum class block_mode { tensor, sequence };

/// The styles of a block's parts in each mode.
template <block_mode Mode>
struct block_styles {
  static constexpr bool sp = Mode == block_mode::sequence;
  using norm = std::conditional_t<sp, style::sequence_parallel, style::replicate<>>;
  using column = std::conditional_t<sp, style::colwise_sp, style::colwise<>>;
  using row = std::conditional_t<sp, style::rowwise_sp, style::rowwise<>>;
  using moe_tp = std::conditional_t<sp, style::moe_tensor_sp, style::moe_tensor>;
  using residual = typename norm::input;  // where x, h and y live
};

namespace detail {
/// The rows of `parts`, one matrix after the other, row-major (a fused [q; k; v] or [gate; up]
/// weight). The parts must have the same number of columns.
template <class T>
std::vector<T> stack_rows(std::initializer_list<matrix_view<const T>> parts) {
  std::vector<T> rows;
  for (const matrix_view<const T> m : parts)
    for (index_t r = 0; r < m.rows(); ++r)
      for (index_t c = 0; c < m.cols(); ++c) rows.push_back(m(r, c));
  return rows;
}
}  // namespace detail

}  // namespace tpx::inline v0::layer
