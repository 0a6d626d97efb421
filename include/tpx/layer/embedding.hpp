#pragma once
/// \file
/// `vocab_embedding<Style, Backend, T>`: a vocab-parallel embedding table [vocab, hidden] (see
/// style/vocab_parallel.hpp), usable as the tied LM head too.
///
///   forward(ids [T], y)           y [T, H] (vocab_parallel) or [T_r, H] (vocab_parallel_sp)
///   backward(ids, dy)             adds to dW (rows of the rank's own ids)
///   head_forward(x, logits)       x [T, H] (or [T_r, H] under SP, all-gathered), logits [T, V_r]
///   head_backward(x, dlogits, dx) dx reduced like colwise (all-reduce, or reduce-scatter under
///                                 SP); adds to dW
///
/// Parameter gradients accumulate, so a tied model's embedding and head both land in one dW:
/// call `zero_grad()` before a step. The vocab split is balanced by default: when tp does not
/// divide the vocabulary the first V mod tp ranks hold one row more, and `vocab_range()` is the
/// rank's exact [begin, end). Token ids outside [0, vocab) are an error naming the token.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/tokens.hpp"
#include "tpx/shard/placement.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/vocab_parallel.hpp"

namespace tpx::inline v0::layer {

struct embedding_options {
  std::string name = "embed_tokens";
  index_t vocab = 0;
  index_t hidden = 0;
  shard::split_kind split = shard::split_kind::balanced;
};

template <class Style, backend_with_ops Backend, class T = float>
class vocab_embedding {
  static_assert(std::is_same_v<Style, style::vocab_parallel<>> ||
                    std::is_same_v<Style, style::vocab_parallel_sp>,
                "tpx::vocab_embedding: the style must be style::vocab_parallel<> or "
                "style::vocab_parallel_sp");
  static constexpr bool sequence = std::is_same_v<Style, style::vocab_parallel_sp>;

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  /// What the table is held as: T, or narrower under `weights_in`.
  using weight_type = weight_t<Backend, T>;
  using buffer = typename Backend::template buffer<T>;

  /// Builds this rank's rows of the full table `full_weight` [vocab, hidden].
  vocab_embedding(engine_type& engine, comm_type& comm, matrix_view<const weight_type> full_weight,
                  embedding_options options)
      : vocab_embedding(engine, comm, std::move(options), 0) {
    expect(full_weight.rows() == opt_.vocab && full_weight.cols() == opt_.hidden,
           "{}: the table is [{} × {}] but the layer is [{} × {}] (vocab × hidden)", opt_.name,
           full_weight.rows(), full_weight.cols(), opt_.vocab, opt_.hidden);
    upload(full_weight.row_range(own_.begin, own_.end));
  }

  /// Builds the layer from this rank's rows alone: the block
  /// `weight_placement(options, tp).of(rank)` [V_r, hidden].
  vocab_embedding(shard::from_shard_t, engine_type& engine, comm_type& comm,
                  matrix_view<const weight_type> weight, embedding_options options)
      : vocab_embedding(engine, comm, std::move(options), 0) {
    expect(weight.rows() == own_.size() && weight.cols() == opt_.hidden,
           "{}: rank {} was given [{} × {}] but holds vocab rows [{}, {}) of the [{} × {}] table",
           opt_.name, comm.rank(), weight.rows(), weight.cols(), own_.begin, own_.end, opt_.vocab,
           opt_.hidden);
    upload(weight);
  }

  /// Where each rank's rows of the [vocab, hidden] table sit: vocab rows, split as `options.split`
  /// says (balanced by default).
  static shard::placement weight_placement(const embedding_options& o, int tp) {
    return style::placement<Style>({o.name + ".weight", {o.vocab, o.hidden}}, tp,
                                   {.kind = o.split});
  }

  const std::string& name() const noexcept { return opt_.name; }
  /// The vocab rows [begin, end) this rank holds.
  shard::interval vocab_range() const noexcept { return own_; }
  index_t vocab() const noexcept { return opt_.vocab; }
  index_t hidden() const noexcept { return opt_.hidden; }
  matrix_view<const weight_type> weight() const {
    return make_matrix<const weight_type>(weight_.data(), own_.size(), opt_.hidden);
  }
  /// dW accumulated since `zero_grad()`; empty before the first backward or `zero_grad()`.
  matrix_view<const T> weight_grad() const {
    if (dweight_.size() == 0) return {};
    return make_matrix<const T>(dweight_.data(), own_.size(), opt_.hidden);
  }
  /// Sets dW to zero (allocating it: a table that only runs forward holds no gradient).
  void zero_grad() {
    if (dweight_.size() != weight_.size()) dweight_.resize(weight_.size());
    comm::detail::zero(*comm_, std::span<T>(dweight_.data(), dweight_.size()));
  }

  /// y = the rows of `ids`: masked lookup of the own rows, then all-reduce (or reduce-scatter).
  void forward(std::span<const std::int64_t> ids, matrix_view<T> y) {
    const index_t tokens = static_cast<index_t>(ids.size());
    expect_ids(ids);
    expect_rows(y, tokens, "output");
    const matrix_view<T> full = sequence ? detail::sized(scratch_, tokens, opt_.hidden) : y;
    ops_.embedding_forward(ids, weight(), own_.begin, full);
    if constexpr (sequence)
      comm::scatter_to_sequence::forward<comm_type, T>(*comm_, full, y, token_counts(tokens));
    else
      comm::reduce_from_parallel::forward<comm_type, T>(*comm_, y);
  }

