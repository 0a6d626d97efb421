#pragma once
/// \file
/// `linear<Style, Backend, T>`: one `nn.Linear` (y = x · Wᵀ + b, W stored [out, in]) split over
/// the ranks of a communicator as `Style` says, with forward and backward running exactly the
/// style's conjugate collectives.
///
/// The layer is built from the full weight and bias (every rank passes the same); it keeps only
/// its shard. Activations are row-major `[tokens, features]` views in the layouts the style names:
/// `Style::input` for x and dx, `Style::output` for y and dy. Backward overwrites dx and the
/// layer's own weight and bias gradients; x must be the input forward saw.
///
/// Scratch memory grows to the largest token count seen and is then reused, so steady-state
/// forward and backward allocate nothing.

#include <algorithm>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/linear_options.hpp"
#include "tpx/layer/tokens.hpp"
#include "tpx/shard/placement.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/description.hpp"
#include "tpx/style/linear_style.hpp"
#include "tpx/style/placement.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"

namespace tpx::inline v0::layer {

namespace detail {
template <class>
inline constexpr bool always_false = false;
}  // namespace detail

/// Primary template: the styles that are not `style::linear_style`s have no linear layer.
template <class Style, class Backend, class T = float>
class linear {
  static_assert(detail::always_false<Style>,
                "tpx::linear: this style has no linear layer; a linear style is a "
                "style::parallel_style whose conjugate pairs fit the dim it splits (rows: input "
                "copy_to_parallel or gather_from_sequence, output no_collective or "
                "gather_from_parallel; columns: input no_collective or split_to_parallel, output "
                "reduce_from_parallel or scatter_to_sequence; none: no collectives), see "
                "style/linear_style.hpp; or specialise tpx::layer::linear for your style");
};

template <style::linear_style Style, backend Backend, class T>
class linear<Style, Backend, T> {
  static_assert(gemm::gemm_engine_of<typename Backend::engine, T, weight_t<Backend, T>> &&
                    comm::communicator_of<typename Backend::communicator, T>,
                "tpx::linear: the backend's GEMM engine and communicator must both handle the "
                "compute type T (and the engine a weight held as weight_t<Backend, T>)");

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  /// What the weight is held as: T, or narrower under `weights_in` (the bias stays T).
  using weight_type = weight_t<Backend, T>;
  using buffer = typename Backend::template buffer<T>;
  static constexpr int split_dim = Style::split_dim;

  /// Builds this rank's shard of `full_weight` [out, in] and `full_bias` [out] (empty: no bias).
  linear(engine_type& engine, comm_type& comm, matrix_view<const weight_type> full_weight,
         std::span<const T> full_bias, linear_options options)
      : linear(engine, comm, std::move(options), !full_bias.empty()) {
    const extents<2> shape{{opt_.out_features, opt_.in_features}};
    expect(full_weight.rows() == shape[0] && full_weight.cols() == shape[1],
           "{}: the weight is [{} × {}] but the layer is [{} × {}] (out_features × in_features)",
           opt_.name, full_weight.rows(), full_weight.cols(), shape[0], shape[1]);
    expect(full_bias.empty() || static_cast<index_t>(full_bias.size()) == shape[0],
           "{}: the bias has {} elements but out_features is {}", opt_.name, full_bias.size(),
           shape[0]);
    std::vector<weight_type> host(static_cast<std::size_t>(local_.size()));
    const matrix_view<weight_type> local = make_matrix(host.data(), local_[0], local_[1]);
    for (index_t i = 0; i < local_[0]; ++i)
      for (index_t j = 0; j < local_[1]; ++j)
        local(i, j) =
            full_weight(split_dim == 0 ? own_.global(i) : i, split_dim == 1 ? own_.global(j) : j);
    std::vector<T> b;
    for (index_t i = 0; has_bias_ && i < local_[0]; ++i)
      b.push_back(full_bias[static_cast<std::size_t>(split_dim == 0 ? own_.global(i) : i)]);
    upload(host, b);
  }

