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

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tpx/comm/conjugate.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
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

  /// Builds this rank's experts from the full tensors (every rank passes the same). Without a
  /// shared expert, `shared_gate_up` [2·Is, H] and `shared_down` [H, Is] are empty views.
  experts(engine_type& engine, comm_type& comm, tensor_view<const T, 3> gate_up,
          tensor_view<const T, 3> down, matrix_view<const T> shared_gate_up,
          matrix_view<const T> shared_down, experts_options options)
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
    load(
        routed_, own_experts_.size(), own_inter_,
        [&](index_t le) { return gate_up[own_experts_.begin + le]; },
        [&](index_t le) { return down[own_experts_.begin + le]; });
    load(
        shared_, is > 0 ? 1 : 0, own_shared_, [&](index_t) { return shared_gate_up; },
        [&](index_t) { return shared_down; });
  }

  /// Builds this rank's experts from its shards alone, as a checkpoint reader gives them: the
  /// blocks `gate_up_placement(options, tp).of(rank)` [E_r, 2·I_r, H] (each local expert's gate
  /// rows of the slice, then its up rows), `down_placement` [E_r, H, I_r], and the shared expert's
  /// `shared_gate_up_placement` [2·Is_r, H] and `shared_down_placement` [H, Is_r] (empty views
  /// without a shared expert).
  experts(shard::from_shard_t, engine_type& engine, comm_type& comm,
          tensor_view<const T, 3> gate_up, tensor_view<const T, 3> down,
          matrix_view<const T> shared_gate_up, matrix_view<const T> shared_down,
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
    const auto upload = [&](ffn& f, index_t n, index_t i, std::span<const T> w1,
                            std::span<const T> w2) {
      f.n = n, f.inter = i, f.hidden = h;
      Backend::upload(w1, f.w1);
      Backend::upload(w2, f.w2);
    };
    upload(routed_, el, ir, {gate_up.data(), static_cast<std::size_t>(gate_up.size())},
           {down.data(), static_cast<std::size_t>(down.size())});
    upload(shared_, shared ? 1 : 0, sr, contiguous(shared_gate_up), contiguous(shared_down));
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

  /// d gate_up [E_local, 2·I_r, H] (gate rows of the slice, then up rows) and d down
  /// [E_local, H, I_r]; likewise the shared expert's as [1, …].
  /// Empty before the first backward (experts that only run forward hold no gradient).
  tensor_view<const T, 3> gate_up_grad() const { return routed_.view(routed_.dw1, true); }
  /// This rank's routed weights, laid out as their gradients.
  tensor_view<const T, 3> gate_up_weight() const { return routed_.view(routed_.w1, true); }
  tensor_view<const T, 3> down_weight() const { return routed_.view(routed_.w2, false); }
  tensor_view<const T, 3> down_grad() const { return routed_.view(routed_.dw2, false); }
  tensor_view<const T, 3> shared_gate_up_grad() const { return shared_.view(shared_.dw1, true); }
  tensor_view<const T, 3> shared_down_grad() const { return shared_.view(shared_.dw2, false); }

  void forward(matrix_view<const T> x, matrix_view<const std::int64_t> ids, matrix_view<const T> w,
               matrix_view<T> y, index_t total_tokens = -1) {
    check(x, ids, w, total_tokens);
    expect_tokens(y, x.rows(), "output");
    if constexpr (all_to_all) {
      forward_all_to_all(x, ids, w, y);
    } else if constexpr (sequence) {
      gather_tokens(x, ids, w, total_tokens);
      const index_t t = total_tokens;
      const matrix_view<T> partial = detail::sized(y_full_, t, opt_.hidden);
      local_forward(full_x(t), full_ids(t), full_w(t), partial);
      comm::scatter_to_sequence::forward<comm_type, T>(*comm_, partial, y,
                                                       tokens_.counts(t, comm_->size()));
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
    for (ffn* f : {&routed_, &shared_}) {  // gradients exist from the first backward on
      if (f->dw1.size() != f->w1.size()) f->dw1.resize(f->w1.size());
      if (f->dw2.size() != f->w2.size()) f->dw2.resize(f->w2.size());
    }
    if constexpr (all_to_all) {
      backward_all_to_all(x, ids, w, dy, dx, dw);
    } else if constexpr (sequence) {
      const index_t t = total_tokens;
      const std::span<const index_t> counts = tokens_.counts(t, comm_->size());
      const matrix_view<T> dy_full = detail::sized(dy_full_, t, opt_.hidden);
      comm::scatter_to_sequence::backward<comm_type, T>(*comm_, dy, dy_full, counts);
      const matrix_view<T> dx_full = detail::sized(dx_full_, t, opt_.hidden);
      const matrix_view<T> dw_full = detail::sized(dw_full_, t, opt_.top_k);
      local_backward(full_x(t), full_ids(t), full_w(t), dy_full, dx_full, dw_full);
      comm::reduce_scatter_rows<comm_type, T>(*comm_, dw_full, dw, counts);
      comm::gather_from_sequence::backward<comm_type, T>(*comm_, dx_full, dx, counts);
    } else {
      local_backward(x, ids, w, dy, dx, dw);
      comm_->all_reduce(dw.span());
      comm::copy_to_parallel::backward<comm_type, T>(*comm_, dx);
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
  static std::span<const T> contiguous(matrix_view<const T> m) {
    expect(m.size() == 0 || m.is_contiguous(), "tpx::experts: a shard must be a contiguous view");
    return {m.data(), static_cast<std::size_t>(m.size())};
  }

  /// One SwiGLU FFN per local expert: w1 [n, 2I, H] (gate rows then up rows), w2 [n, H, I].
  struct ffn {
    index_t n = 0, inter = 0, hidden = 0;
    buffer w1, w2, dw1, dw2;
    /// `b` as [n, 2I, H] (first) or [n, H, I]; [0, 0, 0] while `b` (a gradient) is unallocated.
    template <class B>
    auto view(B& b, bool first) const {
      using V = std::remove_pointer_t<decltype(b.data())>;
      const extents<3> e =
          first ? extents<3>{{n, 2 * inter, hidden}} : extents<3>{{n, hidden, inter}};
      if (static_cast<index_t>(b.size()) != e.size())
        return tensor_view<V, 3>(b.data(), {{0, 0, 0}});
      return tensor_view<V, 3>(b.data(), e);
    }
  };

  template <class Gu, class Dn>
  void load(ffn& f, index_t n, shard::interval slice, Gu gate_up, Dn down) {
    const index_t h = opt_.hidden, i = slice.size(), full = n > 0 ? gate_up(0).rows() / 2 : 0;
    f.n = n, f.inter = i, f.hidden = h;
    std::vector<T> w1, w2;
    for (index_t e = 0; e < n; ++e) {
      const matrix_view<const T> gu = gate_up(e), dn = down(e);
      for (const index_t half : {index_t{0}, full})  // gate rows, then up rows of the slice
        for (index_t row = slice.begin; row < slice.end; ++row)
          for (index_t j = 0; j < h; ++j) w1.push_back(gu(half + row, j));
      for (index_t row = 0; row < h; ++row)
        for (index_t j = slice.begin; j < slice.end; ++j) w2.push_back(dn(row, j));
    }
    Backend::upload(std::span<const T>(w1), f.w1);
    Backend::upload(std::span<const T>(w2), f.w2);
  }

  // --- the expert FFN over rows grouped by local expert -------------------------------------

  /// h = xs · w1ᵀ, a = silu(gate) ⊙ up, o = a · w2ᵀ for each expert's rows [off[e], off[e+1]).
  void ffn_forward(const ffn& f, matrix_view<const T> xs, std::span<const index_t> off,
                   matrix_view<T> h, matrix_view<T> a, matrix_view<T> o) {
    const auto w1 = f.view(f.w1, true);
    const auto w2 = f.view(f.w2, false);
    groups_.clear();
    for (index_t e = 0; e < f.n; ++e)
      groups_.push_back(
          {.op_b = gemm::op::transpose, .a = rows(xs, off, e), .b = w1[e], .c = rows(h, off, e)});
    engine_->grouped_gemm(std::span<const gemm::gemm_args<T>>(groups_));
    ops_.swiglu_forward(matrix_view<const T>(h), a);
    groups_.clear();
    for (index_t e = 0; e < f.n; ++e)
      groups_.push_back(
          {.op_b = gemm::op::transpose, .a = rows(a, off, e), .b = w2[e], .c = rows(o, off, e)});
    engine_->grouped_gemm(std::span<const gemm::gemm_args<T>>(groups_));
  }

  /// dxs from do, and the experts' dw1, dw2 (overwritten).
  void ffn_backward(ffn& f, matrix_view<const T> xs, std::span<const index_t> off,
                    matrix_view<const T> h, matrix_view<const T> a, matrix_view<const T> dout,
                    matrix_view<T> dxs) {
    const auto w1 = f.view(f.w1, true);
    const auto w2 = f.view(f.w2, false);
    const auto dw1 = f.view(f.dw1, true);
    const auto dw2 = f.view(f.dw2, false);
    const index_t n = h.rows(), i = f.inter;
    const matrix_view<T> da = detail::sized(da_, n, i), dh = detail::sized(dh_, n, 2 * i);
    groups_.clear();
    for (index_t e = 0; e < f.n; ++e) {
      groups_.push_back({.a = rows(dout, off, e), .b = w2[e], .c = rows(da, off, e)});
      groups_.push_back({.op_a = gemm::op::transpose,
                         .a = rows(dout, off, e),
                         .b = rows(a, off, e),
                         .c = dw2[e]});
    }
    engine_->grouped_gemm(std::span<const gemm::gemm_args<T>>(groups_));
    ops_.swiglu_backward(h, matrix_view<const T>(da), dh);
    groups_.clear();
    for (index_t e = 0; e < f.n; ++e) {
      groups_.push_back({.a = rows(dh, off, e), .b = w1[e], .c = rows(dxs, off, e)});
      groups_.push_back(
          {.op_a = gemm::op::transpose, .a = rows(dh, off, e), .b = rows(xs, off, e), .c = dw1[e]});
    }
    engine_->grouped_gemm(std::span<const gemm::gemm_args<T>>(groups_));
  }

  template <class V>
  static V rows(V m, std::span<const index_t> off, index_t e) {
    return m.row_range(off[static_cast<std::size_t>(e)], off[static_cast<std::size_t>(e + 1)]);
  }

  // --- tensor, tensor_sequence and masked: every token on every rank ------------------------

  /// y (partial over ranks) for tokens x with routing ids, w: the local experts' share plus the
  /// shared expert's.
  void local_forward(matrix_view<const T> x, matrix_view<const std::int64_t> ids,
                     matrix_view<const T> w, matrix_view<T> y) {
    const index_t n = x.rows(), h = opt_.hidden;
    // Slots: assignment (t, j) → its row in the expert-major buffer, −1 when not local.
    sort_by(n, routed_.n, offsets_, [&](index_t t, index_t j) {
      const index_t e = ids(t, j) - own_experts_.begin;
      return 0 <= e && e < routed_.n ? e : index_t{-1};
    });
    const matrix_view<T> xs = detail::sized(xs_, offsets_.back(), h);
    ops_.spread_rows(x, slots(), opt_.top_k, {}, xs);
    run_experts(xs);
    combine(w, y);
    add_shared_forward(x, y);
  }

  /// dx (partial) and d weights (partial) for the tokens of local_forward.
  void local_backward(matrix_view<const T> x, matrix_view<const std::int64_t>,
                      matrix_view<const T> w, matrix_view<const T> dy, matrix_view<T> dx,
                      matrix_view<T> dw) {
    const index_t k = opt_.top_k, h = opt_.hidden;
    const matrix_view<T> dout = detail::sized(dout_, offsets_.back(), h);
    const matrix_view<const T> o = make_matrix<const T>(o_.data(), offsets_.back(), h);
    ops_.row_dots(dy, o, slots(), dw);          // d w[t, j] = dy_t · o_slot
    ops_.spread_rows(dy, slots(), k, w, dout);  // d o_slot = w[t, j] · dy_t
    const matrix_view<T> dxs = backward_experts(dout);
    ops_.combine_rows(matrix_view<const T>(dxs), slots(), k, {}, dx);
    add_shared_backward(x, dy, dx);
  }

  // --- all_to_all: tokens travel to their experts' ranks -----------------------------------

  void forward_all_to_all(matrix_view<const T> x, matrix_view<const std::int64_t> ids,
                          matrix_view<const T> w, matrix_view<T> y) {
    const index_t n = x.rows(), k = opt_.top_k, h = opt_.hidden, per = routed_.n;
    const int ep = comm_->size();
    // Send order: by global expert, so each destination's rows are contiguous and expert-sorted.
    sort_by(n, opt_.n_experts, starts_, [&](index_t t, index_t j) { return ids(t, j); });
    const index_t n_counts = opt_.n_experts + ep * per;
    counts_host_.resize(static_cast<std::size_t>(n_counts));
    for (index_t e = 0; e < opt_.n_experts; ++e)
      counts_host_[static_cast<std::size_t>(e)] = static_cast<T>(
          starts_[static_cast<std::size_t>(e + 1)] - starts_[static_cast<std::size_t>(e)]);
    const matrix_view<T> send = detail::sized(send_, n * k, h);
    ops_.spread_rows(x, slots(), k, {}, send);

    // Every rank learns how many rows of each of its experts every other rank sends (counts as
    // T: exact, they are small integers), and reads them back on the host.
    per_rank_.assign(static_cast<std::size_t>(ep), per);
    const std::span<T> counts = detail::scratch(counts_, n_counts);
    ops_.copy_from_host(make_matrix<const T>(counts_host_.data(), 1, opt_.n_experts),
                        make_matrix(counts.data(), 1, opt_.n_experts));
    comm_->all_to_all_v(std::span<const T>(counts.first(static_cast<std::size_t>(opt_.n_experts))),
                        per_rank_, counts.subspan(static_cast<std::size_t>(opt_.n_experts)),
                        per_rank_);
    ops_.copy_to_host(make_matrix<const T>(counts.data() + opt_.n_experts, 1, ep * per),
                      make_matrix(counts_host_.data() + opt_.n_experts, 1, ep * per));
    // Rows this rank sends to rank q's expert e (from the sort), and receives from rank q for
    // its own expert e (exchanged).
    const auto sent = [&](int q, index_t e) {
      const auto g = static_cast<std::size_t>(q * per + e);
      return starts_[g + 1] - starts_[g];
    };
    const auto got = [&](int q, index_t e) {
      return static_cast<index_t>(
          as_double(counts_host_[static_cast<std::size_t>(opt_.n_experts + q * per + e)]));
    };
    send_counts_.assign(static_cast<std::size_t>(ep), 0);
    recv_counts_.assign(static_cast<std::size_t>(ep), 0);
    offsets_.assign(static_cast<std::size_t>(per + 1), 0);
    for (int q = 0; q < ep; ++q)
      for (index_t e = 0; e < per; ++e) {
        send_counts_[static_cast<std::size_t>(q)] += sent(q, e) * h;
        recv_counts_[static_cast<std::size_t>(q)] += got(q, e) * h;
        offsets_[static_cast<std::size_t>(e + 1)] += got(q, e);
      }
    for (index_t e = 0; e < per; ++e)
      offsets_[static_cast<std::size_t>(e + 1)] += offsets_[static_cast<std::size_t>(e)];
    const index_t received = offsets_.back();
    // Received rows come source by source, each source's rows expert by expert: map each to its
    // row in the expert-major buffer.
    arrival_.resize(static_cast<std::size_t>(received));
    fill_.assign(offsets_.begin(), offsets_.end() - 1);  // the next free row of each expert
    index_t i = 0;
    for (int q = 0; q < ep; ++q)
      for (index_t e = 0; e < per; ++e)
        for (index_t c = got(q, e); c > 0; --c)
          arrival_[static_cast<std::size_t>(i++)] = fill_[static_cast<std::size_t>(e)]++;

    const matrix_view<T> recv = detail::sized(recv_, received, h);
    comm_->all_to_all_v(std::span<const T>(send.span()), send_counts_, recv.span(), recv_counts_);
    const matrix_view<T> xs = detail::sized(xs_, received, h);
    ops_.spread_rows(matrix_view<const T>(recv), arrivals(), 1, {}, xs);
    run_experts(xs);
    ops_.gather_rows(make_matrix<const T>(o_.data(), received, h), arrivals(), recv);
    const matrix_view<T> back = detail::sized(back_, n * k, h);  // expert outputs in send order
    comm_->all_to_all_v(std::span<const T>(recv.span()), recv_counts_, back.span(), send_counts_);
    combine(w, y);
    add_shared_forward(x, y);
  }

  void backward_all_to_all(matrix_view<const T> x, matrix_view<const std::int64_t>,
                           matrix_view<const T> w, matrix_view<const T> dy, matrix_view<T> dx,
                           matrix_view<T> dw) {
    const index_t n = x.rows(), k = opt_.top_k, h = opt_.hidden, received = offsets_.back();
    const matrix_view<const T> back = make_matrix<const T>(back_.data(), n * k, h);
    const matrix_view<T> send = detail::sized(send_, n * k, h);
    ops_.row_dots(dy, back, slots(), dw);
    ops_.spread_rows(dy, slots(), k, w, send);
    const matrix_view<T> recv = detail::sized(recv_, received, h);
    comm_->all_to_all_v(std::span<const T>(send.span()), send_counts_, recv.span(), recv_counts_);
    const matrix_view<T> dout = detail::sized(dout_, received, h);
    ops_.spread_rows(matrix_view<const T>(recv), arrivals(), 1, {}, dout);
    const matrix_view<T> dxs = backward_experts(dout);
    ops_.gather_rows(matrix_view<const T>(dxs), arrivals(), recv);
    comm_->all_to_all_v(std::span<const T>(recv.span()), recv_counts_, send.span(), send_counts_);
    ops_.combine_rows(matrix_view<const T>(send), slots(), k, {}, dx);
    add_shared_backward(x, dy, dx);
    if (has_shared()) {  // replicated shared expert, each rank saw only its tokens
      comm_->all_reduce(std::span<T>(shared_.dw1.data(), shared_.dw1.size()));
      comm_->all_reduce(std::span<T>(shared_.dw2.data(), shared_.dw2.size()));
    }
  }

  // --- pieces shared by the modes ----------------------------------------------------------

  /// Counting sort of the assignments (t, j) of n tokens by `group(t, j)` ∈ [0, groups), −1 for
  /// none: group g's rows are [offsets[g], offsets[g + 1]), slot_ holds each assignment's row
  /// (−1 for none), in token order within a group.
  template <class Group>
  void sort_by(index_t n, index_t groups, std::vector<index_t>& offsets, Group group) {
    const index_t k = opt_.top_k;
    offsets.assign(static_cast<std::size_t>(groups + 1), 0);
    slot_.assign(static_cast<std::size_t>(n * k), -1);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        if (const index_t g = group(t, j); g >= 0) ++offsets[static_cast<std::size_t>(g + 1)];
    for (index_t g = 0; g < groups; ++g)
      offsets[static_cast<std::size_t>(g + 1)] += offsets[static_cast<std::size_t>(g)];
    fill_.assign(offsets.begin(), offsets.end() - 1);
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        if (const index_t g = group(t, j); g >= 0)
          slot_[static_cast<std::size_t>(t * k + j)] = fill_[static_cast<std::size_t>(g)]++;
  }

  void run_experts(matrix_view<const T> xs) {
    const index_t rows_local = xs.rows(), i = routed_.inter;
    ffn_forward(routed_, xs, offsets_, detail::sized(h_, rows_local, 2 * i),
                detail::sized(a_, rows_local, i), detail::sized(o_, rows_local, opt_.hidden));
  }
  matrix_view<T> backward_experts(matrix_view<const T> dout) {
    const index_t rows_local = dout.rows(), i = routed_.inter;
    const matrix_view<T> dxs = detail::sized(dxs_, rows_local, opt_.hidden);
    ffn_backward(routed_, make_matrix<const T>(xs_.data(), rows_local, opt_.hidden), offsets_,
                 make_matrix<const T>(h_.data(), rows_local, 2 * i),
                 make_matrix<const T>(a_.data(), rows_local, i), dout, dxs);
    return dxs;
  }

  /// y[t] = Σ_j w[t, j] · out[slot(t, j)] over the local slots; out is o_ (local modes) or the
  /// rows sent back (all_to_all).
  void combine(matrix_view<const T> w, matrix_view<T> y) {
    const index_t h = opt_.hidden;
    const matrix_view<const T> out =
        all_to_all ? make_matrix<const T>(back_.data(), w.rows() * w.cols(), h)
                   : make_matrix<const T>(o_.data(), offsets_.back(), h);
    ops_.combine_rows(out, slots(), opt_.top_k, w, y);
  }

  void add_shared_forward(matrix_view<const T> x, matrix_view<T> y) {
    if (!has_shared()) return;
    const index_t n = x.rows(), i = shared_.inter;
    const std::array<index_t, 2> off{0, n};
    const matrix_view<T> o = detail::sized(shared_o_, n, opt_.hidden);
    ffn_forward(shared_, x, off, detail::sized(shared_h_, n, 2 * i), detail::sized(shared_a_, n, i),
                o);
    ops_.add(y, matrix_view<const T>(o));
  }
  void add_shared_backward(matrix_view<const T> x, matrix_view<const T> dy, matrix_view<T> dx) {
    if (!has_shared()) return;
    const index_t n = x.rows(), i = shared_.inter;
    const std::array<index_t, 2> off{0, n};
    const matrix_view<T> dxs =
        detail::sized(shared_o_, n, opt_.hidden);  // the output is not needed
    ffn_backward(shared_, x, off, make_matrix<const T>(shared_h_.data(), n, 2 * i),
                 make_matrix<const T>(shared_a_.data(), n, i), dy, dxs);
    ops_.add(dx, matrix_view<const T>(dxs));
  }

  /// tensor_sequence: all-gathers [x | ids | w] of every rank's tokens in one call.
  void gather_tokens(matrix_view<const T> x, matrix_view<const std::int64_t> ids,
                     matrix_view<const T> w, index_t total) {
    const index_t n = x.rows(), k = opt_.top_k, h = opt_.hidden, width = h + 2 * k;
    const matrix_view<T> mine = detail::sized(pack_, n, width);
    ids_t_.resize(static_cast<std::size_t>(std::max(n, total) * k));
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)  // exact: ids are small integers
        ids_t_[static_cast<std::size_t>(t * k + j)] = static_cast<T>(ids(t, j));
    comm::detail::copy(*comm_, x, mine.col_range(0, h));
    ops_.copy_from_host(make_matrix<const T>(ids_t_.data(), n, k), mine.col_range(h, h + k));
    comm::detail::copy(*comm_, w, mine.col_range(h + k, width));
    const matrix_view<T> all = detail::sized(gathered_, total, width);
    comm::gather_from_sequence::forward<comm_type, T>(*comm_, mine, all,
                                                      tokens_.counts(total, comm_->size()));
    ops_.copy_to_host(matrix_view<const T>(all.col_range(h, h + k)),
                      make_matrix(ids_t_.data(), total, k));
    gathered_ids_.resize(static_cast<std::size_t>(total * k));
    for (std::size_t i = 0; i < gathered_ids_.size(); ++i)
      gathered_ids_[i] = static_cast<std::int64_t>(as_double(ids_t_[i]));
  }
  matrix_view<const T> full_x(index_t total) const {
    return tensor_view<const T, 2>(gathered_.data(), {{total, opt_.hidden}},
                                   opt_.hidden + 2 * opt_.top_k);
  }
  matrix_view<const T> full_w(index_t total) const {
    return tensor_view<const T, 2>(gathered_.data() + opt_.hidden + opt_.top_k,
                                   {{total, opt_.top_k}}, opt_.hidden + 2 * opt_.top_k);
  }
  matrix_view<const std::int64_t> full_ids(index_t total) const {
    return make_matrix<const std::int64_t>(gathered_ids_.data(), total, opt_.top_k);
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

  /// Each assignment's row (−1: none) and each received row's row in the expert-major buffer.
  std::span<const index_t> slots() const { return slot_; }
  std::span<const index_t> arrivals() const { return arrival_; }

  engine_type* engine_;
  comm_type* comm_;
  typename Backend::ops ops_;
  experts_options opt_;
  shard::interval own_experts_, own_inter_, own_shared_;
  ffn routed_, shared_;
  std::vector<gemm::gemm_args<T>> groups_;
  detail::token_shards tokens_;
  // Routing bookkeeping of the last forward.
  std::vector<index_t> offsets_, starts_, slot_, fill_, arrival_, per_rank_, send_counts_,
      recv_counts_;
  std::vector<T> counts_host_, ids_t_;  // host copies of the counts and ids that travel as T
  std::vector<std::int64_t> gathered_ids_;
  // Activations of the last forward (xs, h, a, o by expert; all_to_all: rows sent back).
  buffer xs_, h_, a_, o_, back_, shared_h_, shared_a_, shared_o_, pack_, gathered_;
  // Backward and transfer scratch.
  buffer send_, recv_, dout_, dxs_, da_, dh_, y_full_, dy_full_, dx_full_, dw_full_, counts_;
};

}  // namespace tpx::inline v0::layer
