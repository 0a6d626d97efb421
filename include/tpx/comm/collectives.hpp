#pragma once
/// \file
/// Collectives on row-major matrices, written once over any communicator.
///
///   all_reduce         [rows, cols] in place
///   all_gather_rows    [rows_r, cols] on rank r  → [Σ rows, cols]   (dim 0, e.g. SP tokens)
///   reduce_scatter_rows[Σ rows, cols]            → [rows_r, cols]
///   all_gather_cols    [rows, cols_r] on rank r  → [rows, Σ cols]   (dim 1, e.g. TP features)
///   reduce_scatter_cols[rows, Σ cols]            → [rows, cols_r]
///   take_cols / put_cols   a rank's column pieces of a full matrix ↔ its local block (no comm)
///   all_gather_rows / all_gather_cols by a shard::partition: rank blocks placed at their pieces
///                      (packed, heads; replicated pieces: the lowest rank's copy)
///
/// Dim-1 collectives are dim-0 collectives on a packed buffer: rank r's [rows, cols_r] block is
/// contiguous in the flat buffer, then unpacked column block by column block. They need a scratch
/// span of `rows · Σ cols` elements; padded (ld > cols) views need scratch too. Element copies go
/// through `Comm::copy(src, dst)` when the communicator has one (device memory), else through host
/// loops; `Comm::zero(span)` likewise sets elements to zero.

#include <algorithm>
#include <span>
#include <string_view>
#include <vector>

#include "tpx/comm/communicator.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/shard/partition.hpp"