  /// Builds the layer from this rank's shard alone, as a checkpoint reader gives it: `weight` is
  /// the block `weight_placement(options, tp).of(rank)` and `bias` the block
  /// `bias_placement(options, tp).of(rank)` (empty: no bias).
  linear(shard::from_shard_t, engine_type& engine, comm_type& comm,
         matrix_view<const weight_type> weight, std::span<const T> bias, linear_options options)
      : linear(engine, comm, std::move(options), !bias.empty()) {
    expect(weight.rows() == local_[0] && weight.cols() == local_[1],
           "{}: rank {} was given a weight shard of [{} × {}] but holds [{} × {}] of the [{} × {}] "
           "weight ({})",
           opt_.name, comm.rank(), weight.rows(), weight.cols(), local_[0], local_[1],
           opt_.out_features, opt_.in_features, Style::name);
    expect(bias.empty() || static_cast<index_t>(bias.size()) == local_[0],
           "{}: rank {} was given a bias shard of {} elements but holds {} ({})", opt_.name,
           comm.rank(), bias.size(), local_[0], Style::name);
    if (weight.is_contiguous()) {  // a reader's shard: one copy into the layer's storage
      upload(std::span<const weight_type>(weight.data(), static_cast<std::size_t>(weight.size())),
             bias);
      return;
    }
    std::vector<weight_type> host(static_cast<std::size_t>(weight.size()));
    const matrix_view<weight_type> local = make_matrix(host.data(), local_[0], local_[1]);
    for (index_t i = 0; i < local_[0]; ++i)
      for (index_t j = 0; j < local_[1]; ++j) local(i, j) = weight(i, j);
    upload(host, bias);
  }

  /// Where each rank's weight shard sits in the [out, in] weight, for `options` over `tp` ranks.
  static shard::placement weight_placement(const linear_options& options, int tp) {
    return weight_placement(options, detail::linear_partition<Style>(options, tp));
  }
  /// Where each rank's bias shard sits in the [out] bias: split with the weight's out dim
  /// (colwise), else whole on every rank.
  static shard::placement bias_placement(const linear_options& options, int tp) {
    return bias_placement(options, detail::linear_partition<Style>(options, tp));
  }
  shard::placement weight_placement() const { return weight_placement(opt_, part_); }
  shard::placement bias_placement() const { return bias_placement(opt_, part_); }

  // --- shapes --------------------------------------------------------------------------------

  const std::string& name() const noexcept { return opt_.name; }
  /// The communicator of the rank this layer runs on.
  comm_type& comm() const noexcept { return *comm_; }
  index_t out_features() const noexcept { return opt_.out_features; }
  index_t in_features() const noexcept { return opt_.in_features; }
  /// The `[out, in]` shard this rank holds.
  const extents<2>& local_shape() const noexcept { return local_; }
  /// What the layer's sub-groups moved, added up: those of the ranks sharing output rows (their
  /// all-reduces of the shared dW and db rows) and the unit axis of a layer whose ranks share
  /// input pieces (its forward all-reduce); zero when it has none. The layer's communicator
  /// counts the rest.
  comm::stats shared_statistics() const {
    comm::stats sum;
    for (const shared_rows& s : shares_) sum += s.group->statistics();
    if (units_) sum += units_->statistics();
    return sum;
  }
  /// Every rank's pieces of the split dim (for replicate: the whole dim on every rank).
  const shard::partition& partition() const noexcept { return part_; }
  /// This rank's pieces of the split dim, in local order.
  const shard::pieces& pieces() const noexcept { return own_; }
  /// This rank's interval of the split dim, when it holds one piece (plain splits).
  shard::interval slice() const {
    expect(own_.parts.size() <= 1,
           "{}: rank {} holds {} pieces of the split dim, not one interval; use pieces()",
           opt_.name, comm_->rank(), own_.parts.size());
    return own_.parts.empty() ? shard::interval{} : own_.parts[0];
  }
  /// Every rank's size of the split dim.
  std::span<const index_t> counts() const noexcept { return counts_; }
  bool has_bias() const noexcept { return has_bias_; }
  /// Columns x and dx have on this rank.
  index_t input_cols() const noexcept {
    return std::is_same_v<typename Style::input, style::layout::shard<1>> ? local_[1]
                                                                          : opt_.in_features;
  }
  /// Columns y and dy have on this rank.
  index_t output_cols() const noexcept {
    return std::is_same_v<typename Style::output, style::layout::shard<1>> ? local_[0]
                                                                           : opt_.out_features;
  }

