#pragma once
/// \file
/// Element types. Compute happens in f32 or f64; bf16 and f16 are storage types whose conversion
/// to float or double is exact and whose conversion from float or double rounds to nearest, ties
/// to even (the IEEE default), with infinities and NaN preserved.

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "tpx/version.hpp"

namespace tpx::inline v0 {

/// The element types tpx knows by name.
enum class dtype { f64, f32, bf16, f16 };

namespace detail {

/// Rounds a double to float with round-to-odd: exact values stay; inexact ones are truncated
/// toward zero and get their last mantissa bit set. Rounding that float again to a format with at
/// least two fewer mantissa bits gives the correctly rounded result (no double-rounding error).
constexpr std::uint32_t round_to_odd_float_bits(double d) noexcept {
  const float f = static_cast<float>(d);
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if (d != d || static_cast<double>(f) == d) return u;  // NaN or exact
  const double af = f < 0 ? -static_cast<double>(f) : static_cast<double>(f);
  const double ad = d < 0 ? -d : d;
  if (af > ad) u -= 1;  // step toward zero: sign-magnitude, so this shrinks |f|
  return u | 1u;
}

constexpr std::uint16_t float_bits_to_bf16_bits(std::uint32_t u) noexcept {
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

constexpr std::uint16_t float_bits_to_f16_bits(std::uint32_t x) noexcept {
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // ≥ 65520 → inf
  if (ax >= 0x38800000u) {                                                   // normal in f16
    std::uint32_t r = ax - (112u << 23);                                     // rebias 127 → 15
    r = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
    return static_cast<std::uint16_t>(sign | r);
  }
  if (ax <= 0x33000000u) return static_cast<std::uint16_t>(sign);  // ≤ 2^-25 → ±0 (tie to even)
  // Subnormal in f16: value = m · 2^(e−150); in units of 2^−24 that is m >> (126 − e).
  const std::uint32_t e = ax >> 23;
  const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - e;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  std::uint32_t r = m >> shift;
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}

constexpr float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return std::bit_cast<float>(sign | 0x7F800000u | (man << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return std::bit_cast<float>(sign);
  // Subnormal: normalise the mantissa.
  std::uint32_t e = 113;
  while ((man & 0x400u) == 0) {
    man <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((man & 0x3FFu) << 13));
}

}  // namespace detail

/// bfloat16 storage: 1 sign, 8 exponent, 7 mantissa bits.
struct bf16 {
  std::uint16_t bits = 0;

  constexpr bf16() = default;
  constexpr explicit bf16(float f) noexcept
      : bits(detail::float_bits_to_bf16_bits(std::bit_cast<std::uint32_t>(f))) {}
  constexpr explicit bf16(double d) noexcept
      : bits(detail::float_bits_to_bf16_bits(detail::round_to_odd_float_bits(d))) {}
  static constexpr bf16 from_bits(std::uint16_t b) noexcept {
    bf16 v;
    v.bits = b;
    return v;
  }
  constexpr explicit operator float() const noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
  constexpr explicit operator double() const noexcept { return static_cast<float>(*this); }
  friend constexpr bool operator==(bf16 a, bf16 b) noexcept = default;
};
static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);

/// IEEE binary16 storage: 1 sign, 5 exponent, 10 mantissa bits, with subnormals.
struct f16 {
  std::uint16_t bits = 0;

  constexpr f16() = default;
  constexpr explicit f16(float f) noexcept
      : bits(detail::float_bits_to_f16_bits(std::bit_cast<std::uint32_t>(f))) {}
  constexpr explicit f16(double d) noexcept
      : bits(detail::float_bits_to_f16_bits(detail::round_to_odd_float_bits(d))) {}
  static constexpr f16 from_bits(std::uint16_t b) noexcept {
    f16 v;
    v.bits = b;
    return v;
  }
  constexpr explicit operator float() const noexcept { return detail::f16_bits_to_float(bits); }
  constexpr explicit operator double() const noexcept { return static_cast<float>(*this); }
  friend constexpr bool operator==(f16 a, f16 b) noexcept = default;
};

/// The dtype of a C++ element type; only defined for the four types tpx knows.
template <class T>
inline constexpr bool is_dtype = false;
template <class T>
inline constexpr dtype dtype_of = dtype::f32;  // only read where is_dtype<T> holds

// clang-format off
template <> inline constexpr bool is_dtype<double> = true;
template <> inline constexpr bool is_dtype<float> = true;
template <> inline constexpr bool is_dtype<bf16> = true;
template <> inline constexpr bool is_dtype<f16> = true;
template <> inline constexpr dtype dtype_of<double> = dtype::f64;
template <> inline constexpr dtype dtype_of<float> = dtype::f32;
template <> inline constexpr dtype dtype_of<bf16> = dtype::bf16;
template <> inline constexpr dtype dtype_of<f16> = dtype::f16;
// clang-format on

/// Size of one element in bytes.
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
      return 8;
    case dtype::f32:
      return 4;
    case dtype::bf16:
    case dtype::f16:
      return 2;
  }
  return 0;
}

/// Lower-case name of a dtype, as used in messages and benchmark output ("f32", "bf16").
constexpr std::string_view name(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
      return "f64";
    case dtype::f32:
      return "f32";
    case dtype::bf16:
      return "bf16";
    case dtype::f16:
      return "f16";
  }
  return "?";
}

/// Converts between any two of the four element types: widening is exact, narrowing rounds to
/// nearest even.
template <class To, class From>
constexpr To convert(From v) noexcept {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, bf16> || std::is_same_v<From, f16>) {
    return convert<To>(static_cast<float>(v));
  } else {
    return To(v);
  }
}

/// Widens `count` bf16 values at `src` (any alignment: a file's bytes, or a `bf16` array) to
/// float at `dst`, exactly: bf16's bits are float's top half. Eight at a time where SSE2 is.
inline void widen_bf16(const std::byte* src, std::size_t count, float* dst) noexcept {
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (; i + 8 <= count; i += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_unpacklo_epi16(zero, v));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i + 4), _mm_unpackhi_epi16(zero, v));
  }
#endif
  for (const std::byte* p = src + 2 * i; i < count; ++i, p += 2) {
    std::uint16_t b;
    std::memcpy(&b, p, sizeof b);
    dst[i] = static_cast<float>(bf16::from_bits(b));
  }
}
inline void widen_bf16(const bf16* src, std::size_t count, float* dst) noexcept {
  widen_bf16(reinterpret_cast<const std::byte*>(src), count, dst);
}

/// A value as double: arithmetic types directly, storage types (bf16, f16, CUDA's __half and
/// __nv_bfloat16) through their exact conversion to float.
template <class T>
constexpr double as_double(T x) noexcept {
  if constexpr (std::is_arithmetic_v<T>)
    return static_cast<double>(x);
  else
    return static_cast<double>(static_cast<float>(x));
}

}  // namespace tpx::inline v0
