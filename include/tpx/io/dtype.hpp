#pragma once
/// \file
/// The element types a safetensors file may hold, by their names in the file ("BF16", "F32", …),
/// and how they map onto the four types tpx computes and stores in.

#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tpx/core/dtype.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::io {

/// Every safetensors dtype.
enum class file_dtype { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean, f8_e4m3, f8_e5m2 };

namespace detail {
struct file_dtype_row {
  file_dtype type;
  std::string_view name;
  std::size_t size;
  std::optional<dtype> same_as = std::nullopt;  ///< the tpx dtype with the same encoding
};
inline constexpr std::array<file_dtype_row, 12> file_dtypes{{
    {file_dtype::f64, "F64", 8, dtype::f64},
    {file_dtype::f32, "F32", 4, dtype::f32},
    {file_dtype::f16, "F16", 2, dtype::f16},
    {file_dtype::bf16, "BF16", 2, dtype::bf16},
    {file_dtype::i64, "I64", 8},
    {file_dtype::i32, "I32", 4},
    {file_dtype::i16, "I16", 2},
    {file_dtype::i8, "I8", 1},
    {file_dtype::u8, "U8", 1},
    {file_dtype::boolean, "BOOL", 1},
    {file_dtype::f8_e4m3, "F8_E4M3", 1},
    {file_dtype::f8_e5m2, "F8_E5M2", 1},
}};
}  // namespace detail

/// The name a safetensors header uses ("BF16").
constexpr std::string_view name(file_dtype t) noexcept {
  return detail::file_dtypes[static_cast<std::size_t>(t)].name;
}
/// Bytes per element.
constexpr std::size_t size_of(file_dtype t) noexcept {
  return detail::file_dtypes[static_cast<std::size_t>(t)].size;
}
/// The dtype named `s` in a header, if it is one.
constexpr std::optional<file_dtype> parse_file_dtype(std::string_view s) noexcept {
  for (const detail::file_dtype_row& row : detail::file_dtypes)
    if (row.name == s) return row.type;
  return std::nullopt;
}
/// The list of known names, for messages: "F64, F32, …".
inline std::string known_file_dtypes() {
  std::string s;
  for (const detail::file_dtype_row& row : detail::file_dtypes)
    s += (s.empty() ? "" : ", ") + std::string(row.name);
  return s;
}

/// The tpx dtype of a floating-point file dtype (f64, f32, f16, bf16), if it has one.
constexpr std::optional<dtype> as_dtype(file_dtype t) noexcept {
  return detail::file_dtypes[static_cast<std::size_t>(t)].same_as;
}
/// The file dtype that stores a tpx dtype.
constexpr file_dtype to_file_dtype(dtype t) noexcept {
  for (const detail::file_dtype_row& row : detail::file_dtypes)
    if (row.same_as == t) return row.type;
  return file_dtype::u8;  // unreachable: every tpx dtype has a row
}
static_assert(to_file_dtype(dtype::bf16) == file_dtype::bf16 &&
              to_file_dtype(dtype::f64) == file_dtype::f64 && !as_dtype(file_dtype::i8));

/// `values` as the little-endian bytes of the float file dtype `d` (f64, f32, bf16, f16; narrowing
/// rounds to nearest even); `what` names the tensor when `d` is not a float type.
template <class T>
std::vector<std::byte> to_bytes(std::span<const T> values, file_dtype d, std::string_view what) {
  const auto as = [&]<class F>(std::type_identity<F>) {
    std::vector<std::byte> out(values.size() * sizeof(F));
    for (std::size_t i = 0; i < values.size(); ++i) {
      const F x = convert<F>(values[i]);
      std::memcpy(out.data() + i * sizeof(F), &x, sizeof(F));
    }
    return out;
  };
  switch (d) {
    case file_dtype::f64:
      return as(std::type_identity<double>{});
    case file_dtype::f32:
      return as(std::type_identity<float>{});
    case file_dtype::bf16:
      return as(std::type_identity<bf16>{});
    case file_dtype::f16:
      return as(std::type_identity<f16>{});
    default:
      fail("{}: {} is not a float type tpx writes (F64, F32, BF16, F16)", what, name(d));
  }
}

}  // namespace tpx::inline v0::io