  // --- parameters ----------------------------------------------------------------------------

  matrix_view<const weight_type> weight() const {
    return make_matrix<const weight_type>(weight_.data(), local_[0], local_[1]);
  }
  /// The weight and bias gradients of the last backward; empty before the first (a layer that
  /// only runs forward allocates none).
  matrix_view<const T> weight_grad() const {
    if (dweight_.size() == 0) return {};
    return make_matrix<const T>(dweight_.data(), local_[0], local_[1]);
  }
  std::span<const T> bias() const noexcept { return {bias_.data(), bias_.size()}; }
  std::span<const T> bias_grad() const noexcept { return {dbias_.data(), dbias_.size()}; }

  // --- compute -------------------------------------------------------------------------------

  /// y = x · W_rᵀ (+ b), with the style's forward collectives. Ranks that hold the same input
  /// pieces (unit_rowwise's replicas) hold the same partial output: it is summed over the unit
  /// axis only, one rank of each replica group. Under sequence parallelism the
  /// token count T is the rows of the token-complete side (colwise_sp: y; rowwise_sp: x) and the
  /// token-split side holds this rank's balanced block of T; both must be contiguous.
  ///
  ///   input pair (x → the GEMM's input) → GEMM → output pair (the GEMM's output → y)
  void forward(matrix_view<const T> x, matrix_view<T> y) {
    const index_t tokens = seq_in ? y.rows() : x.rows();
    expect_activation(x, input_cols(), "input", input_rows(tokens));
    expect_activation(y, output_cols(), "output", output_rows(tokens));
    detail::arena<T> mem{reserve(
        input_scratch(tokens) + (gathered ? tokens * local_[0] + gather_scratch(tokens) : 0) +
        (reduced && !y.is_contiguous() ? y.size() : 0) + (seq_out ? tokens * local_[0] : 0))};
    const matrix_view<const T> a = input_forward(x, tokens, mem);
    const matrix_view<T> c = gemm_output(y, tokens, mem);
    const std::span<const T> b(bias_.data(), bias_.size());
    engine_->gemm(
        gemm::gemm_args<T, weight_type>{.op_b = gemm::op::transpose,
                                        .alpha = replica_scale_over_group(),
                                        .a = a,
                                        .b = weight(),
                                        .c = c,
                                        .bias = bias_before_output ? b : std::span<const T>{}});
    output_forward(c, y, tokens, mem);
    if (!bias_before_output && has_bias_) engine_->add_bias(y, b);  // once, after the reduction
  }

  /// y = x · W_rᵀ (+ b): this rank's GEMM alone, with no collective and nothing kept for
  /// backward, whatever the style's input pair — for an input every rank already holds in full
  /// (MLA expanding its cached latents through kv_b_proj, in either block mode). Only for a
  /// style whose output is the GEMM's own (colwise, replicate): x [rows × in], y [rows × the
  /// rank's out].
  void forward_local(matrix_view<const T> x, matrix_view<T> y) requires(
      std::is_same_v<typename Style::output_pair, comm::no_collective>) {
    expect_activation(x, local_[1], "input", x.rows());
    expect_activation(y, local_[0], "output", x.rows());
    const std::span<const T> b(bias_.data(), bias_.size());
    engine_->gemm(gemm::gemm_args<T, weight_type>{
        .op_b = gemm::op::transpose, .a = x, .b = weight(), .c = y, .bias = b});
  }

