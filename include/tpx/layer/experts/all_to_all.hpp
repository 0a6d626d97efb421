#pragma once
/// \file
/// `row_exchange<Backend, T>`: the all-to-all mode's traffic. Each rank sorts its tokens' k
/// choices by global expert, so the rows for rank q's experts are contiguous and expert-sorted;
/// the ranks exchange how many rows of each expert they send (as T: exact, small integers, read
/// back on the host — one synchronisation per forward), then the rows themselves. Received rows
/// come source by source; `expert_rows::arrive` places them expert-major for the grouped GEMMs,
/// and the way back undoes it.

#include <span>
#include <vector>

#include "tpx/core/dtype.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/experts/dispatch.hpp"

namespace tpx::inline v0::layer::detail {

template <backend_with_ops Backend, class T>
class row_exchange {
 public:
  using comm_type = typename Backend::communicator;
  using ops_type = typename Backend::ops;
  using buffer = typename Backend::template buffer<T>;

  /// Sorts n tokens' choices `ids` [n × k] by global expert (E in all, `per` on each rank) and
  /// exchanges the counts: afterwards `rows` says where every row this rank receives goes.
  void plan(comm_type& comm, ops_type& ops, matrix_view<const std::int64_t> ids, index_t n_experts,
            index_t per, expert_rows& rows) {
    const index_t n = ids.rows(), k = ids.cols(), n_counts = n_experts + comm.size() * per;
    const int ep = comm.size();
    rows.sort(n, k, n_experts, [&](index_t t, index_t j) { return ids(t, j); });
    counts_host_.resize(static_cast<std::size_t>(n_counts));
    for (index_t e = 0; e < n_experts; ++e)
      counts_host_[static_cast<std::size_t>(e)] = static_cast<T>(rows.sorted(e));
    per_rank_.assign(static_cast<std::size_t>(ep), per);
    const std::span<T> counts = scratch(counts_, n_counts);
    ops.copy_from_host(make_matrix<const T>(counts_host_.data(), 1, n_experts),
                       make_matrix(counts.data(), 1, n_experts));
    comm.all_to_all_v(std::span<const T>(counts.first(static_cast<std::size_t>(n_experts))),
                      per_rank_, counts.subspan(static_cast<std::size_t>(n_experts)), per_rank_);
    ops.copy_to_host(make_matrix<const T>(counts.data() + n_experts, 1, ep * per),
                     make_matrix(counts_host_.data() + n_experts, 1, ep * per));
    // Rows this rank sends to rank q's expert e (from the sort), and receives from rank q for
    // its own expert e (exchanged).
    const auto got = [&](int q, index_t e) {
      return static_cast<index_t>(
          as_double(counts_host_[static_cast<std::size_t>(n_experts + q * per + e)]));
    };
    sent_rows_.assign(static_cast<std::size_t>(ep), 0);
    got_rows_.assign(static_cast<std::size_t>(ep), 0);
    for (int q = 0; q < ep; ++q)
      for (index_t e = 0; e < per; ++e) {
        sent_rows_[static_cast<std::size_t>(q)] += rows.sorted(q * per + e);
        got_rows_[static_cast<std::size_t>(q)] += got(q, e);
      }
    rows.arrive(ep, per, got);
  }

  /// The rows `w[t, j] · src[t]` (w empty: src[t]) of every choice of src's n tokens go to their
  /// experts' ranks and land expert-major in `out` [rows.rows() × H].
  matrix_view<T> to_experts(comm_type& comm, ops_type& ops, matrix_view<const T> src, index_t k,
                            matrix_view<const T> w, const expert_rows& rows, buffer& out) {
    const index_t h = src.cols();
    const matrix_view<T> send = sized(send_, src.rows() * k, h);
    ops.spread_rows(src, rows.slots(), k, w, send);
    const matrix_view<T> recv = sized(recv_, rows.rows(), h);
    comm.all_to_all_v(std::span<const T>(send.span()), elements(sent_rows_, h, send_elements_),
                      recv.span(), elements(got_rows_, h, recv_elements_));
    const matrix_view<T> dst = sized(out, rows.rows(), h);
    ops.spread_rows(read_only(recv), rows.arrivals(), 1, {}, dst);
    return dst;
  }

  /// Expert-major rows go back to the ranks that sent them, into `out` in choice order
  /// [n·k × H] (the choices of the last `plan`).
  matrix_view<const T> from_experts(comm_type& comm, ops_type& ops, matrix_view<const T> in,
                                    const expert_rows& rows, buffer& out) {
    const index_t h = in.cols();
    const matrix_view<T> recv = sized(recv_, rows.rows(), h);
    ops.gather_rows(in, rows.arrivals(), recv);
    const matrix_view<T> back = sized(out, static_cast<index_t>(rows.slots().size()), h);
    comm.all_to_all_v(std::span<const T>(recv.span()), elements(got_rows_, h, recv_elements_),
                      back.span(), elements(sent_rows_, h, send_elements_));
    return back;
  }

 private:
  /// Rows per rank as elements of rows of width h.
  static std::span<const index_t> elements(const std::vector<index_t>& rows, index_t h,
                                           std::vector<index_t>& out) {
    out.resize(rows.size());
    for (std::size_t q = 0; q < rows.size(); ++q) out[q] = rows[q] * h;
    return out;
  }

  std::vector<index_t> per_rank_, sent_rows_, got_rows_, send_elements_, recv_elements_;
  std::vector<T> counts_host_;
  buffer counts_, send_, recv_;
};

}  // namespace tpx::inline v0::layer::detail
