#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "tpx/core/dtype.hpp"
#include "tpx/core/format.hpp"

using namespace tpx;

namespace {
bool is_nan_bits_bf16(std::uint16_t b) {
  return (b & 0x7F80u) == 0x7F80u && (b & 0x7Fu) != 0;
}
bool is_nan_bits_f16(std::uint16_t b) {
  return (b & 0x7C00u) == 0x7C00u && (b & 0x3FFu) != 0;
}

/// The correctly rounded (nearest, ties to even) 16-bit pattern for `d`, found by brute force over
/// all 65536 patterns. Infinity stands where the next binade would begin (`overflow`), which is
/// where IEEE rounding sends values past the largest finite one.
template <class H>
std::uint16_t nearest_by_search(double d, bool (*is_nan)(std::uint16_t), double overflow) {
  std::uint16_t best = 0;
  double best_err = INFINITY;
  if (std::abs(d) >= overflow) d = std::copysign(overflow, d);  // beyond the format: infinity
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    if (is_nan(bits)) continue;
    double v = static_cast<double>(H::from_bits(bits));
    if (std::isinf(v)) v = std::copysign(overflow, v);
    const double err = std::abs(v - d);
    const bool better_parity = (bits & 1u) == 0 && (best & 1u) == 1;
    const bool better_sign =
        std::signbit(v) == std::signbit(d) &&
        std::signbit(static_cast<double>(H::from_bits(best))) != std::signbit(d);
    if (err < best_err || (err == best_err && (better_parity || better_sign))) {
      best = bits;
      best_err = err;
    }
  }
  return best;
}
}  // namespace

TEST_CASE("every bf16 and f16 value survives a round trip through float and double") {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const bf16 h = bf16::from_bits(bits);
    const f16 g = f16::from_bits(bits);
    if (!is_nan_bits_bf16(bits)) {
      REQUIRE(bf16(static_cast<float>(h)).bits == bits);
      REQUIRE(bf16(static_cast<double>(h)).bits == bits);
    } else {
      REQUIRE(std::isnan(static_cast<float>(h)));
      REQUIRE(is_nan_bits_bf16(bf16(static_cast<float>(h)).bits));
    }
    if (!is_nan_bits_f16(bits)) {
      REQUIRE(f16(static_cast<float>(g)).bits == bits);
      REQUIRE(f16(static_cast<double>(g)).bits == bits);
    } else {
      REQUIRE(std::isnan(static_cast<float>(g)));
      REQUIRE(is_nan_bits_f16(f16(static_cast<double>(g)).bits));
    }
  }
}

TEST_CASE("known values convert exactly") {
  CHECK(static_cast<float>(f16::from_bits(0x3C00)) == 1.0f);
  CHECK(static_cast<float>(f16::from_bits(0x7BFF)) == 65504.0f);
  CHECK(static_cast<float>(f16::from_bits(0x0001)) == std::ldexp(1.0f, -24));
  CHECK(static_cast<float>(f16::from_bits(0xC000)) == -2.0f);
  CHECK(static_cast<float>(bf16::from_bits(0x3F80)) == 1.0f);
  CHECK(static_cast<float>(bf16::from_bits(0x7F7F)) == 0x1.FEp127f);
  CHECK(f16(65520.0f).bits == 0x7C00);  // halfway to 2^16 rounds to infinity
  CHECK(f16(65519.0f).bits == 0x7BFF);
  CHECK(f16(std::ldexp(1.0, -25)).bits == 0x0000);  // tie between 0 and 2^-24: even
  CHECK(f16(std::ldexp(1.5, -25)).bits == 0x0001);
  CHECK(bf16(1.0f + std::ldexp(1.0f, -8)).bits == 0x3F80);      // tie: down to even
  CHECK(bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits == 0x3F82);  // tie: up to even
  CHECK(std::isinf(static_cast<float>(bf16(std::numeric_limits<float>::infinity()))));
  CHECK(name(dtype_of<bf16>) == "bf16");
  CHECK(size_of(dtype::f64) == 8);
  CHECK(fmt::format("{}", dtype::f16) == "f16");
}

TEST_CASE(
    "conversion from double rounds to the nearest value, ties to even, without double rounding") {
  // Values just off a float-rounding tie, where double → float → 16-bit would round twice.
  const double cases[] = {
      1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40),   // just above a bf16 tie
      1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40),  // just above an f16 tie
      1.0 + std::ldexp(1.0, -11) - std::ldexp(1.0, -40),  // just below an f16 tie
      std::ldexp(1.0, -25) + std::ldexp(1.0, -60),        // just above the f16 subnormal tie
      65519.99999,
      -3.14159265358979,
      1e-30,
      -1e30,
      0.1,
      2.5e-7};
  for (const double d : cases) {
    CAPTURE(d);
    CHECK(bf16(d).bits == nearest_by_search<bf16>(d, is_nan_bits_bf16, std::ldexp(1.0, 128)));
    CHECK(f16(d).bits == nearest_by_search<f16>(d, is_nan_bits_f16, 65536.0));
  }
  std::uint64_t s = 42;
  for (int i = 0; i < 300; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double d = std::ldexp(static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5,
                                static_cast<int>((s >> 3) % 40) - 20);
    CAPTURE(d);
    CHECK(bf16(d).bits == nearest_by_search<bf16>(d, is_nan_bits_bf16, std::ldexp(1.0, 128)));
    CHECK(f16(d).bits == nearest_by_search<f16>(d, is_nan_bits_f16, 65536.0));
  }
}

TEST_CASE("convert moves between all four types") {
  CHECK(convert<double>(bf16(0.5f)) == 0.5);
  CHECK(convert<float>(f16(2.0)) == 2.0f);
  CHECK(convert<bf16>(3.0).bits == bf16(3.0f).bits);
  CHECK(convert<f16>(bf16(1.5f)).bits == f16(1.5f).bits);
}