  /// dx, dW_r and db_r from x and dy, with the style's backward collectives. Where ranks share
  /// output pieces (replicated KV heads, unit_colwise), each rank's dy for a shared piece is its
  /// partial share, and the shared rows of dW and db are summed over the ranks that hold them.
  /// Where ranks share input pieces as whole replicas (unit_rowwise), each replica's dx is
  /// 1 / replicas of the input gradient — the partial share a layer before it sums.
  ///
  ///   output pair (dy → the GEMMs' dY) → dX GEMM → input pair (→ dx); dW GEMM (+ all-reduce)
  void backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    const index_t tokens = seq_in ? dy.rows() : x.rows();
    expect_activation(x, input_cols(), "input", input_rows(tokens));
    expect_activation(dy, output_cols(), "output gradient", output_rows(tokens));
    expect_activation(dx, input_cols(), "input gradient", input_rows(tokens));
    const bool pack_dy = gathered && !simple_;
    detail::arena<T> mem{reserve(input_scratch(tokens) + (pack_dy ? tokens * local_[0] : 0) +
                                 (split_in ? tokens * local_[1] + gather_scratch(tokens) : 0) +
                                 (reduced_dx && !dx.is_contiguous() ? dx.size() : 0) +
                                 shared_scratch() + (seq_out ? tokens * local_[0] : 0) +
                                 (seq_in ? tokens * local_[1] : 0))};
    const matrix_view<const T> a = saved_input(x, tokens, mem);
    const matrix_view<const T> g = output_backward(dy, tokens, mem);
    // dX first, so its collective could overlap the weight-gradient GEMM on an async backend.
    const matrix_view<T> dxc = input_grad_output(dx, tokens, mem);
    engine_->gemm(gemm::gemm_args<T, weight_type>{
        .alpha = T(1) / static_cast<T>(replicas_), .a = g, .b = weight(), .c = dxc});
    input_backward(dxc, dx, tokens, mem);

    if (dweight_.size() != weight_.size()) dweight_.resize(weight_.size());
    if (dbias_.size() != bias_.size()) dbias_.resize(bias_.size());
    const matrix_view<T> dw = make_matrix(dweight_.data(), local_[0], local_[1]);
    const std::span<T> db(dbias_.data(), dbias_.size());
    engine_->gemm(
        gemm::gemm_args<T>{.op_a = gemm::op::transpose, .a = g, .b = a, .c = dw, .bias_grad = db});
    if constexpr (style::describe<Style>().grad_all_reduce) {
      comm_->all_reduce(std::span<T>(dweight_.data(), dweight_.size()));
      if (has_bias_) comm_->all_reduce(db);
    }
    if (shared_) sum_shared_rows(mem, dw, db);
  }

 private:
  // The conjugate pairs around the GEMM (style/linear_style.hpp lists those a linear takes).
  using input_pair = typename Style::input_pair;
  using output_pair = typename Style::output_pair;
  static constexpr bool seq_in = std::is_same_v<input_pair, comm::gather_from_sequence>;
  static constexpr bool split_in = std::is_same_v<input_pair, comm::split_to_parallel>;
  static constexpr bool reduced_dx = std::is_same_v<input_pair, comm::copy_to_parallel>;
  static constexpr bool seq_out = std::is_same_v<output_pair, comm::scatter_to_sequence>;
  static constexpr bool gathered = std::is_same_v<output_pair, comm::gather_from_parallel>;
  static constexpr bool reduced = std::is_same_v<output_pair, comm::reduce_from_parallel>;
  /// The bias goes in with the GEMM unless the output pair sums partial outputs: then once,
  /// after the reduction.
  static constexpr bool bias_before_output = !reduced && !seq_out;

