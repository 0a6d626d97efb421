#pragma once
/// \file
/// `experts<Style, Backend, T>`: the routed experts of a MoE layer (SwiGLU experts, gate_up
/// [E, 2I, H] packed gate|up, down [E, H, I]) and an optional shared expert, split over the group
/// as the `style::moe_experts` mode says (see style/moe_experts.hpp for the picture).
///
///   forward(x, ids, w, y)                 x [n, H], ids and w [n, k], y [n, H]
///   backward(x, ids, w, dy, dx, dw)       dx [n, H], dw = d(routing weights) [n, k]
///
/// n is every token (tensor, masked) or this rank's balanced token block (tensor_sequence,
/// all_to_all); the tensor_sequence mode needs the total token count as the last argument. Local
/// experts run through the engine's grouped GEMM, one group per local expert; an expert may get
/// no token. Expert ids outside [0, E) are an error naming the token and its choice.
///
/// Routing ids are host data (the bookkeeping — which row goes where — is computed on the host);
/// x, w, y and the weights live in the backend's memory, and the row moves, SwiGLU and combines
/// are the backend's `ops` (kernels on the cuda backend). The all-to-all mode reads the exchanged
/// per-expert counts back on the host, and tensor_sequence the gathered ids: both synchronise
/// with the device once per forward.
///
/// Qwen2-MoE's shared expert is gated: `set_shared_gate(g)` ([1, H], replicated) scales its
/// output per token by σ(x_t · g). The gate runs on the tokens the shared expert sees (every
/// token, or the rank's own under all_to_all); its scores' gradient is all-reduced where the
/// shared expert is split, its dx is added once after the layer's collective, and its weight's
/// gradient is all-reduced under all_to_all (each rank saw its own tokens).
///
/// The pieces live in layer/experts/: the grouped SwiGLU FFN (ffn.hpp), the host bookkeeping of
/// which row goes where (dispatch.hpp), the all-to-all mode's traffic (all_to_all.hpp) and the
/// tensor_sequence mode's gathered tokens (sequence.hpp); this file is the layer — construction,
/// placements, and each mode's collectives.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/experts/all_to_all.hpp"
#include "tpx/layer/experts/dispatch.hpp"
#include "tpx/layer/experts/ffn.hpp"
#include "tpx/layer/experts/sequence.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/layer/tokens.hpp"
#include "tpx/shard/placement.hpp"
#include "tpx/style/moe_experts.hpp"
#include "tpx/style/placement.hpp"

namespace tpx::inline v0::layer {

struct experts_options {
  std::string name = "experts";
  index_t n_experts = 0;
  index_t hidden = 0;
  index_t inter = 0;  ///< each expert's intermediate size I
  index_t top_k = 0;
  index_t shared_inter = 0;  ///< the shared expert's intermediate size; 0: none
};

template <class Style, backend_with_ops Backend, class T = float>
class experts {
  static constexpr style::expert_split mode = Style::mode;
  static constexpr bool sequence = mode == style::expert_split::tensor_sequence;
  static constexpr bool all_to_all = mode == style::expert_split::all_to_all;

 public:
  using style_type = Style;
  using backend_type = Backend;
  using value_type = T;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  using buffer = typename Backend::template buffer<T>;
  /// What the expert weights are held as: T, or narrower under `weights_in`.
  using weight_type = weight_t<Backend, T>;

