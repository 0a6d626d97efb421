#pragma once
/// \file
/// A non-owning, row-major view of a 2-D or 3-D tensor whose innermost dim is contiguous and whose
/// other dims may be padded (a leading dimension larger than the row length).
///
///   2-D [rows, cols], ld ≥ cols:           element (i, j) at data[i·ld + j]
///   3-D [d0, d1, d2], ld ≥ d2, s0 ≥ d1·ld:  element (e, i, j) at data[e·s0 + i·ld + j]

#include <algorithm>
#include <cstddef>
#include <span>
#include <type_traits>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"

namespace tpx::inline v0 {

template <class T, std::size_t Rank>
class tensor_view {
  static_assert(Rank == 2 || Rank == 3, "tpx::tensor_view: only rank 2 and rank 3 views exist");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  static constexpr std::size_t rank = Rank;

  constexpr tensor_view() = default;

  /// A contiguous row-major view.
  constexpr tensor_view(T* data, tpx::extents<Rank> e) : tensor_view(data, e, e[Rank - 1]) {}

  /// A view whose rows are `ld` elements apart (and, for rank 3, whose matrices are d1·ld apart).
  constexpr tensor_view(T* data, tpx::extents<Rank> e, index_t ld)
      : tensor_view(data, e, ld, Rank == 3 ? e[1] * ld : 0) {}

  /// A rank-3 view with an explicit stride between the matrices of dim 0.
  constexpr tensor_view(T* data, tpx::extents<Rank> e, index_t ld, index_t stride0)
      : data_(data), ext_(e), ld_(ld), stride0_(stride0) {
    for (std::size_t d = 0; d < Rank; ++d)
      expect(e[d] >= 0, "tensor_view: dim {} has negative size {}", d, e[d]);
    expect(ld >= e[Rank - 1],
           "tensor_view: the leading dimension {} is smaller than the row length {}", ld,
           e[Rank - 1]);
    if constexpr (Rank == 3)
      expect(stride0 >= e[1] * ld,
             "tensor_view: the dim-0 stride {} is smaller than dim 1 × leading dimension = {} × {}",
             stride0, e[1], ld);
    expect(data != nullptr || e.size() == 0,
           "tensor_view: a null pointer can only view 0 elements");
  }

  /// Views of T convert to views of const T.
  template <class U>
  requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>) constexpr tensor_view(
      const tensor_view<U, Rank>& v)  // NOLINT(google-explicit-constructor)
      : data_(v.data()), ext_(v.extents()), ld_(v.ld()), stride0_(v.stride0()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr const tpx::extents<Rank>& extents() const noexcept { return ext_; }
  constexpr index_t extent(std::size_t d) const noexcept { return ext_[d]; }
  constexpr index_t rows() const noexcept { return ext_[Rank - 2]; }
  constexpr index_t cols() const noexcept { return ext_[Rank - 1]; }
  constexpr index_t ld() const noexcept { return ld_; }
  constexpr index_t stride0() const noexcept { return stride0_; }
  constexpr index_t size() const noexcept { return ext_.size(); }
  constexpr bool empty() const noexcept { return size() == 0; }
  /// True when the elements occupy one dense block with no padding.
  constexpr bool is_contiguous() const noexcept {
    if (ld_ != cols() && rows() > 1) return false;
    if constexpr (Rank == 3) return stride0_ == rows() * cols() || ext_[0] <= 1;
    return true;
  }

  constexpr T& operator()(index_t i, index_t j) const noexcept requires(Rank == 2) {
    return data_[i * ld_ + j];
  }
  constexpr T& operator()(index_t e, index_t i, index_t j) const noexcept requires(Rank == 3) {
    return data_[e * stride0_ + i * ld_ + j];
  }

  /// Rows [begin, end) of a matrix: a view of the same leading dimension.
  constexpr tensor_view row_range(index_t begin, index_t end) const requires(Rank == 2) {
    expect_range(begin, end, rows(), "row");
    return {advance(begin * ld_), tpx::extents<2>{{end - begin, cols()}}, ld_};
  }
  /// Columns [begin, end) of a matrix: a view with the same leading dimension.
  constexpr tensor_view col_range(index_t begin, index_t end) const requires(Rank == 2) {
    expect_range(begin, end, cols(), "column");
    return {advance(begin), tpx::extents<2>{{rows(), end - begin}}, ld_};
  }
  /// Matrix `e` of a rank-3 view.
  constexpr tensor_view<T, 2> operator[](index_t e) const requires(Rank == 3) {
    expect_range(e, e + 1, ext_[0], "dim-0");
    return {advance(e * stride0_), tpx::extents<2>{{ext_[1], ext_[2]}}, ld_};
  }

  /// The elements as a span; only for contiguous views.
  constexpr std::span<T> span() const {
    expect(is_contiguous(), "tensor_view: a padded view (ld {} > cols {}) is not one span", ld_,
           cols());
    return {data_, static_cast<std::size_t>(size())};
  }

 private:
  constexpr T* advance(index_t n) const noexcept { return data_ == nullptr ? nullptr : data_ + n; }
  static constexpr void expect_range(index_t begin, index_t end, index_t size, const char* what) {
    expect(0 <= begin && begin <= end && end <= size,
           "tensor_view: the {} range [{}, {}) is outside [0, {})", what, begin, end, size);
  }

  T* data_ = nullptr;
  tpx::extents<Rank> ext_{};
  index_t ld_ = 0;
  index_t stride0_ = 0;
};

/// A 2-D view [rows, cols].
template <class T>
using matrix_view = tensor_view<T, 2>;

/// Makes a contiguous matrix view of `rows × cols` elements starting at `data`.
template <class T>
constexpr matrix_view<T> make_matrix(T* data, index_t rows, index_t cols) {
  return {data, tpx::extents<2>{{rows, cols}}};
}

/// The same view, read-only: for a call whose template deduces T from a `tensor_view<const T, R>`
/// parameter, where a writable view does not convert during deduction.
template <class T, std::size_t Rank>
constexpr tensor_view<const T, Rank> read_only(tensor_view<T, Rank> v) noexcept {
  return v;
}

/// Copies the elements of `from` into `to`, a view of the same shape, row by row; both must be
/// memory the host reads (device views go through a backend's copy).
template <class T>
void copy_view(matrix_view<const T> from, matrix_view<T> to) {
  if (from.cols() == 0) return;
  for (index_t i = 0; i < from.rows(); ++i) std::copy_n(&from(i, 0), from.cols(), &to(i, 0));
}

}  // namespace tpx::inline v0