  // --- the input pair ------------------------------------------------------------------------

  /// Forward: the GEMM's input from x — x itself (copy_to_parallel, none), this rank's columns
  /// (split_to_parallel), or the all-gathered token shards, kept for dW (gather_from_sequence).
  matrix_view<const T> input_forward(matrix_view<const T> x, index_t tokens,
                                     detail::arena<T>& mem) {
    if constexpr (seq_in) {
      saved_.resize(static_cast<std::size_t>(tokens * local_[1]));
      const matrix_view<T> full = make_matrix(saved_.data(), tokens, local_[1]);
      comm::gather_from_sequence::forward<comm_type, T>(*comm_, x, full, token_counts(tokens));
      return full;
    } else {
      return local_input(x, mem);
    }
  }
  /// Backward: the forward's GEMM input again (gather_from_sequence: the one kept).
  matrix_view<const T> saved_input(matrix_view<const T> x, index_t tokens, detail::arena<T>& mem) {
    if constexpr (seq_in) {
      expect(static_cast<index_t>(saved_.size()) == tokens * local_[1],
             "{} ({}): backward for {} tokens needs the gathered input of a forward on {} tokens",
             opt_.name, Style::name, tokens,
             local_[1] == 0 ? 0 : static_cast<index_t>(saved_.size()) / local_[1]);
      return make_matrix<const T>(saved_.data(), tokens, local_[1]);
    } else {
      return local_input(x, mem);
    }
  }
  /// Backward: where the dX GEMM writes — dx itself, or scratch the pair's collective reads.
  matrix_view<T> input_grad_output(matrix_view<T> dx, index_t tokens, detail::arena<T>& mem) {
    if constexpr (split_in || seq_in)
      return make_matrix(mem.take(tokens * local_[1]).data(), tokens, local_[1]);
    else
      return dx;
  }
  /// Backward: dx from the dX GEMM's output — all-reduced partial sums (copy_to_parallel),
  /// gathered columns (split_to_parallel), reduce-scattered token shards (gather_from_sequence).
  void input_backward(matrix_view<T> dxc, matrix_view<T> dx, index_t tokens,
                      detail::arena<T>& mem) {
    if constexpr (split_in) {
      if (simple_)
        comm::split_to_parallel::backward<comm_type, T>(*comm_, dxc, dx, counts_, mem.rest);
      else
        comm::all_gather_cols<comm_type, T>(*comm_, dxc, dx, part_, mem.rest);
    } else if constexpr (seq_in) {
      comm::gather_from_sequence::backward<comm_type, T>(*comm_, dxc, dx, token_counts(tokens));
    } else if constexpr (reduced_dx) {
      comm::copy_to_parallel::backward<comm_type, T>(*comm_, dx,
                                                     mem.take(dx.is_contiguous() ? 0 : dx.size()));
    }
  }

  // --- the output pair -----------------------------------------------------------------------