  /// Builds this rank's experts from the full tensors (every rank passes the same). Without a
  /// shared expert, `shared_gate_up` [2·Is, H] and `shared_down` [H, Is] are empty views.
  experts(engine_type& engine, comm_type& comm, tensor_view<const weight_type, 3> gate_up,
          tensor_view<const weight_type, 3> down, matrix_view<const weight_type> shared_gate_up,
          matrix_view<const weight_type> shared_down, experts_options options)
      : experts(engine, comm, std::move(options)) {
    const index_t e = opt_.n_experts, h = opt_.hidden, i = opt_.inter, is = opt_.shared_inter;
    expect(
        gate_up.extents() == extents<3>{{e, 2 * i, h}} && down.extents() == extents<3>{{e, h, i}},
        "{}: gate_up is [{} × {} × {}] and down [{} × {} × {}] but must be [E × 2I × H] = "
        "[{} × {} × {}] and [E × H × I] = [{} × {} × {}]",
        opt_.name, gate_up.extent(0), gate_up.extent(1), gate_up.extent(2), down.extent(0),
        down.extent(1), down.extent(2), e, 2 * i, h, e, h, i);
    expect(shared_gate_up.rows() == 2 * is &&
               shared_gate_up.cols() == (is > 0 ? h : shared_gate_up.cols()) &&
               shared_down.cols() == is && shared_down.rows() == (is > 0 ? h : shared_down.rows()),
           "{}: the shared expert's gate_up is [{} × {}] and down [{} × {}] but must be [{} × {}] "
           "and [{} × {}]",
           opt_.name, shared_gate_up.rows(), shared_gate_up.cols(), shared_down.rows(),
           shared_down.cols(), 2 * is, h, h, is);
    routed_.load(
        own_experts_.size(), h, own_inter_,
        [&](index_t le) { return gate_up[own_experts_.begin + le]; },
        [&](index_t le) { return down[own_experts_.begin + le]; });
    shared_.load(
        is > 0 ? 1 : 0, h, own_shared_, [&](index_t) { return shared_gate_up; },
        [&](index_t) { return shared_down; });
  }

  /// Builds this rank's experts from its shards alone, as a checkpoint reader gives them: the
  /// blocks `gate_up_placement(options, tp).of(rank)` [E_r, 2·I_r, H] (each local expert's gate
  /// rows of the slice, then its up rows), `down_placement` [E_r, H, I_r], and the shared expert's
  /// `shared_gate_up_placement` [2·Is_r, H] and `shared_down_placement` [H, Is_r] (empty views
  /// without a shared expert).
  experts(shard::from_shard_t, engine_type& engine, comm_type& comm,
          tensor_view<const weight_type, 3> gate_up, tensor_view<const weight_type, 3> down,
          matrix_view<const weight_type> shared_gate_up, matrix_view<const weight_type> shared_down,
          experts_options options)
      : experts(engine, comm, std::move(options)) {
    const index_t el = own_experts_.size(), h = opt_.hidden, ir = own_inter_.size(),
                  sr = own_shared_.size();
    expect(gate_up.extents() == extents<3>{{el, 2 * ir, h}} &&
               down.extents() == extents<3>{{el, h, ir}},
           "{} ({}, rank {}): was given gate_up [{} × {} × {}] and down [{} × {} × {}] but holds "
           "[{} × {} × {}] and [{} × {} × {}] (local experts × 2·I slice × H, local experts × H "
           "× I slice)",
           opt_.name, Style::name, comm.rank(), gate_up.extent(0), gate_up.extent(1),
           gate_up.extent(2), down.extent(0), down.extent(1), down.extent(2), el, 2 * ir, h, el, h,
           ir);
    const bool shared = opt_.shared_inter > 0;
    expect(shared ? shared_gate_up.rows() == 2 * sr && shared_gate_up.cols() == h &&
                        shared_down.rows() == h && shared_down.cols() == sr
                  : shared_gate_up.size() == 0 && shared_down.size() == 0,
           "{} ({}, rank {}): was given a shared expert of gate_up [{} × {}] and down [{} × {}] "
           "but holds [{} × {}] and [{} × {}]",
           opt_.name, Style::name, comm.rank(), shared_gate_up.rows(), shared_gate_up.cols(),
           shared_down.rows(), shared_down.cols(), shared ? 2 * sr : 0, shared ? h : 0,
           shared ? h : 0, shared ? sr : 0);
    routed_.upload(el, h, ir, {gate_up.data(), static_cast<std::size_t>(gate_up.size())},
                   {down.data(), static_cast<std::size_t>(down.size())});
    shared_.upload(shared ? 1 : 0, h, sr, contiguous(shared_gate_up), contiguous(shared_down));
  }

