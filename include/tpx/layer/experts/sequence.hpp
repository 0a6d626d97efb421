#pragma once
/// \file
/// `token_gather<Backend, T>`: the tensor_sequence mode's input. Each rank holds its block of the
/// tokens; the experts need every token, its routing ids and weights. One all-gather moves
/// [x | ids | w] of every rank's block at once (ids as T: exact, they are small integers), and the
/// ids are read back on the host for the bookkeeping — one synchronisation per forward.

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "tpx/comm/collectives.hpp"
#include "tpx/comm/conjugate.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"

namespace tpx::inline v0::layer::detail {

template <backend_with_ops Backend, class T>
class token_gather {
 public:
  using comm_type = typename Backend::communicator;

  /// Gathers every rank's x [n_r × H], ids and w [n_r × k] (`counts`: each rank's n_r).
  void gather(comm_type& comm, typename Backend::ops& ops, matrix_view<const T> x,
              matrix_view<const std::int64_t> ids, matrix_view<const T> w,
              std::span<const index_t> counts) {
    const index_t n = x.rows(), k = ids.cols(), h = x.cols(), width = h + 2 * k;
    index_t total = 0;
    for (const index_t c : counts) total += c;
    h_ = h, k_ = k, total_ = total;
    const matrix_view<T> mine = sized(pack_, n, width);
    ids_t_.resize(static_cast<std::size_t>(std::max(n, total) * k));
    for (index_t t = 0; t < n; ++t)
      for (index_t j = 0; j < k; ++j)
        ids_t_[static_cast<std::size_t>(t * k + j)] = static_cast<T>(ids(t, j));
    comm::detail::copy(comm, x, mine.col_range(0, h));
    ops.copy_from_host(make_matrix<const T>(ids_t_.data(), n, k), mine.col_range(h, h + k));
    comm::detail::copy(comm, w, mine.col_range(h + k, width));
    const matrix_view<T> all = sized(gathered_, total, width);
    comm::gather_from_sequence::forward<comm_type, T>(comm, read_only(mine), all, counts);
    ops.copy_to_host(read_only(all.col_range(h, h + k)), make_matrix(ids_t_.data(), total, k));
    ids_.resize(static_cast<std::size_t>(total * k));
    for (std::size_t i = 0; i < ids_.size(); ++i)
      ids_[i] = static_cast<std::int64_t>(as_double(ids_t_[i]));
  }

  /// Every token's x [total × H], ids and w [total × k], of the last gather.
  matrix_view<const T> x() const {
    return tensor_view<const T, 2>(gathered_.data(), {{total_, h_}}, h_ + 2 * k_);
  }
  matrix_view<const std::int64_t> ids() const {
    return make_matrix<const std::int64_t>(ids_.data(), total_, k_);
  }
  matrix_view<const T> w() const {
    return tensor_view<const T, 2>(gathered_.data() + h_ + k_, {{total_, k_}}, h_ + 2 * k_);
  }

 private:
  index_t h_ = 0, k_ = 0, total_ = 0;
  std::vector<T> ids_t_;  // host copies of the ids that travel as T
  std::vector<std::int64_t> ids_;
  typename Backend::template buffer<T> pack_, gathered_;
};

}  // namespace tpx::inline v0::layer::detail