  /// Forward: where the GEMM writes — y itself (none, reduce_from_parallel: reduced in place),
  /// or scratch the pair's collective reads (gather_from_parallel, scatter_to_sequence).
  matrix_view<T> gemm_output(matrix_view<T> y, index_t tokens, detail::arena<T>& mem) {
    if constexpr (gathered || seq_out)
      return make_matrix(mem.take(tokens * local_[0]).data(), tokens, local_[0]);
    else
      return y;
  }
  /// Forward: y from the GEMM's output — all-gathered features, all-reduced partial sums, or
  /// reduce-scattered token shards.
  void output_forward(matrix_view<T> c, matrix_view<T> y, index_t tokens, detail::arena<T>& mem) {
    if constexpr (gathered) {
      if (simple_)
        comm::gather_from_parallel::forward<comm_type, T>(*comm_, c, y, counts_, mem.rest);
      else
        comm::all_gather_cols<comm_type, T>(*comm_, c, y, part_, mem.rest);
    } else if constexpr (reduced) {
      comm::reduce_from_parallel::forward<comm_type, T>(units_ ? *units_ : *comm_, y, mem.rest);
    } else if constexpr (seq_out) {
      comm::scatter_to_sequence::forward<comm_type, T>(*comm_, c, y, token_counts(tokens));
    }
  }
  /// Backward: the GEMMs' dY from dy — this rank's feature columns (gather_from_parallel), the
  /// all-gathered token shards (scatter_to_sequence), or dy itself.
  matrix_view<const T> output_backward(matrix_view<const T> dy, index_t tokens,
                                       detail::arena<T>& mem) {
    if constexpr (gathered) {
      if (!simple_) {
        const matrix_view<T> packed =
            make_matrix(mem.take(tokens * local_[0]).data(), tokens, local_[0]);
        comm::take_cols<comm_type, T>(*comm_, dy, own_, packed);
        return packed;
      }
      return comm::gather_from_parallel::backward(dy, slice());
    } else if constexpr (seq_out) {
      const matrix_view<T> full =
          make_matrix(mem.take(tokens * local_[0]).data(), tokens, local_[0]);
      comm::scatter_to_sequence::backward<comm_type, T>(*comm_, dy, full, token_counts(tokens));
      return full;
    } else {
      return dy;
    }
  }

  /// Rows x (and dx) and y (and dy) have on this rank for `tokens` tokens in all. (A replicated
  /// layer with token-split activations takes whatever tokens each rank has.)
  index_t input_rows(index_t tokens) const { return seq_in ? own_tokens(tokens) : tokens; }
  index_t output_rows(index_t tokens) const { return seq_out ? own_tokens(tokens) : tokens; }
  /// This rank's balanced share of `tokens`; remembers every rank's share for the collectives.
  index_t own_tokens(index_t tokens) const {
    return token_shards_.of(tokens, comm_->size(), comm_->rank());
  }
  std::span<const index_t> token_counts(index_t tokens) const {
    return token_shards_.counts(tokens, comm_->size());
  }

  /// The shapes and partition every constructor starts from.
  linear(engine_type& engine, comm_type& comm, linear_options options, bool has_bias)
      : engine_(&engine), comm_(&comm), opt_(std::move(options)) {
    part_ = detail::linear_partition<Style>(opt_, comm.size());
    own_ = part_.of(comm.rank());
    counts_ = part_.sizes();
    local_ = {{opt_.out_features, opt_.in_features}};
    if constexpr (split_dim >= 0) local_[split_dim] = own_.size();
    simple_ = part_.is_rank_ordered();
    shared_ = split_dim == 0 && part_.overlaps();
    has_bias_ = has_bias;
    if (shared_) make_shares();
    if (split_dim == 1 && part_.overlaps()) make_unit_axis();
  }

  /// Input pieces held by whole replicas (linear_partition checked it): the replica count, and a
  /// sub-group of this rank's replica index — the unit axis its partial outputs are summed over.
  /// A communicator without split sums over the whole group instead, each replica's partial
  /// output scaled by 1 / replicas.
  void make_unit_axis() {
    const std::optional<shard::replica_axis> axis = shard::replica_axis_of(part_);
    replicas_ = axis->replicas;
    if constexpr (comm::splittable<comm_type>)
      units_ = std::make_shared<comm_type>(comm_->split(axis->of(comm_->rank()), comm_->rank()));
  }
  /// The forward GEMM's alpha: 1 / replicas when replicas' partial outputs are summed over the
  /// whole group, else 1.
  T replica_scale_over_group() const {
    return units_ || replicas_ == 1 ? T(1) : T(1) / static_cast<T>(replicas_);
  }