  /// Where each rank's routed gate|up [E, 2I, H] sits: whole experts (dim 0, E / ep each) under
  /// expert parallelism, else every expert's I slice of the gate block and of the up block
  /// (dim 1, packed, balanced).
  static shard::placement gate_up_placement(const experts_options& o, int tp) {
    return style::placement(Style{}, style::expert_tensor::gate_up, dims(o), tp,
                            o.name + ".gate_up_proj");
  }
  /// Where each rank's routed down [E, H, I] sits: whole experts (dim 0), or the I slice (dim 2).
  static shard::placement down_placement(const experts_options& o, int tp) {
    return style::placement(Style{}, style::expert_tensor::down, dims(o), tp,
                            o.name + ".down_proj");
  }
  /// The shared expert's stacked gate|up [2·Is, H]: each block's Is slice (packed rows), or
  /// replicated in the all-to-all mode (its tokens stay on their rank).
  static shard::placement shared_gate_up_placement(const experts_options& o, int tp) {
    return style::placement(Style{}, style::expert_tensor::shared_gate_up, dims(o), tp,
                            o.name + ".shared_expert.gate_up_proj");
  }
  /// The shared expert's down [H, Is]: the Is slice (columns), or replicated (all-to-all).
  static shard::placement shared_down_placement(const experts_options& o, int tp) {
    return style::placement(Style{}, style::expert_tensor::shared_down, dims(o), tp,
                            o.name + ".shared_expert.down_proj");
  }

  const std::string& name() const noexcept { return opt_.name; }
  index_t n_experts() const noexcept { return opt_.n_experts; }
  index_t hidden() const noexcept { return opt_.hidden; }
  index_t top_k() const noexcept { return opt_.top_k; }
  /// The experts [begin, end) this rank holds.
  shard::interval local_experts() const noexcept { return own_experts_; }
  /// The slice of each expert's I this rank holds (the whole I under expert parallelism).
  shard::interval inter_slice() const noexcept { return own_inter_; }
  /// The slice of the shared expert's I this rank holds.
  shard::interval shared_slice() const noexcept { return own_shared_; }
  bool has_shared() const noexcept { return opt_.shared_inter > 0; }

  /// The gate of the shared expert: a replicated [1, H] linear whose sigmoid scales the shared
  /// expert's output per token (Qwen2-MoE's `shared_expert_gate`).
  using gate_style =
      std::conditional_t<all_to_all, style::replicate_grad_all_reduce, style::replicate<>>;
  using gate_type = linear<gate_style, Backend, T>;
  /// Gates the shared expert with `g` [1, H] (every rank passes all of it).
  void set_shared_gate(matrix_view<const weight_type> g) {
    expect(has_shared(), "{}: a shared expert gate needs a shared expert (shared_inter > 0)",
           opt_.name);
    gate_.emplace(*engine_, *comm_, g, std::span<const T>{},
                  linear_options{.name = opt_.name + ".shared_expert_gate",
                                 .out_features = 1,
                                 .in_features = opt_.hidden});
  }
  /// The shared expert's gate (empty: none).
  std::optional<gate_type>& shared_gate() noexcept { return gate_; }
  const std::optional<gate_type>& shared_gate() const noexcept { return gate_; }

  /// d gate_up [E_local, 2·I_r, H] (gate rows of the slice, then up rows) and d down
  /// [E_local, H, I_r]; likewise the shared expert's as [1, …].
  /// Empty before the first backward (experts that only run forward hold no gradient).
  tensor_view<const T, 3> gate_up_grad() const { return routed_.gate_up_grad(); }
  /// This rank's routed weights, laid out as their gradients.
  tensor_view<const weight_type, 3> gate_up_weight() const { return routed_.gate_up_weight(); }
  tensor_view<const weight_type, 3> down_weight() const { return routed_.down_weight(); }
  tensor_view<const T, 3> down_grad() const { return routed_.down_grad(); }
  /// The shared expert's gate|up and down slices, [1, 2·Is_r, H] and [1, H, Is_r] (empty
  /// without one).
  tensor_view<const weight_type, 3> shared_gate_up_weight() const {
    return shared_.gate_up_weight();
  }
  tensor_view<const weight_type, 3> shared_down_weight() const { return shared_.down_weight(); }
  tensor_view<const T, 3> shared_gate_up_grad() const { return shared_.gate_up_grad(); }
  tensor_view<const T, 3> shared_down_grad() const { return shared_.down_grad(); }

