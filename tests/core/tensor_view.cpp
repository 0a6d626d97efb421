#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"
#include "tpx/core/format.hpp"
#include "tpx/core/tensor_view.hpp"

using namespace tpx;

TEST_CASE("a padded matrix view addresses rows ld elements apart") {
  std::vector<int> data(3 * 5);
  for (int i = 0; i < 15; ++i) data[static_cast<std::size_t>(i)] = i;
  const matrix_view<int> m(data.data(), extents<2>{{3, 4}}, 5);
  CHECK(m(2, 3) == 13);
  CHECK_FALSE(m.is_contiguous());
  const auto cols = m.col_range(1, 3);
  CHECK(cols.rows() == 3);
  CHECK(cols.cols() == 2);
  CHECK(cols(1, 0) == 6);
  const auto rows = m.row_range(1, 2);
  CHECK(rows(0, 0) == 5);
  CHECK(rows.rows() == 1);
  const matrix_view<const int> c = m;  // const conversion
  CHECK(c(0, 1) == 1);
}

TEST_CASE("a rank-3 view indexes experts by their stride") {
  std::vector<float> data(2 * 3 * 4);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i);
  const tensor_view<float, 3> t(data.data(), extents<3>{{2, 3, 4}});
  CHECK(t.is_contiguous());
  CHECK(t(1, 2, 3) == 23.0f);
  CHECK(t[1](0, 0) == 12.0f);
  CHECK(t.size() == 24);
  CHECK(fmt::format("{}", t.extents()) == "[2 × 3 × 4]");
}

TEST_CASE("views refuse ranges and strides that do not fit") {
  std::vector<int> data(12);
  const matrix_view<int> m = make_matrix(data.data(), 3, 4);
  CHECK_THROWS_AS(m.row_range(2, 4), tpx::error);
  CHECK_THROWS_AS(m.col_range(3, 2), tpx::error);
  CHECK_THROWS_WITH_AS(matrix_view<int>(data.data(), extents<2>{{3, 4}}, 3),
                       "tensor_view: the leading dimension 3 is smaller than the row length 4",
                       tpx::error);
  CHECK_THROWS_AS(matrix_view<int>(nullptr, extents<2>{{1, 1}}), tpx::error);
  CHECK_THROWS_AS(matrix_view<int>(data.data(), extents<2>{{3, 4}}, 5).span(), tpx::error);
  CHECK(make_matrix<int>(nullptr, 0, 7).empty());
}

TEST_CASE("errors are sentences formatted with fmt") {
  try {
    fail("tensor '{}' dim {} has size {}", "w", 1, 7);
    FAIL("fail() returned");
  } catch (const tpx::error& e) {
    CHECK(std::string(e.what()) == "tensor 'w' dim 1 has size 7");
  }
  CHECK_THROWS_WITH_AS(expect_group_size(0, "host::run"),
                       "host::run: tp must be at least 1, got tp = 0", tpx::error);
  CHECK_NOTHROW(expect_rank(3, 4, "x"));
  CHECK_THROWS_AS(expect_rank(4, 4, "x"), tpx::error);
}