namespace tpx::inline v0::comm {

namespace detail {

template <class Comm, class T>
void copy(Comm& c, matrix_view<const T> from, matrix_view<T> to) {
  if constexpr (requires { c.copy(from, to); }) {
    c.copy(from, to);
  } else {
    copy_view(from, to);
  }
}

template <class Comm, class T>
void zero(Comm& c, std::span<T> s) {
  if constexpr (requires { c.zero(s); })
    c.zero(s);
  else
    std::fill(s.begin(), s.end(), T(0));
}

template <class T>
void expect_scratch(std::span<T> scratch, index_t needed, std::string_view who) {
  expect(static_cast<index_t>(scratch.size()) >= needed,
         "{}: the scratch buffer holds {} elements but {} are needed", who, scratch.size(), needed);
}

template <class T>
matrix_view<T> in_scratch(std::span<T> scratch, index_t rows, index_t cols) {
  return make_matrix(scratch.data(), rows, cols);
}

inline void expect_counts(std::span<const index_t> counts, int size, std::string_view who) {
  expect(static_cast<int>(counts.size()) == size,
         "{}: {} per-rank counts were passed for a group of {} ranks", who, counts.size(), size);
}

}  // namespace detail

/// Elements of scratch the dim-1 collectives need for a [rows, Σ counts] matrix.
inline index_t cols_scratch(index_t rows, std::span<const index_t> counts) {
  return rows * detail::total(counts);
}

/// Sums (or maxes) a matrix over all ranks, in place. A padded view needs `rows · cols` scratch.
template <class Comm, class T>
void all_reduce(Comm& c, matrix_view<T> m, std::span<T> scratch = {},
                reduce_op op = reduce_op::sum) {
  if (m.is_contiguous()) {
    c.all_reduce(std::span<T>(m.data(), static_cast<std::size_t>(m.size())), op);
    return;
  }
  detail::expect_scratch(scratch, m.size(), "all_reduce of a padded matrix");
  const matrix_view<T> packed = detail::in_scratch(scratch, m.rows(), m.cols());
  detail::copy<Comm, T>(c, m, packed);
  c.all_reduce(scratch.first(static_cast<std::size_t>(m.size())), op);
  detail::copy<Comm, T>(c, packed, m);
}

/// [rows_r, cols] on every rank → [Σ rows, cols]; `rows` holds every rank's row count.
template <class Comm, class T>
void all_gather_rows(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                     std::span<const index_t> rows) {
  detail::expect_counts(rows, c.size(), "all_gather_rows");
  const index_t mine = rows[static_cast<std::size_t>(c.rank())];
  expect(
      local.rows() == mine && local.cols() == full.cols() && full.rows() == detail::total(rows),
      "all_gather_rows: rank {} gathers a [{} × {}] block into [{} × {}], but its row count is {} "
      "and the row counts add up to {}",
      c.rank(), local.rows(), local.cols(), full.rows(), full.cols(), mine, detail::total(rows));
  expect(local.is_contiguous() && full.is_contiguous(),
         "all_gather_rows: the local block and the gathered matrix must be contiguous");
  std::vector<index_t> counts(rows.begin(), rows.end());
  for (index_t& n : counts) n *= full.cols();
  c.all_gather(std::span<const T>(local.data(), static_cast<std::size_t>(local.size())),
               std::span<T>(full.data(), static_cast<std::size_t>(full.size())),
               std::span<const index_t>(counts));
}

/// [Σ rows, cols] on every rank → the sum over ranks of rows block r, [rows_r, cols], on rank r.
template <class Comm, class T>
void reduce_scatter_rows(Comm& c, matrix_view<const T> full, matrix_view<T> local,
                         std::span<const index_t> rows, reduce_op op = reduce_op::sum) {
  detail::expect_counts(rows, c.size(), "reduce_scatter_rows");
  const index_t mine = rows[static_cast<std::size_t>(c.rank())];
  expect(
      local.rows() == mine && local.cols() == full.cols() && full.rows() == detail::total(rows),
      "reduce_scatter_rows: rank {} scatters [{} × {}] into a [{} × {}] block, but its row count "
      "is {} and the row counts add up to {}",
      c.rank(), full.rows(), full.cols(), local.rows(), local.cols(), mine, detail::total(rows));
  expect(local.is_contiguous() && full.is_contiguous(),
         "reduce_scatter_rows: the local block and the full matrix must be contiguous");
  std::vector<index_t> counts(rows.begin(), rows.end());
  for (index_t& n : counts) n *= full.cols();
  c.reduce_scatter(std::span<const T>(full.data(), static_cast<std::size_t>(full.size())),
                   std::span<T>(local.data(), static_cast<std::size_t>(local.size())),
                   std::span<const index_t>(counts), op);
}

namespace detail {

/// All-gathers every rank's [rows, cols_r] block into `scratch` as consecutive contiguous blocks
/// in rank order; returns the rows · Σ cols elements written. A padded local block is packed
/// behind them first.
template <class Comm, class T>
std::span<T> gather_blocks(Comm& c, matrix_view<const T> local, std::span<const index_t> cols,
                           std::span<T> scratch, std::string_view who) {
  const index_t rows = local.rows(), all = total(cols);
  expect_scratch(scratch, rows * all + (local.is_contiguous() ? 0 : local.size()), who);
  std::span<const T> send(local.data(), static_cast<std::size_t>(local.size()));
  if (!local.is_contiguous()) {
    const std::span<T> tail = scratch.subspan(static_cast<std::size_t>(rows * all));
    copy<Comm, T>(c, local, in_scratch(tail, rows, local.cols()));
    send = tail.first(static_cast<std::size_t>(local.size()));
  }
  std::vector<index_t> counts(cols.begin(), cols.end());
  for (index_t& n : counts) n *= rows;
  const std::span<T> blocks = scratch.first(static_cast<std::size_t>(rows * all));
  c.all_gather(send, blocks, std::span<const index_t>(counts));
  return blocks;
}

}  // namespace detail

/// [rows, cols_r] on every rank → [rows, Σ cols] with rank r's block at columns Σ_{q<r} cols_q.
template <class Comm, class T>
void all_gather_cols(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                     std::span<const index_t> cols, std::span<T> scratch) {
  detail::expect_counts(cols, c.size(), "all_gather_cols");
  const index_t mine = cols[static_cast<std::size_t>(c.rank())];
  expect(local.cols() == mine && local.rows() == full.rows() && full.cols() == detail::total(cols),
         "all_gather_cols: rank {} gathers a [{} × {}] block into [{} × {}], but its column count "
         "is {} and the column counts add up to {}",
         c.rank(), local.rows(), local.cols(), full.rows(), full.cols(), mine, detail::total(cols));
  const index_t rows = full.rows();
  const std::span<T> blocks = detail::gather_blocks(c, local, cols, scratch, "all_gather_cols");
  index_t offset = 0;
  for (const index_t n : cols) {
    const matrix_view<const T> block = make_matrix<const T>(blocks.data() + offset * rows, rows, n);
    detail::copy<Comm, T>(c, block, full.col_range(offset, offset + n));
    offset += n;
  }
}

/// [rows, Σ cols] on every rank → the sum over ranks of column block r, [rows, cols_r], on rank r.
template <class Comm, class T>
void reduce_scatter_cols(Comm& c, matrix_view<const T> full, matrix_view<T> local,
                         std::span<const index_t> cols, std::span<T> scratch,
                         reduce_op op = reduce_op::sum) {
  detail::expect_counts(cols, c.size(), "reduce_scatter_cols");
  const index_t mine = cols[static_cast<std::size_t>(c.rank())];
  expect(local.cols() == mine && local.rows() == full.rows() && full.cols() == detail::total(cols),
         "reduce_scatter_cols: rank {} scatters [{} × {}] into a [{} × {}] block, but its column "
         "count is {} and the column counts add up to {}",
         c.rank(), full.rows(), full.cols(), local.rows(), local.cols(), mine, detail::total(cols));
  const index_t rows = full.rows();
  detail::expect_scratch(scratch, cols_scratch(rows, cols) + local.size(), "reduce_scatter_cols");
  index_t offset = 0;
  for (std::size_t q = 0; q < cols.size(); ++q) {
    detail::copy<Comm, T>(
        c, full.col_range(offset, offset + cols[q]),
        detail::in_scratch(scratch.subspan(static_cast<std::size_t>(offset * rows)), rows,
                           cols[q]));
    offset += cols[q];
  }
  const std::span<T> result = scratch.subspan(static_cast<std::size_t>(full.size()),
                                              static_cast<std::size_t>(local.size()));
  std::vector<index_t> counts(cols.begin(), cols.end());
  for (index_t& n : counts) n *= rows;
  c.reduce_scatter(std::span<const T>(scratch.data(), static_cast<std::size_t>(full.size())),
                   result, std::span<const index_t>(counts), op);
  detail::copy<Comm, T>(c, detail::in_scratch(result, rows, mine), local);
}

/// Copies the columns `own` of `full` into `local` ([rows, own.size()]), piece after piece.
template <class Comm, class T>
void take_cols(Comm& c, matrix_view<const T> full, const shard::pieces& own, matrix_view<T> local) {
  expect(local.rows() == full.rows() && local.cols() == own.size(),
         "take_cols: the local block is [{} × {}] but the pieces hold [{} × {}]", local.rows(),
         local.cols(), full.rows(), own.size());
  index_t at = 0;
  for (const shard::interval& p : own.parts) {
    detail::copy<Comm, T>(c, full.col_range(p.begin, p.end), local.col_range(at, at + p.size()));
    at += p.size();
  }
}

/// Writes the columns of `local` at the pieces `own` of `full`.
template <class Comm, class T>
void put_cols(Comm& c, matrix_view<const T> local, const shard::pieces& own, matrix_view<T> full) {
  expect(local.rows() == full.rows() && local.cols() == own.size(),
         "put_cols: the local block is [{} × {}] but the pieces hold [{} × {}]", local.rows(),
         local.cols(), full.rows(), own.size());
  index_t at = 0;
  for (const shard::interval& p : own.parts) {
    detail::copy<Comm, T>(c, local.col_range(at, at + p.size()), full.col_range(p.begin, p.end));
    at += p.size();
  }
}

/// Scratch elements `all_gather_cols` by a partition needs for `rows` rows.
inline index_t cols_scratch(index_t rows, const shard::partition& p) {
  const std::vector<index_t> sizes = p.sizes();
  return cols_scratch(rows, sizes);
}

/// [rows, |pieces_r|] on every rank → [rows, extent]: every rank's block written at its pieces.
/// Where ranks share pieces (replication), the lowest rank's copy is kept. Needs
/// `cols_scratch(rows, p)` scratch (plus the local block's size if it is padded).
template <class Comm, class T>
void all_gather_cols(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                     const shard::partition& p, std::span<T> scratch) {
  expect(p.ranks() == c.size() && full.cols() == p.extent() && local.rows() == full.rows() &&
             local.cols() == p.of(c.rank()).size(),
         "all_gather_cols: rank {} gathers a [{} × {}] block into [{} × {}] by a partition of {} "
         "columns over {} ranks that gives it {} columns",
         c.rank(), local.rows(), local.cols(), full.rows(), full.cols(), p.extent(), p.ranks(),
         p.of(c.rank()).size());
  const std::vector<index_t> sizes = p.sizes();
  const index_t rows = full.rows();
  const std::span<T> blocks =
      detail::gather_blocks(c, local, std::span<const index_t>(sizes), scratch, "all_gather_cols");
  index_t at = detail::total(sizes);
  for (int r = p.ranks() - 1; r >= 0; --r) {  // lowest rank last, so its copy wins
    const index_t n = sizes[static_cast<std::size_t>(r)];
    at -= n;
    put_cols<Comm, T>(c, make_matrix<const T>(blocks.data() + at * rows, rows, n), p.of(r), full);
  }
}

/// Scratch elements `all_gather_rows` by a partition needs for `cols` columns.
inline index_t rows_scratch(index_t cols, const shard::partition& p) {
  const std::vector<index_t> sizes = p.sizes();
  return detail::total(sizes) * cols;
}

/// [|pieces_r|, cols] on every rank → [extent, cols]: every rank's rows written at its pieces.
/// Where ranks share pieces (replication), the lowest rank's copy is kept. Needs
/// `rows_scratch(cols, p)` scratch.
template <class Comm, class T>
void all_gather_rows(Comm& c, matrix_view<const T> local, matrix_view<T> full,
                     const shard::partition& p, std::span<T> scratch) {
  expect(p.ranks() == c.size() && full.rows() == p.extent() && local.cols() == full.cols() &&
             local.rows() == p.of(c.rank()).size(),
         "all_gather_rows: rank {} gathers a [{} × {}] block into [{} × {}] by a partition of {} "
         "rows over {} ranks that gives it {} rows",
         c.rank(), local.rows(), local.cols(), full.rows(), full.cols(), p.extent(), p.ranks(),
         p.of(c.rank()).size());
  const std::vector<index_t> sizes = p.sizes();
  const index_t cols = full.cols(), total = detail::total(sizes);
  detail::expect_scratch(scratch, total * cols, "all_gather_rows");
  const matrix_view<T> ranked = detail::in_scratch(scratch, total, cols);
  all_gather_rows<Comm, T>(c, local, ranked, std::span<const index_t>(sizes));
  index_t at = total;
  for (int r = p.ranks() - 1; r >= 0; --r) {  // lowest rank last, so its copy wins
    at -= sizes[static_cast<std::size_t>(r)];
    index_t row = at;
    for (const shard::interval& piece : p.of(r).parts) {
      detail::copy<Comm, T>(c, ranked.row_range(row, row + piece.size()),
                            full.row_range(piece.begin, piece.end));
      row += piece.size();
    }
  }
}

}  // namespace tpx::inline v0::comm