  void forward(matrix_view<const T> x, matrix_view<const std::int64_t> ids, matrix_view<const T> w,
               matrix_view<T> y, index_t total_tokens = -1) {
    check(x, ids, w, total_tokens);
    expect_tokens(y, x.rows(), "output");
    if constexpr (all_to_all) {
      forward_all_to_all(x, ids, w, y);
    } else if constexpr (sequence) {
      const std::span<const index_t> counts = tokens_.counts(total_tokens, comm_->size());
      gathered_.gather(*comm_, ops_, x, ids, w, counts);
      const matrix_view<T> partial = detail::sized(y_full_, total_tokens, opt_.hidden);
      local_forward(gathered_.x(), gathered_.ids(), gathered_.w(), partial);
      comm::scatter_to_sequence::forward<comm_type, T>(*comm_, partial, y, counts);
    } else {
      local_forward(x, ids, w, y);
      comm::reduce_from_parallel::forward<comm_type, T>(*comm_, y);
    }
  }

  void backward(matrix_view<const T> x, matrix_view<const std::int64_t> ids, matrix_view<const T> w,
                matrix_view<const T> dy, matrix_view<T> dx, matrix_view<T> dw,
                index_t total_tokens = -1) {
    check(x, ids, w, total_tokens);
    expect_tokens(dy, x.rows(), "output gradient");
    expect_tokens(dx, x.rows(), "input gradient");
    expect(dw.rows() == w.rows() && dw.cols() == w.cols(),
           "{}: d weights are [{} × {}] but the weights are [{} × {}]", opt_.name, dw.rows(),
           dw.cols(), w.rows(), w.cols());
    if constexpr (all_to_all) {
      backward_all_to_all(x, ids, w, dy, dx, dw);
    } else if constexpr (sequence) {
      const index_t t = total_tokens;
      const std::span<const index_t> counts = tokens_.counts(t, comm_->size());
      const matrix_view<T> dy_full = detail::sized(dy_full_, t, opt_.hidden);
      comm::scatter_to_sequence::backward<comm_type, T>(*comm_, dy, dy_full, counts);
      const matrix_view<T> dx_full = detail::sized(dx_full_, t, opt_.hidden);
      const matrix_view<T> dw_full = detail::sized(dw_full_, t, opt_.top_k);
      local_backward(gathered_.x(), gathered_.ids(), gathered_.w(), dy_full, dx_full, dw_full);
      comm::reduce_scatter_rows<comm_type, T>(*comm_, dw_full, dw, counts);
      comm::gather_from_sequence::backward<comm_type, T>(*comm_, dx_full, dx, counts);
      if (gate_) {  // every token's gate on every rank: add this rank's rows of its dx
        const matrix_view<const T> dxg = gate_backward(gathered_.x(), true);
        index_t first = 0;
        for (int r = 0; r < comm_->rank(); ++r) first += counts[static_cast<std::size_t>(r)];
        ops_.add(dx, dxg.row_range(first, first + x.rows()));
      }
    } else {
      local_backward(x, ids, w, dy, dx, dw);
      comm_->all_reduce(dw.span());
      comm::copy_to_parallel::backward<comm_type, T>(*comm_, dx);
      if (gate_) ops_.add(dx, gate_backward(x, true));
    }
  }

 private:
  /// Checks the options and finds this rank's experts and slices from the placements.
  experts(engine_type& engine, comm_type& comm, experts_options options)
      : engine_(&engine), comm_(&comm), ops_(comm), opt_(std::move(options)) {
    const index_t e = opt_.n_experts, h = opt_.hidden, i = opt_.inter, is = opt_.shared_inter;
    expect(e >= 1 && h >= 1 && i >= 0 && is >= 0,
           "{}: n_experts and hidden must be positive and the intermediate sizes non-negative "
           "(got E = {}, H = {}, I = {}, shared I = {})",
           opt_.name, e, h, i, is);
    expect(opt_.top_k >= 1 && opt_.top_k <= e,
           "{}: top_k = {} must be between 1 and the number of experts, {}", opt_.name, opt_.top_k,
           e);
    const int n = comm.size(), r = comm.rank();
    const shard::selection gu = gate_up_placement(opt_, n).of(r);
    own_experts_ = only(gu.dims[0]);
    own_inter_ = only(down_placement(opt_, n).of(r).dims[2]);
    own_shared_ = only(shared_down_placement(opt_, n).of(r).dims[1]);
  }