  /// One sub-group for each set of ranks that share output rows (KV heads held by several
  /// ranks), made once with `split`: every rank calls split once per round, passing the set it is
  /// in that round as its color, or a color of its own.
  void make_shares() {
    if constexpr (comm::splittable<comm_type>) {
      const std::vector<shard::sharing> sets = part_.shared_parts();
      const std::vector<int> round = shard::split_rounds(sets);
      const int n = static_cast<int>(sets.size()), me = comm_->rank();
      const int rounds = n == 0 ? 0 : *std::max_element(round.begin(), round.end()) + 1;
      for (int r = 0; r < rounds; ++r) {
        int color = n + me;
        for (int s = 0; s < n; ++s)
          if (round[static_cast<std::size_t>(s)] == r &&
              sets[static_cast<std::size_t>(s)].holds(me))
            color = s;
        auto sub = std::make_shared<comm_type>(comm_->split(color, me));
        if (color < n) {
          const shard::sharing& set = sets[static_cast<std::size_t>(color)];
          shares_.push_back({std::move(sub), own_.local_of(set.parts), set.size()});
        }
      }
    }
  }
  index_t shared_scratch() const {
    if (!shared_) return 0;
    if constexpr (comm::splittable<comm_type>) {
      index_t n = 0;
      for (const shared_rows& s : shares_) n += s.rows * (local_[1] + 1);
      return n;
    } else {
      return part_.extent() * (local_[1] + 1);
    }
  }

  void upload(std::span<const weight_type> weight, std::span<const T> bias) {
    Backend::upload(weight, weight_);
    if (has_bias_) Backend::upload(bias, bias_);
  }

  /// The placements of the weight and bias under the (checked) partition `p` of the split dim:
  /// the style's (style/placement.hpp).
  static shard::placement weight_placement(const linear_options& options,
                                           const shard::partition& p) {
    return style::placement<Style>(
        {options.name + ".weight", {options.out_features, options.in_features}}, p.ranks(),
        cut_of(p));
  }
  static shard::placement bias_placement(const linear_options& options, const shard::partition& p) {
    return style::placement<Style>({options.name + ".bias", {options.out_features}, false, true},
                                   p.ranks(), cut_of(p));
  }
  static style::cut cut_of(const shard::partition& p) {
    return split_dim < 0 ? style::cut{} : style::cut{.partition = p};
  }

  index_t input_scratch(index_t tokens) const {
    return split_in && !simple_ ? tokens * local_[1] : 0;
  }
  index_t gather_scratch(index_t tokens) const { return comm::cols_scratch(tokens, counts_); }

  matrix_view<const T> local_input(matrix_view<const T> x, detail::arena<T>& mem) const {
    if constexpr (split_in) {
      if (simple_) return comm::split_to_parallel::forward(x, slice());
      const matrix_view<T> packed =
          make_matrix(mem.take(x.rows() * local_[1]).data(), x.rows(), local_[1]);
      comm::take_cols<comm_type, T>(*comm_, x, own_, packed);
      return packed;
    } else {
      return x;
    }
  }

  /// Sums the dW and db rows of output pieces that several ranks hold over exactly those ranks:
  /// for each set of sharing ranks this rank is in, its rows [dW | db] are packed, all-reduced in
  /// that set's sub-group, and unpacked (rows · (in + 1) elements, the least there is). Copies go
  /// through the communicator, so device memory works too.
  void sum_shared_rows(detail::arena<T>& mem, matrix_view<T> dw, std::span<T> db) {
    if constexpr (comm::splittable<comm_type>) {
      const index_t in = local_[1], width = in + (has_bias_ ? 1 : 0);
      for (shared_rows& s : shares_) {
        const matrix_view<T> rows = make_matrix(mem.take(s.rows * width).data(), s.rows, width);
        const auto each_piece = [&](auto move) {
          index_t at = 0;
          for (const shard::interval& p : s.local) {
            const matrix_view<T> packed = rows.row_range(at, at + p.size());
            move(dw.row_range(p.begin, p.end), packed.col_range(0, in));
            if (has_bias_)
              move(make_matrix(db.data() + p.begin, p.size(), 1), packed.col_range(in, width));
            at += p.size();
          }
        };
        each_piece([&](matrix_view<T> local, matrix_view<T> packed) {
          comm::detail::copy<comm_type, T>(*comm_, local, packed);
        });
        s.group->all_reduce(std::span<T>(rows.data(), static_cast<std::size_t>(rows.size())));
        each_piece([&](matrix_view<T> local, matrix_view<T> packed) {
          comm::detail::copy<comm_type, T>(*comm_, packed, local);
        });
      }
    } else {
      sum_shared_rows_over_group(mem, dw, db);
    }
  }