  /// Adds dY's rows to the dW rows of the own ids (under SP, dY's token shards are gathered).
  void backward(std::span<const std::int64_t> ids, matrix_view<const T> dy) {
    const index_t tokens = static_cast<index_t>(ids.size());
    expect_ids(ids);
    expect_rows(dy, tokens, "output gradient");
    matrix_view<const T> full = dy;
    if constexpr (sequence) {
      const matrix_view<T> gathered = detail::sized(scratch_, tokens, opt_.hidden);
      comm::scatter_to_sequence::backward<comm_type, T>(*comm_, dy, gathered, token_counts(tokens));
      full = gathered;
    }
    ops_.embedding_backward(ids, full, own_.begin, weight_grad_view());
  }

  /// The tied LM head: logits [T, V_r] = x · W_rᵀ for the own vocab columns.
  void head_forward(matrix_view<const T> x, matrix_view<T> logits) {
    const index_t tokens = logits.rows();
    expect_rows(x, tokens, "head input");
    expect(logits.cols() == own_.size(),
           "{} (LM head, rank {}): the logits have {} columns but the rank holds {} vocab rows",
           opt_.name, comm_->rank(), logits.cols(), own_.size());
    matrix_view<const T> input = x;
    if constexpr (sequence) {  // all-gather the token shards; kept for dW
      saved_.resize(static_cast<std::size_t>(tokens * opt_.hidden));
      const matrix_view<T> full = make_matrix(saved_.data(), tokens, opt_.hidden);
      comm::gather_from_sequence::forward<comm_type, T>(*comm_, x, full, token_counts(tokens));
      input = full;
    }
    engine_->gemm(gemm::gemm_args<T, weight_type>{
        .op_b = gemm::op::transpose, .a = input, .b = weight(), .c = logits});
  }

  /// dx from dlogits (reduced over ranks), and dW += dlogitsᵀ · x.
  void head_backward(matrix_view<const T> x, matrix_view<const T> dlogits, matrix_view<T> dx) {
    const index_t tokens = dlogits.rows();
    expect_rows(x, tokens, "head input");
    expect_rows(dx, tokens, "head input gradient");
    expect(dlogits.cols() == own_.size(),
           "{} (LM head, rank {}): dlogits have {} columns but the rank holds {} vocab rows",
           opt_.name, comm_->rank(), dlogits.cols(), own_.size());
    matrix_view<const T> input = x;
    if constexpr (sequence) {
      expect(static_cast<index_t>(saved_.size()) == tokens * opt_.hidden,
             "{} (LM head): backward for {} tokens needs the input of a head_forward on as many",
             opt_.name, tokens);
      input = make_matrix<const T>(saved_.data(), tokens, opt_.hidden);
      const matrix_view<T> partial = detail::sized(scratch_, tokens, opt_.hidden);
      engine_->gemm(gemm::gemm_args<T, weight_type>{.a = dlogits, .b = weight(), .c = partial});
      comm::gather_from_sequence::backward<comm_type, T>(*comm_, partial, dx, token_counts(tokens));
    } else {
      engine_->gemm(gemm::gemm_args<T, weight_type>{.a = dlogits, .b = weight(), .c = dx});
      comm::copy_to_parallel::backward<comm_type, T>(*comm_, dx);
    }
    engine_->gemm(gemm::gemm_args<T>{.op_a = gemm::op::transpose,
                                     .a = dlogits,
                                     .b = input,
                                     .beta = T(1),
                                     .c = weight_grad_view()});
  }

 private:
  vocab_embedding(engine_type& engine, comm_type& comm, embedding_options options, int)
      : engine_(&engine), comm_(&comm), ops_(comm), opt_(std::move(options)) {
    own_ = weight_placement(opt_, comm.size()).of(comm.rank()).dims[0].parts.at(0);
  }
  void upload(matrix_view<const weight_type> rows) {
    if (rows.is_contiguous()) {
      Backend::upload(
          std::span<const weight_type>(rows.data(), static_cast<std::size_t>(rows.size())),
          weight_);
      return;
    }
    std::vector<weight_type> host;
    host.reserve(static_cast<std::size_t>(rows.size()));
    for (index_t v = 0; v < rows.rows(); ++v)
      for (index_t j = 0; j < rows.cols(); ++j) host.push_back(rows(v, j));
    Backend::upload(std::span<const weight_type>(host), weight_);
  }

  matrix_view<T> weight_grad_view() {
    if (dweight_.size() != weight_.size()) zero_grad();  // the first backward after construction
    return make_matrix(dweight_.data(), own_.size(), opt_.hidden);
  }

  void expect_ids(std::span<const std::int64_t> ids) const {
    for (std::size_t t = 0; t < ids.size(); ++t)
      expect(0 <= ids[t] && ids[t] < opt_.vocab,
             "{}: token {} has id {}, outside the vocabulary [0, {})", opt_.name, t, ids[t],
             opt_.vocab);
  }

  /// A [tokens or own share, hidden] activation.
  template <class V>
  void expect_rows(const V& v, index_t tokens, std::string_view what) const {
    const index_t rows =
        sequence ? token_counts(tokens)[static_cast<std::size_t>(comm_->rank())] : tokens;
    expect(v.rows() == rows && v.cols() == opt_.hidden,
           "{} ({}, tp = {}, rank {}): the {} is [{} × {}] but must be [{} × {}] for {} tokens",
           opt_.name, Style::name, comm_->size(), comm_->rank(), what, v.rows(), v.cols(), rows,
           opt_.hidden, tokens);
  }

  std::span<const index_t> token_counts(index_t tokens) const {
    return token_shards_.counts(tokens, comm_->size());
  }

  engine_type* engine_;
  comm_type* comm_;
  typename Backend::ops ops_;
  embedding_options opt_;
  shard::interval own_;
  mutable detail::token_shards token_shards_;
  typename Backend::template buffer<weight_type> weight_;
  buffer dweight_, scratch_, saved_;
};

}  // namespace tpx::inline v0::layer