  static style::experts_dims dims(const experts_options& o) {
    return {.n_experts = o.n_experts,
            .hidden = o.hidden,
            .inter = o.inter,
            .shared_inter = o.shared_inter};
  }
  /// The one interval of a plain split (or of a whole dim).
  static shard::interval only(const shard::pieces& p) {
    return p.parts.empty() ? shard::interval{} : p.parts[0];
  }
  static std::span<const weight_type> contiguous(matrix_view<const weight_type> m) {
    expect(m.size() == 0 || m.is_contiguous(), "tpx::experts: a shard must be a contiguous view");
    return {m.data(), static_cast<std::size_t>(m.size())};
  }

  // --- tensor, tensor_sequence and masked: every token on every rank ------------------------

  /// y (partial over ranks) for tokens x with routing ids, w: the local experts' share plus the
  /// shared expert's.
  void local_forward(matrix_view<const T> x, matrix_view<const std::int64_t> ids,
                     matrix_view<const T> w, matrix_view<T> y) {
    // Slots: choice (t, j) → its row in the expert-major buffer, −1 when not local.
    rows_.sort(x.rows(), opt_.top_k, routed_.groups(), [&](index_t t, index_t j) {
      const index_t e = ids(t, j) - own_experts_.begin;
      return 0 <= e && e < routed_.groups() ? e : index_t{-1};
    });
    const matrix_view<T> xs = detail::sized(xs_, rows_.rows(), opt_.hidden);
    ops_.spread_rows(x, rows_.slots(), opt_.top_k, {}, xs);
    ops_.combine_rows(run_experts(xs), rows_.slots(), opt_.top_k, w, y);
    add_shared_forward(x, y);
  }

  /// dx (partial) and d weights (partial) for the tokens of local_forward.
  void local_backward(matrix_view<const T> x, matrix_view<const std::int64_t>,
                      matrix_view<const T> w, matrix_view<const T> dy, matrix_view<T> dx,
                      matrix_view<T> dw) {
    const index_t k = opt_.top_k;
    const matrix_view<T> dout = detail::sized(dout_, rows_.rows(), opt_.hidden);
    ops_.row_dots(dy, outputs(), rows_.slots(), dw);  // d w[t, j] = dy_t · o_slot
    ops_.spread_rows(dy, rows_.slots(), k, w, dout);  // d o_slot = w[t, j] · dy_t
    ops_.combine_rows(backward_experts(dout), rows_.slots(), k, {}, dx);
    add_shared_backward(x, dy, dx);
  }

  // --- all_to_all: tokens travel to their experts' ranks -----------------------------------

  void forward_all_to_all(matrix_view<const T> x, matrix_view<const std::int64_t> ids,
                          matrix_view<const T> w, matrix_view<T> y) {
    exchange_.plan(*comm_, ops_, ids, opt_.n_experts, routed_.groups(), rows_);
    const matrix_view<T> xs = exchange_.to_experts(*comm_, ops_, x, opt_.top_k, {}, rows_, xs_);
    // The expert outputs come back in choice order, kept for backward.
    const matrix_view<const T> back =
        exchange_.from_experts(*comm_, ops_, run_experts(xs), rows_, back_);
    ops_.combine_rows(back, rows_.slots(), opt_.top_k, w, y);
    add_shared_forward(x, y);
  }

  void backward_all_to_all(matrix_view<const T> x, matrix_view<const std::int64_t>,
                           matrix_view<const T> w, matrix_view<const T> dy, matrix_view<T> dx,
                           matrix_view<T> dw) {
    const index_t k = opt_.top_k;
    ops_.row_dots(dy, make_matrix<const T>(back_.data(), x.rows() * k, opt_.hidden), rows_.slots(),
                  dw);
    const matrix_view<T> dout = exchange_.to_experts(*comm_, ops_, dy, k, w, rows_, dout_);
    const matrix_view<const T> dxs =
        exchange_.from_experts(*comm_, ops_, backward_experts(dout), rows_, returned_);
    ops_.combine_rows(dxs, rows_.slots(), k, {}, dx);
    add_shared_backward(x, dy, dx);
    if (has_shared()) {  // replicated shared expert, each rank saw only its tokens
      comm_->all_reduce(shared_.gate_up_grad_span());
      comm_->all_reduce(shared_.down_grad_span());
    }
    if (gate_) ops_.add(dx, gate_backward(x, false));  // the expert is whole: its scores too
  }