  /// The same for a communicator without split (one an engine brings): each rank writes its rows
  /// at their place in a zeroed [extent, in | 1] buffer, the buffer is all-reduced over the whole
  /// group, and each rank reads its rows back (extent · (in + 1) elements).
  void sum_shared_rows_over_group(detail::arena<T>& mem, matrix_view<T> dw, std::span<T> db) {
    const index_t extent = part_.extent(), in = local_[1];
    const std::span<T> all = mem.take(extent * (in + 1));
    comm::detail::zero(*comm_, all);
    const matrix_view<T> rows = make_matrix(all.data(), extent, in + 1);
    const auto each_piece = [&](auto move) {
      index_t at = 0;
      for (const shard::interval& p : own_.parts) {
        const matrix_view<T> global = rows.row_range(p.begin, p.end);
        move(dw.row_range(at, at + p.size()), global.col_range(0, in));
        if (has_bias_) move(make_matrix(db.data() + at, p.size(), 1), global.col_range(in, in + 1));
        at += p.size();
      }
    };
    each_piece([&](matrix_view<T> local, matrix_view<T> global) {
      comm::detail::copy<comm_type, T>(*comm_, local, global);
    });
    comm_->all_reduce(all);
    each_piece([&](matrix_view<T> local, matrix_view<T> global) {
      comm::detail::copy<comm_type, T>(*comm_, global, local);
    });
  }

  template <class V>
  void expect_activation(const V& v, index_t cols, std::string_view what, index_t tokens) const {
    expect(v.cols() == cols && v.rows() == tokens,
           "{} ({}, tp = {}, rank {}): the {} is [{} × {}] but must be [{} × {}] (tokens × "
           "features, {} layout)",
           opt_.name, Style::name, comm_->size(), comm_->rank(), what, v.rows(), v.cols(), tokens,
           cols, what.starts_with("input") ? Style::input::name : Style::output::name);
  }

  std::span<T> reserve(index_t n) { return detail::scratch(scratch_, n); }

  engine_type* engine_;
  comm_type* comm_;
  linear_options opt_;
  shard::partition part_;
  shard::pieces own_;
  extents<2> local_{};
  std::vector<index_t> counts_;
  mutable detail::token_shards token_shards_;  // every rank's tokens under SP
  bool simple_ = true;   // rank-ordered single intervals: views instead of packing
  bool shared_ = false;  // output pieces held by several ranks (replicated KV heads)
  /// The rows this rank shares with one set of ranks, and that set's sub-group.
  struct shared_rows {
    std::shared_ptr<comm_type> group;
    std::vector<shard::interval> local;  ///< the rows, as local row ranges
    index_t rows = 0;
  };
  std::vector<shared_rows> shares_;
  int replicas_ = 1;                  // ranks holding each input piece (unit_rowwise)
  std::shared_ptr<comm_type> units_;  // the unit axis: one rank of each replica group
  bool has_bias_ = false;
  typename Backend::template buffer<weight_type> weight_;
  buffer dweight_, bias_, dbias_, scratch_;
  buffer saved_;  // colwise_sp: the all-gathered input of the last forward, for dW
};

}  // namespace tpx::inline v0::layer
