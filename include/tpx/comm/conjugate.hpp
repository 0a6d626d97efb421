#pragma once
/// \file
/// The conjugate pairs: each struct is one collective and the collective its backward needs,
/// written once over any communicator. Styles name them; layers call them.
///
///   pair                 forward                      backward
///   copy_to_parallel     identity                     all-reduce          (colwise input)
///   reduce_from_parallel all-reduce                   identity            (rowwise output)
///   gather_from_parallel all-gather dim 1             keep own columns    (colwise, gathered)
///   split_to_parallel    keep own columns             all-gather dim 1    (rowwise, split input)
///   gather_from_sequence all-gather dim 0             reduce-scatter dim 0 (SP input)
///   scatter_to_sequence  reduce-scatter dim 0         all-gather dim 0     (SP output)

#include <span>

#include "tpx/comm/collectives.hpp"
#include "tpx/shard/split.hpp"

namespace tpx::inline v0::comm {

/// No collective in either direction.
struct no_collective {};

/// Forward: the replicated input is used as it is. Backward: every rank's partial dX is summed.
struct copy_to_parallel {
  template <class Comm, class T>
  static void forward(Comm&, matrix_view<const T>) {}
  template <class Comm, class T>
  static void backward(Comm& c, matrix_view<T> grad, std::span<T> scratch = {}) {
    all_reduce(c, grad, scratch);
  }
};

/// Forward: partial outputs are summed. Backward: the replicated gradient is used as it is.
struct reduce_from_parallel {
  template <class Comm, class T>
  static void forward(Comm& c, matrix_view<T> out, std::span<T> scratch = {}) {
    all_reduce(c, out, scratch);
  }
  template <class Comm, class T>
  static void backward(Comm&, matrix_view<const T>) {}
};

/// Forward: column blocks are gathered. Backward: each rank keeps its own columns of dY.
struct gather_from_parallel {
  template <class Comm, class T>
  static void forward(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                      std::span<const index_t> cols, std::span<T> scratch) {
    all_gather_cols(c, local, full, cols, scratch);
  }
  template <class T>
  static matrix_view<T> backward(matrix_view<T> full_grad, shard::interval own) {
    return full_grad.col_range(own.begin, own.end);
  }
};

/// Forward: each rank keeps its own columns of X. Backward: column blocks of dX are gathered.
struct split_to_parallel {
  template <class T>
  static matrix_view<T> forward(matrix_view<T> full, shard::interval own) {
    return full.col_range(own.begin, own.end);
  }
  template <class Comm, class T>
  static void backward(Comm& c, matrix_view<const T> local_grad, matrix_view<T> full_grad,
                       std::span<const index_t> cols, std::span<T> scratch) {
    all_gather_cols(c, local_grad, full_grad, cols, scratch);
  }
};

/// Forward: token shards are gathered. Backward: token blocks of dX are summed and scattered.
struct gather_from_sequence {
  template <class Comm, class T>
  static void forward(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                      std::span<const index_t> rows) {
    all_gather_rows(c, local, full, rows);
  }
  template <class Comm, class T>
  static void backward(Comm& c, matrix_view<const T> full_grad, matrix_view<T> local_grad,
                       std::span<const index_t> rows) {
    reduce_scatter_rows(c, full_grad, local_grad, rows);
  }
};

/// Forward: partial outputs are summed and scattered by tokens. Backward: dY shards are gathered.
struct scatter_to_sequence {
  template <class Comm, class T>
  static void forward(Comm& c, matrix_view<const T> full, matrix_view<T> local,
                      std::span<const index_t> rows) {
    reduce_scatter_rows(c, full, local, rows);
  }
  template <class Comm, class T>
  static void backward(Comm& c, matrix_view<const T> local_grad, matrix_view<T> full_grad,
                       std::span<const index_t> rows) {
    all_gather_rows(c, local_grad, full_grad, rows);
  }
};

}  // namespace tpx::inline v0::comm