  // --- pieces shared by the modes ----------------------------------------------------------

  /// The routed experts' outputs o_ for the expert-major rows xs.
  matrix_view<const T> run_experts(matrix_view<const T> xs) {
    const matrix_view<T> o = detail::sized(o_, xs.rows(), opt_.hidden);
    routed_.forward(*engine_, ops_, xs, rows_.offsets(), o);
    return o;
  }
  matrix_view<const T> outputs() const {
    return make_matrix<const T>(o_.data(), rows_.rows(), opt_.hidden);
  }
  matrix_view<const T> backward_experts(matrix_view<const T> dout) {
    const matrix_view<T> dxs = detail::sized(dxs_, dout.rows(), opt_.hidden);
    routed_.backward(*engine_, ops_, make_matrix<const T>(xs_.data(), dout.rows(), opt_.hidden),
                     rows_.offsets(), dout, dxs);
    return dxs;
  }

  /// y += the shared expert's output for tokens x (times its gate's σ(x · g) when gated).
  void add_shared_forward(matrix_view<const T> x, matrix_view<T> y) {
    if (!has_shared()) return;
    const index_t n = x.rows(), h = opt_.hidden;
    const std::array<index_t, 2> all{0, n};
    const matrix_view<T> o = detail::sized(shared_o_, n, h);
    shared_.forward(*engine_, ops_, x, all, o);
    if (!gate_) return ops_.add(y, read_only(o));
    // The gate's scores s = σ(x · g), computed on the host (one number a token).
    const matrix_view<T> logit = detail::sized(gate_logit_, n, 1);
    gate_->forward(x, logit);
    gate_s_host_.resize(static_cast<std::size_t>(n));
    ops_.copy_to_host(read_only(logit), make_matrix(gate_s_host_.data(), n, 1));
    for (T& v : gate_s_host_) v = from_double(1.0 / (1.0 + std::exp(-as_double(v))));
    const matrix_view<T> score = detail::sized(gate_s_, n, 1);
    ops_.copy_from_host(make_matrix<const T>(gate_s_host_.data(), n, 1), score);
    identity_.resize(static_cast<std::size_t>(n));
    for (index_t t = 0; t < n; ++t) identity_[static_cast<std::size_t>(t)] = t;
    const matrix_view<T> scaled = detail::sized(shared_scaled_, n, h);
    ops_.spread_rows(read_only(o), identity_, 1, read_only(score), scaled);
    ops_.add(y, read_only(scaled));
  }
  /// dx += the shared expert's input gradient; under a gate, its output gradient is s ⊙ dy and
  /// the scores' gradient ds = dy · o is kept (partial where the expert is split) for
  /// gate_backward.
  void add_shared_backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    if (!has_shared()) return;
    const index_t n = x.rows(), h = opt_.hidden;
    const std::array<index_t, 2> all{0, n};
    const matrix_view<T> dxs = detail::sized(shared_dx_, n, h);
    if (gate_) {
      const matrix_view<const T> o = make_matrix<const T>(shared_o_.data(), n, h),
                                 score = make_matrix<const T>(gate_s_.data(), n, 1);
      ops_.row_dots(dy, o, identity_, detail::sized(gate_ds_, n, 1));
      const matrix_view<T> dout = detail::sized(shared_scaled_, n, h);
      ops_.spread_rows(dy, identity_, 1, score, dout);
      shared_.backward(*engine_, ops_, x, all, read_only(dout), dxs);
    } else {
      shared_.backward(*engine_, ops_, x, all, dy, dxs);
    }
    ops_.add(dx, read_only(dxs));
  }
  /// The gate's backward for the tokens x of the last forward: its weight's gradient, and the
  /// dx it adds (to add once, after the layer's collectives). `split`: the shared expert is split
  /// over the group, so the scores' gradient is summed over it first.
  matrix_view<const T> gate_backward(matrix_view<const T> x, bool split) {
    const index_t n = x.rows();
    const matrix_view<T> ds = make_matrix(gate_ds_.data(), n, 1);
    if (split) comm_->all_reduce(ds.span());
    // d logit = ds · s (1 − s), on the host beside the scores.
    std::vector<T> d(static_cast<std::size_t>(n));
    ops_.copy_to_host(read_only(ds), make_matrix(d.data(), n, 1));
    for (std::size_t t = 0; t < d.size(); ++t) {
      const double score = as_double(gate_s_host_[t]);
      d[t] = from_double(as_double(d[t]) * score * (1 - score));
    }
    const matrix_view<T> dlogit = detail::sized(gate_logit_, n, 1);
    ops_.copy_from_host(make_matrix<const T>(d.data(), n, 1), dlogit);
    const matrix_view<T> dxg = detail::sized(gate_dx_, n, opt_.hidden);
    gate_->backward(x, read_only(dlogit), dxg);
    return read_only(dxg);
  }

