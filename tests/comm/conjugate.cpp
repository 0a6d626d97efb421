// Matrix collectives along dim 0 and dim 1 and the conjugate pairs built on them, for tp up to 8,
// uneven and empty blocks, padded views.

#include <doctest/doctest.h>

#include <vector>

#include "../harness.hpp"
#include "tpx/backend/host/communicator.hpp"
#include "tpx/comm/conjugate.hpp"

using namespace tpx;
using shard::split_kind;

namespace {
double at(index_t i, index_t j) {
  return 100.0 * static_cast<double>(i) + static_cast<double>(j);
}
}  // namespace

TEST_CASE("all_gather_cols rebuilds the matrix from uneven column blocks, and split keeps them") {
  const index_t rows = 3, cols = 11;
  for (int tp = 1; tp <= 8; ++tp)
    for (const split_kind kind : {split_kind::balanced, split_kind::chunk})
      host::run(tp, [&](host::communicator& c) {
        const std::vector<index_t> counts = shard::split_sizes(cols, tp, kind);
        const shard::interval own = shard::split(cols, tp, c.rank(), kind);
        std::vector<double> full(static_cast<std::size_t>(rows * cols));
        for (index_t i = 0; i < rows; ++i)
          for (index_t j = 0; j < cols; ++j)
            full[static_cast<std::size_t>(i * cols + j)] = at(i, j);
        // forward of split_to_parallel: own columns, a view into the full matrix
        const auto mine = comm::split_to_parallel::forward(
            make_matrix<const double>(full.data(), rows, cols), own);
        std::vector<double> out(full.size(), -1.0);
        std::vector<double> scratch(
            static_cast<std::size_t>(comm::cols_scratch(rows, counts) + mine.size()));
        // backward of split_to_parallel = forward of gather_from_parallel = all-gather dim 1
        comm::split_to_parallel::backward<host::communicator, double>(
            c, mine, make_matrix(out.data(), rows, cols), counts, scratch);
        expect(out == full, "tp {} rank {}: all_gather_cols differs", tp, c.rank());
        expect(c.statistics()[comm::kind::all_gather].bytes == rows * cols * 8,
               "all_gather_cols bytes");
      });
}

TEST_CASE("reduce_scatter_cols leaves each rank the sum of its column block") {
  const index_t rows = 2, cols = 7;
  for (int tp = 1; tp <= 8; ++tp)
    host::run(tp, [&](host::communicator& c) {
      const std::vector<index_t> counts = shard::split_sizes(cols, tp, split_kind::balanced);
      const shard::interval own = shard::split(cols, tp, c.rank(), split_kind::balanced);
      std::vector<double> full(static_cast<std::size_t>(rows * cols));
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < cols; ++j)
          full[static_cast<std::size_t>(i * cols + j)] = at(i, j) * (c.rank() + 1);
      std::vector<double> local(static_cast<std::size_t>(rows * own.size()));
      std::vector<double> scratch(
          static_cast<std::size_t>(comm::cols_scratch(rows, counts) + rows * own.size()));
      comm::reduce_scatter_cols<host::communicator, double>(
          c, make_matrix<const double>(full.data(), rows, cols),
          make_matrix(local.data(), rows, own.size()), counts, scratch);
      const double factor = tp * (tp + 1) / 2.0;
      for (index_t i = 0; i < rows; ++i)
        for (index_t j = 0; j < own.size(); ++j)
          expect(
              local[static_cast<std::size_t>(i * own.size() + j)] == at(i, own.begin + j) * factor,
              "reduce_scatter_cols ({}, {}) on rank {}", i, j, c.rank());
    });
}

TEST_CASE("the sequence pairs gather tokens forward and reduce-scatter them backward") {
  const index_t tokens = 10, width = 3;
  for (int tp = 1; tp <= 8; ++tp)
    host::run(tp, [&](host::communicator& c) {
      const std::vector<index_t> counts = shard::split_sizes(tokens, tp, split_kind::balanced);
      const shard::interval own = shard::split(tokens, tp, c.rank(), split_kind::balanced);
      std::vector<double> local;
      for (index_t i = own.begin; i < own.end; ++i)
        for (index_t j = 0; j < width; ++j) local.push_back(at(i, j));
      std::vector<double> full(static_cast<std::size_t>(tokens * width));
      comm::gather_from_sequence::forward<host::communicator, double>(
          c, make_matrix<const double>(local.data(), own.size(), width),
          make_matrix(full.data(), tokens, width), counts);
      for (index_t i = 0; i < tokens; ++i)
        for (index_t j = 0; j < width; ++j)
          expect(full[static_cast<std::size_t>(i * width + j)] == at(i, j), "gathered token {}", i);
      std::vector<double> back(local.size());
      comm::gather_from_sequence::backward<host::communicator, double>(
          c, make_matrix<const double>(full.data(), tokens, width),
          make_matrix(back.data(), own.size(), width), counts);
      for (std::size_t k = 0; k < back.size(); ++k)
        expect(back[k] == local[k] * tp, "reduce-scattered element {}", k);
      // The SP pair moves the same total as one all-reduce of [tokens, width] would.
      const auto& s = c.statistics();
      expect(s[comm::kind::all_gather].bytes == tokens * width * 8 &&
                 s[comm::kind::reduce_scatter].bytes == tokens * width * 8,
             "sequence pair bytes");
    });
}

TEST_CASE("all_reduce of a padded matrix view leaves the padding alone") {
  for (int tp = 1; tp <= 4; ++tp)
    host::run(tp, [&](host::communicator& c) {
      std::vector<double> data(3 * 5, 7.0);  // [3 × 4] inside ld 5
      const matrix_view<double> m(data.data(), extents<2>{{3, 4}}, 5);
      for (index_t i = 0; i < 3; ++i)
        for (index_t j = 0; j < 4; ++j) m(i, j) = at(i, j);
      std::vector<double> scratch(12);
      comm::reduce_from_parallel::forward<host::communicator, double>(c, m, scratch);
      for (index_t i = 0; i < 3; ++i) {
        for (index_t j = 0; j < 4; ++j) expect(m(i, j) == at(i, j) * tp, "element ({}, {})", i, j);
        expect(data[static_cast<std::size_t>(i * 5 + 4)] == 7.0, "padding of row {}", i);
      }
      CHECK_THROWS_AS((comm::all_reduce<host::communicator, double>(c, m, {})), tpx::error);
    });
}

TEST_CASE("matrix collectives refuse blocks that disagree with the counts") {
  CHECK_THROWS_WITH_AS(
      host::run(2,
                [](host::communicator& c) {
                  const std::vector<index_t> counts{2, 2};
                  const index_t width = c.rank() == 0 ? 3 : 2;  // rank 0 is wrong
                  std::vector<double> local(static_cast<std::size_t>(3 * width)), full(3 * 4),
                      scratch(12);
                  comm::all_gather_cols<host::communicator, double>(
                      c, make_matrix<const double>(local.data(), 3, width),
                      make_matrix(full.data(), 3, 4), counts, scratch);
                }),
      "all_gather_cols: rank 0 gathers a [3 × 3] block into [3 × 4], but its column count is 2 "
      "and the column counts add up to 4",
      tpx::error);
}