  /// A host value as T (a storage type such as bf16 through float).
  static T from_double(double x) {
    if constexpr (std::is_arithmetic_v<T>)
      return static_cast<T>(x);
    else
      return static_cast<T>(static_cast<float>(x));
  }

  /// x, ids and weights of this rank's tokens, and the expert ids' range.
  void check(matrix_view<const T> x, matrix_view<const std::int64_t> ids, matrix_view<const T> w,
             index_t total) {
    const index_t n = x.rows(), k = opt_.top_k;
    if constexpr (sequence) {
      expect(total >= 0, "{} ({}): pass the total token count under sequence parallelism",
             opt_.name, Style::name);
      const index_t mine = tokens_.of(total, comm_->size(), comm_->rank());
      expect(n == mine,
             "{} ({}, rank {}): the input has {} tokens but the rank's block of {} is {}",
             opt_.name, Style::name, comm_->rank(), n, total, mine);
    }
    expect(x.cols() == opt_.hidden && ids.rows() == n && ids.cols() == k && w.rows() == n &&
               w.cols() == k,
           "{} ({}, rank {}): x [{} × {}], ids [{} × {}] and weights [{} × {}] must be [n × {}], "
           "[n × {}] and [n × {}]",
           opt_.name, Style::name, comm_->rank(), n, x.cols(), ids.rows(), ids.cols(), w.rows(),
           w.cols(), opt_.hidden, k, k);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        expect(0 <= ids(t, j) && ids(t, j) < opt_.n_experts,
               "{}: token {} routes its choice {} to expert {}, outside the {} experts [0, {})",
               opt_.name, t, j, ids(t, j), opt_.n_experts, opt_.n_experts);
  }

  /// An activation of n tokens.
  template <class V>
  void expect_tokens(const V& v, index_t n, std::string_view what) const {
    expect(v.rows() == n && v.cols() == opt_.hidden,
           "{} ({}, rank {}): the {} is [{} × {}] but must be [{} × {}]", opt_.name, Style::name,
           comm_->rank(), what, v.rows(), v.cols(), n, opt_.hidden);
  }

  engine_type* engine_;
  comm_type* comm_;
  typename Backend::ops ops_;
  experts_options opt_;
  shard::interval own_experts_, own_inter_, own_shared_;
  detail::grouped_swiglu<Backend, T> routed_, shared_;
  detail::expert_rows rows_;  // routing bookkeeping of the last forward
  detail::row_exchange<Backend, T> exchange_;
  detail::token_shards tokens_;
  detail::token_gather<Backend, T> gathered_;  // tensor_sequence: every rank's tokens
  std::optional<gate_type> gate_;              // the shared expert's gate (Qwen2-MoE)
  std::vector<T> gate_s_host_;                 // its scores σ(x · g) of the last forward
  std::vector<index_t> identity_;              // row t ↔ slot t
  // Activations of the last forward (xs and o by expert; all_to_all: o's rows sent back).
  buffer xs_, o_, back_, shared_o_, gate_s_, shared_scaled_, shared_dx_, gate_logit_, gate_ds_,
      gate_dx_;
  // Backward and transfer scratch.
  buffer dout_, dxs_, returned_, y_full_, dy_full_, dx_full_, dw_full_;
};

}  // namespace tpx::inline v0::layer
